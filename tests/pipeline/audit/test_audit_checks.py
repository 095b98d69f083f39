"""Each audit check fires on a hand-made faulty output dir and stays quiet on a clean one; the
command turns findings of --fail-on checks into exit code 1."""
from __future__ import annotations

import argparse
import copy
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mocha import audit as audit_cli
from pipeline.audit import checks
from pipeline.audit.load import load_output
from tests.helpers.synthetic_shards import BACKENDS, clip_row, ledger_row, tiny_video, write_output
from tests.helpers.tables import backends_json

N_CLIPS = 8


@pytest.fixture(scope="module")
def video() -> bytes:
    return tiny_video()


def clean_rows(video: bytes) -> tuple[list[dict], list[dict]]:
    """Two sources; consecutive non-overlapping spans; every 4th clip in t2v; one rejected
    clip and one whole-video failure in the ledger."""
    clips = [clip_row(i % 4, source=i // 4, track="t2v" if i % 4 == 3 else "st2v", video=video)
             for i in range(N_CLIPS)]
    ledger = [ledger_row(c) for c in clips]
    rejected = clip_row(4, source=0, video=video)
    ledger.append(ledger_row(rejected, "rejected", reject_stage="speech", reject_reason="speech_ratio 0.1 < 0.5"))
    ledger.append({"source_uri": "file:///data/broken.mp4", "status": "error", "reject_stage": "probe",
                   "reject_reason": "cannot open media"})
    return clips, ledger


def findings(out) -> dict[str, list[checks.Finding]]:
    return checks.run_checks(load_output(out))


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="mocha")
    audit_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["audit", *argv])
    return args.func(args)


def test_clean_output_passes_every_check(tmp_path, video):
    clips, ledger = clean_rows(video)
    clips[0]["speaking_turns"] = [_turn("Person1", 0.0, 0.9), _turn("Person1", 1.2, 2.0)]
    clips[1]["speaking_turns"] = []
    out = write_output(tmp_path / "out", clips, ledger)
    got = findings(out)
    assert set(got) == set(checks.CHECKS)
    assert {n: [f.message for f in fs] for n, fs in got.items() if fs} == {}
    assert run_cli(str(out), "--fail-on", "all", "--out", str(tmp_path / "rep")) == 0
    assert (tmp_path / "rep" / "report.html").is_file()


# Each case: the check, and a function that breaks the clean rows (clips, ledger, out dir) and
# returns the clip_id the finding must name (None when the finding is about a file).
def _dup_clip(clips, ledger, out):
    twin = copy.deepcopy(clips[1])
    twin["start_s"], twin["end_s"] = 100.0, 102.0
    twin["start_frame"], twin["end_frame"] = 2500, 2550
    clips.append(twin)
    return twin["clip_id"]


def _dup_ledger(clips, ledger, out):
    ledger.append(copy.deepcopy(ledger[0]))
    return ledger[0]["clip_id"]


def _overlap(clips, ledger, out):
    c = clips[1]  # source 0 spans 2-4 s; move it to start inside clip 0 (0-2 s)
    c["start_s"], c["start_frame"] = 1.5, int(1.5 * 25)
    return c["clip_id"]


def _caption_not_json(clips, ledger, out):
    clips[0]["caption"] = "Person1 talks."
    return clips[0]["clip_id"]


def _caption_wrong_model(clips, ledger, out):
    clips[2]["caption"] = json.dumps({"characters": [{"tag": "Bob", "appearance": "a man"}]})
    return clips[2]["clip_id"]


def _caption_missing(clips, ledger, out):
    clips[5]["caption"] = None
    return clips[5]["clip_id"]


def _no_audio(clips, ledger, out):
    clips[0]["audio"] = None
    return clips[0]["clip_id"]


def _no_emb_unlabelled(clips, ledger, out):
    clips[1]["audio_emb"] = None  # backends still says wav2vec2 produced it
    return clips[1]["clip_id"]


def _foreign_shard(clips, ledger, out):
    (out / "st2v").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"clip_id": ["x"], "video": [b""]}), out / "st2v" / "zz-foreign.parquet")
    return None


def _not_parquet(clips, ledger, out):
    (out / "ledger").mkdir(parents=True, exist_ok=True)
    (out / "ledger" / "zz-garbage.parquet").write_bytes(b"not a parquet file")
    return None


def _no_run_json(clips, ledger, out):
    (out / "run.json").unlink()
    return None


