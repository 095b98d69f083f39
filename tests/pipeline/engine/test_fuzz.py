"""A seeded corpus of hostile media (truncations, byte flips, MP4 box edits, hostile YUV4MPEG
headers, odd pixel formats, VFR and odd timestamps, many streams and channels, wrong
extensions) curated by ``mocha curate`` on the embedded Ray, beside the well-formed sources it
was made from (two synthetic, one real): the job ends cleanly, every input has its ledger rows
with a reason, none fell into a catch-all for bugs, the well-formed sources give exactly the
clips they give when curated alone, and the audit passes on the output."""
from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from common.output import TRACKS, Output
from pipeline.engine.writer import read_ledger
from tests.conftest import run_mocha
from tests.helpers.fuzz_corpus import ODD_ENCODE_KINDS, build_corpus

pytestmark = [pytest.mark.slow, pytest.mark.realdata]

SEED = 0
# About 2 minutes of curation on two cores: the size the issue asks of the generator.
SIZE = 200
REAL = "closeup_talk_hdtf_katiehill.mp4"  # a short real close-up that gives an st2v clip
# Reasons of the handlers that catch what no input should reach (a source step or a stage that
# raised): a bug, not the file.
BUG_REASONS = ("ingest_failed:", "planning_failed:", "cut_failed:", "error:")


@pytest.fixture(scope="module")
def fuzz(real_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    corpus = build_corpus(root / "corpus", SIZE, SEED, real=[real_dir / REAL])
    assert len(corpus.inputs) >= SIZE
    out, alone = root / "out", root / "alone"
    run_mocha("curate", str(root / "corpus"), "--output", str(out), "--no-progress")
    run_mocha("curate", *[str(p) for p in corpus.good], "--output", str(alone), "--no-progress")
    return corpus, out, alone


def _by_source(out: Path) -> dict[str, list[dict]]:
    rows = defaultdict(list)
    for r in read_ledger(out).to_pylist():
        rows[r["source_uri"]].append(r)
    return rows


def _clips(out: Path, uris: set[str]) -> set[tuple]:
    """The stored clips of these sources: id, track, span and the bytes of video and audio."""
    o = Output.open(str(out))
    cols = ["clip_id", "source_uri", "track", "start_s", "end_s", "start_frame", "end_frame", "video", "audio"]
    got = set()
    for t in TRACKS:
        for rel in o.dataset_files(t):
            for r in pq.read_table(out / rel, columns=cols).to_pylist():
                if r["source_uri"] in uris:
                    digest = [hashlib.sha256(r[k]).hexdigest() if r[k] is not None else None for k in ("video", "audio")]
                    got.add((r["clip_id"], r["source_uri"], r["track"], round(r["start_s"], 6), round(r["end_s"], 6),
                             r["start_frame"], r["end_frame"], *digest))
    return got


def test_every_input_ends_in_the_ledger_with_a_reason(fuzz):
    corpus, out, _ = fuzz
    rows = _by_source(out)
    for f in corpus.inputs:
        uri = str(f.path.resolve())
        assert rows.get(uri), f"no ledger row for {f.path.name} ({f.kind}: {f.detail})"
        for r in rows[uri]:
            assert r["status"] in ("st2v", "t2v", "rejected", "error"), (f.path.name, r["status"])
            if r["status"] in ("rejected", "error"):
                # a reason that starts with its code (`unreadable_media: ...`, `too_short: ...`)
                assert r["reject_stage"] and re.match(r"[a-z][a-z0-9_]*( |:|$)", r["reject_reason"] or ""), \
                    (f.path.name, f.detail, r["reject_stage"], r["reject_reason"])
                assert not r["reject_reason"].startswith(BUG_REASONS), (f.path.name, f.detail, r["reject_reason"])
    assert set(rows) == {str(p.resolve()) for p in corpus.good} | {str(f.path.resolve()) for f in corpus.inputs}


def test_well_formed_odd_encodes_are_decoded(fuzz):
    # 10-bit, 4:4:4, RGB, palette, interlaced, VFR, odd timestamps and rates, many streams and
    # channels: valid files, so each is cut or judged on its content, never an error row
    corpus, out, _ = fuzz
    rows = _by_source(out)
    odd = [f for f in corpus.inputs if f.kind in ODD_ENCODE_KINDS and f.path.stat().st_size > 0]
    assert odd
    for f in odd:
        for r in rows[str(f.path.resolve())]:
            assert r["status"] != "error", (f.path.name, f.detail, r["reject_stage"], r["reject_reason"])


def test_the_good_sources_give_the_clips_they_give_alone(fuzz):
    corpus, out, alone = fuzz
    good = {str(p.resolve()) for p in corpus.good}
    expected = _clips(alone, good)
    assert any(c[2] == "st2v" for c in expected)  # the comparison covers a clip with speech
    assert _clips(out, good) == expected

    def ledger(o: Path) -> set[tuple]:
        return {(r["source_uri"], r["clip_id"], r["status"], r["reject_stage"], r["reject_reason"])
                for u, rs in _by_source(o).items() if u in good for r in rs}

    assert ledger(out) == ledger(alone)


def test_the_audit_passes_on_the_fuzzed_output(fuzz):
    _, out, _ = fuzz
    run_mocha("audit", str(out), "--fail-on", "all")
