"""Nothing curated twice: a real clip with a byte-identical copy and a re-encoded, rescaled copy
gives one set of clips, the copies are ledger rows naming the kept source, the audit passes, and
a later run keeps the committed source; different real clips are never taken for copies."""
from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from common.output import TRACKS, Output
from pipeline.engine.writer import read_ledger
from pipeline.source.dedup import NearDuplicateConfig, compare
from pipeline.source.fingerprint import FingerprintConfig, fingerprint
from tests.conftest import run_mocha
from tests.helpers.reencode import reencode

pytestmark = pytest.mark.realdata
CLIP = "closeup_talk_hdtf_katiehill.mp4"


def _clip_rows(out: Path) -> list[dict]:
    o = Output.open(str(out))
    cols = ["clip_id", "source_uri", "source_sha256", "start_s", "end_s", "track"]
    return [r for t in TRACKS for rel in o.dataset_files(t) for r in pq.read_table(out / rel, columns=cols).to_pylist()]


@pytest.mark.slow
def test_copies_are_curated_once_and_the_audit_passes(real_dir, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    orig = src / "clip.mp4"
    shutil.copyfile(real_dir / CLIP, orig)
    shutil.copyfile(orig, src / "clip_copy.mp4")
    reencode(orig, src / "clip_reencoded.mp4", scale=0.625, crf=30, audio_rate=44100)
    out = tmp_path / "out"
    small = ["--set", "clips.max_side=320"]
    run_mocha("curate", str(src), "--output", str(out), "--no-progress", *small)

    clips = _clip_rows(out)
    assert clips and {c["source_uri"] for c in clips} == {str(orig)}
    ledger = {r["source_uri"]: r for r in read_ledger(out).to_pylist() if r["duplicate_of"]}
    copy, re = ledger[str(src / "clip_copy.mp4")], ledger[str(src / "clip_reencoded.mp4")]
    assert (copy["status"], copy["reject_stage"], copy["duplicate_of"]) == ("rejected", "ingest", str(orig))
    assert copy["reject_reason"] == f"duplicate_of {orig}" and copy["source_sha256"] == clips[0]["source_sha256"]
    assert (re["status"], re["reject_stage"], re["duplicate_of"]) == ("rejected", "ingest", str(orig))
    assert re["reject_reason"].startswith(f"near_duplicate_of {orig} (") and "audio bit error rate" in re["reject_reason"]
    run = json.loads((out / "run.json").read_text())
    assert run["duplicates"]["exact_dropped"] == 1 and run["duplicates"]["near_dropped"] == 1
    run_mocha("audit", str(out), "--fail-on", "all")

    # a later run with another copy, under a name that sorts first: the committed source stays
    first = src / "a_first_copy.mp4"
    shutil.copyfile(orig, first)
    run_mocha("curate", str(src), "--output", str(out), "--no-progress", *small)
    assert sorted(c["clip_id"] for c in _clip_rows(out)) == sorted(c["clip_id"] for c in clips)
    rows = [r for r in read_ledger(out).to_pylist() if r["source_uri"] == str(first)]
    assert len(rows) == 1 and rows[0]["duplicate_of"] == str(orig)
    run_mocha("audit", str(out), "--fail-on", "all")


def test_copies_match_and_different_real_clips_never_do(real_dir, tmp_path):
    cfg, fcfg = NearDuplicateConfig(), FingerprintConfig()
    reals = sorted(real_dir.glob("*.mp4"))
    fps = {p.name: fingerprint(str(p), True, fcfg) for p in reals}
    for a, b in itertools.combinations(sorted(fps), 2):
        assert compare(fps[a], fps[b], cfg) is None, (a, b, compare(fps[a], fps[b], cfg))
    copies = {
        CLIP: [dict(scale=0.25, crf=40, fps=15, audio_rate=22050, trim_start_s=2.1),
               dict(scale=0.625, crf=30)],
        "cuts_movie_goldeneye_vfr_noaudio.mp4": [dict(scale=0.5, crf=34, trim_start_s=1.1, fps=24)],
        "medium_talk_latentsync_demo2.mp4": [dict(scale=0.3, crf=35, trim_start_s=0.6, trim_end_s=3)],
    }
    for name, variants in copies.items():
        for k, kw in enumerate(variants):
            p = reencode(real_dir / name, tmp_path / f"{k}_{name}", **kw)
            m = compare(fps[name], fingerprint(str(p), True, fcfg), cfg)
            assert m is not None, (name, kw)
            assert abs(m.offset_s + kw.get("trim_start_s", 0.0)) <= fcfg.video_step_s, (name, m)