def _ledger_row_missing(clips, ledger, out):
    cid = clips[3]["clip_id"]
    ledger[:] = [r for r in ledger if r.get("clip_id") != cid]
    return cid


def _ledger_says_kept(clips, ledger, out):
    gone = clips.pop(6)
    return gone["clip_id"]


def _backends_not_json(clips, ledger, out):
    clips[4]["backends"] = "music=snr"
    return clips[4]["clip_id"]


def _backends_unlabelled_stage(clips, ledger, out):
    clips[4]["backends"] = backends_json({**BACKENDS, "music": {"threshold": 0.5},
                                          "visual": {"faces": {"backend": "yunet"}, "sync": {"model": None}}})
    return clips[4]["clip_id"]


def _turn(person, a, b, x=0.3):
    return {"person": person, "track": 0, "start_s": a, "end_s": b, "score": 2.0, "x": x}


def _turns_out_of_order(clips, ledger, out):
    clips[1]["speaking_turns"] = [_turn("Person1", 1.0, 1.5), _turn("Person1", 0.2, 0.8)]
    return clips[1]["clip_id"]


def _turn_outside_clip(clips, ledger, out):
    clips[2]["speaking_turns"] = [_turn("Person1", 0.5, 7.0)]  # the clip is 2 s
    return clips[2]["clip_id"]


def _turn_of_unknown_character(clips, ledger, out):
    clips[0]["speaking_turns"] = [_turn("Person7", 0.0, 1.0)]
    return clips[0]["clip_id"]


CASES = [
    ("duplicate_clip_ids", _dup_clip),
    ("duplicate_clip_ids", _dup_ledger),
    ("overlapping_spans", _overlap),
    ("invalid_captions", _caption_not_json),
    ("invalid_captions", _caption_wrong_model),
    ("invalid_captions", _caption_missing),
    ("st2v_missing_media", _no_audio),
    ("st2v_missing_media", _no_emb_unlabelled),
    ("foreign_schema", _foreign_shard),
    ("foreign_schema", _not_parquet),
    ("output_layout", _no_run_json),
    ("ledger_consistency", _ledger_row_missing),
    ("ledger_consistency", _ledger_says_kept),
    ("unlabelled_backends", _backends_not_json),
    ("unlabelled_backends", _backends_unlabelled_stage),
    ("speaking_turns", _turns_out_of_order),
    ("speaking_turns", _turn_outside_clip),
    ("speaking_turns", _turn_of_unknown_character),
]


@pytest.mark.parametrize("check,breaker", CASES, ids=[f"{c}-{b.__name__.strip('_')}" for c, b in CASES])
def test_check_fires_on_faulty_output(tmp_path, video, check, breaker):
    clips, ledger = clean_rows(video)
    out = tmp_path / "out"
    out.mkdir()
    # File-level breakers act after writing; row-level ones before.
    file_level = breaker in (_foreign_shard, _not_parquet, _no_run_json)
    if not file_level:
        expected_id = breaker(clips, ledger, out)
    write_output(out, clips, ledger)
    if file_level:
        expected_id = breaker(clips, ledger, out)
    got = findings(out)  # a foreign shard is a finding, never an exception
    assert got[check], f"{check} did not fire"
    assert all(f.check == check and f.message for f in got[check])
    if expected_id is not None:
        assert expected_id in {f.clip_id for f in got[check]}
    else:
        assert any("zz-" in f.where or f.where == "run.json" for f in got[check])
    assert run_cli(str(out), "--fail-on", check, "--samples", "0") == 1


def test_fail_on_only_counts_the_named_checks(tmp_path, video):
    clips, ledger = clean_rows(video)
    _caption_not_json(clips, ledger, None)
    out = write_output(tmp_path / "out", clips, ledger)
    assert run_cli(str(out), "--samples", "0") == 0  # no --fail-on: report only
    assert run_cli(str(out), "--fail-on", "duplicate_clip_ids,overlapping_spans", "--samples", "0") == 0
    assert run_cli(str(out), "--fail-on", "all", "--samples", "0") == 1


def test_foreign_shard_does_not_hide_the_good_ones(tmp_path, video):
    clips, ledger = clean_rows(video)
    out = write_output(tmp_path / "out", clips, ledger)
    _foreign_shard(clips, ledger, out)
    data = load_output(out)
    assert data.clips.num_rows == N_CLIPS
    assert [p.path for p in data.schema_problems] == ["st2v/zz-foreign.parquet"]
    assert "mocha.schema_version" in data.schema_problems[0].message


def test_labelled_embedding_skip_is_not_a_finding(tmp_path, video):
    clips, ledger = clean_rows(video)
    skipped = {**BACKENDS, "audio_embed": {"backend": "none", "fallback": True, "reason": "no embedding model available"}}
    for c in clips:
        if c["track"] == "st2v":
            c["audio_emb"] = None
            c["backends"] = backends_json(skipped)
    out = write_output(tmp_path / "out", clips, ledger)
    data = load_output(out)
    assert checks.check_st2v_missing_media(data) == []
    from pipeline.audit.report import summarize

    summary, _ = summarize(data)
    assert "audio_embed" in summary["backends"]["fallback_stages"]  # visible at a glance instead


def test_adjacent_spans_and_other_sources_do_not_overlap(tmp_path, video):
    # Same span in two different sources, and back-to-back spans in one: no finding.
    a = clip_row(0, source=0, video=video)
    b = clip_row(0, source=1, video=video)
    c = clip_row(1, source=0, video=video)
    assert c["start_frame"] == a["end_frame"]
    out = write_output(tmp_path / "out", [a, b, c], [ledger_row(x) for x in (a, b, c)])
    assert findings(out)["overlapping_spans"] == []


def test_cli_rejects_bad_arguments(tmp_path, video, capsys):
    clips, ledger = clean_rows(video)
    out = write_output(tmp_path / "out", clips, ledger)
    assert run_cli(str(out), "--fail-on", "duplicate_clip_ids,no_such_check") == 2
    assert "no_such_check" in capsys.readouterr().err
    assert run_cli(str(tmp_path / "missing")) == 2
    assert "not a directory" in capsys.readouterr().err
    assert checks.parse_fail_on("all") == list(checks.CHECKS)
    assert checks.parse_fail_on("") == []


def test_embedding_flags_per_row_across_row_groups(tmp_path):
    # Row groups of 3 rows: one all-valid group (read from statistics, not decoded), one with a
    # null list and one with an empty list; the flags must still be exact per row.
    import numpy as np

    from pipeline.audit.load import _null_flags
    from tests.helpers.synthetic_shards import _emb_column

    embs = [np.ones((2, 4))] * 3 + [np.ones((2, 4)), None, np.ones((1, 4))] + [np.zeros((0, 4)), np.ones((2, 4))]
    path = tmp_path / "emb.parquet"
    pq.write_table(pa.table({"audio_emb": _emb_column([{"audio_emb": e} for e in embs], 4)}), path, row_group_size=3)
    assert pq.ParquetFile(path).num_row_groups == 3
    assert _null_flags(path, "audio_emb").to_pylist() == [e is not None for e in embs]


def test_nulls_in_non_nullable_columns_and_broken_pages_are_findings(tmp_path, video):
    # A foreign writer: right column types and metadata, but nullable fields holding nulls.
    from schemas.rows import clip_schema
    from tests.helpers.tables import rows_to_table

    clips, ledger = clean_rows(video)
    out = write_output(tmp_path / "out", clips, ledger)
    loose = pa.schema([f.with_nullable(True) for f in clip_schema(8)], metadata=clip_schema(8).metadata)
    bad = [dict(clips[0], clip_id=None), dict(clips[1], start_frame=None, clip_id="x-1")]
    pq.write_table(rows_to_table(bad, loose), out / "st2v" / "zz-nulls.parquet")
    # Valid footer and schema, garbage data pages.
    good = (out / "st2v" / "part-00000.parquet").read_bytes()
    broken = bytearray(good)
    broken[8:len(broken) // 2] = bytes(len(broken) // 2 - 8)
    (out / "st2v" / "zz-broken.parquet").write_bytes(bytes(broken))
    got = findings(out)  # no exception
    msgs = [f.message for f in got["foreign_schema"] if f.where == "st2v/zz-nulls.parquet"]
    assert any("'clip_id'" in m for m in msgs) and any("'start_frame'" in m for m in msgs)
    assert [f.where for f in got["foreign_schema"] if "unreadable" in f.message] == ["st2v/zz-broken.parquet"]
    data = load_output(out)
    assert data.clips.num_rows == N_CLIPS  # the faulty rows are left out, the good ones kept
