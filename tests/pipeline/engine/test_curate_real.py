"""End-to-end curation on the real clips (one shared Ray run): tracks, ledger reasons, schema,
backends, run.json."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.engine.writer import read_ledger
from pipeline.stages.visual.sync import SyncConfig
from schemas.rows import SCHEMA_VERSION, read_table

pytestmark = [pytest.mark.realdata, pytest.mark.slow]


def clips(out: Path, track: str) -> list[dict]:
    rows = []
    for f in sorted((out / track).glob("*.parquet")):
        rows += read_table(str(f), "clip", columns=[c for c in pq.read_schema(f).names if c not in ("video", "audio_emb")]).to_pylist()
    return rows


def by_source(rows, name):
    return [r for r in rows if Path(r["source_uri"]).name == name]


@pytest.fixture(scope="module")
def ledger(curated_real):
    return read_ledger(curated_real).to_pylist()


def test_talking_clips_are_st2v_with_high_speech_ratio(curated_real):
    st2v = clips(curated_real, "st2v")
    for name in ("closeup_talk_hdtf_katiehill.mp4", "medium_talk_latentsync_demo1.mp4", "medium_talk_latentsync_demo2.mp4"):
        rows = by_source(st2v, name)
        assert rows, f"{name} gave no st2v clip"
        assert all(r["speech_ratio"] >= 0.6 for r in rows), [(name, r["speech_ratio"]) for r in rows]
        # The applied audio shift is in the shard: none within the weight-free bias, else the offset.
        for r in rows:
            assert r["sync_offset"] is not None and r["sync_shift_frames"] is not None
            small = abs(r["sync_offset"]) <= SyncConfig().avcorr_realign_deadband
            assert r["sync_shift_frames"] == (0 if small else r["sync_offset"]), r


@pytest.mark.parametrize("name", ["face_music_only_lp_d14.mp4", "medium_person_music_only_lp_s18.mp4",
                                  "face_silent_audio_lp_d3.mp4", "face_no_audio_stream_lp_d13.mp4",
                                  "cuts_nature_noperson_noaudio.mp4"])
def test_no_speech_sources_give_no_st2v_and_say_why(curated_real, ledger, name):
    assert not by_source(clips(curated_real, "st2v"), name)
    rows = by_source(ledger, name)
    assert rows, f"{name} missing from the ledger"
    for r in rows:
        assert r["status"] != "st2v"
        why = r["route_reason"] or r["reject_reason"]
        assert why, r
    reasons = " ".join((r["route_reason"] or "") + (r["reject_reason"] or "") for r in rows)
    if name == "face_no_audio_stream_lp_d13.mp4":
        assert "no_audio_stream" in reasons
    if name == "cuts_nature_noperson_noaudio.mp4":
        # nobody on screen: every window rejected by the visual checks before speech matters (its
        # calm landscapes measure as stills on the cut's pictures, the rest has no face)
        kept = [r for r in rows if r["reject_stage"] not in ("motion", "faces", "scenes")]
        assert not kept and ("no_face" in reasons or "static" in reasons), rows
    if "silent" in name:
        assert "silent_audio" in reasons


def test_every_input_and_clip_is_in_the_ledger(curated_real, ledger, real_dir):
    sources = {Path(r["source_uri"]).name for r in ledger}
    for f in real_dir.glob("*.mp4"):
        assert f.name in sources
    ledger_ids = {r["clip_id"] for r in ledger if r["clip_id"]}
    for track in ("st2v", "t2v"):
        for r in clips(curated_real, track):
            assert r["clip_id"] in ledger_ids
    ids = [r["clip_id"] for r in ledger if r["clip_id"]]
    assert len(ids) == len(set(ids)), "duplicate clip_id in the ledger"


@pytest.mark.parametrize("key,expect", [
    ("empty", "empty_file"), ("random", "unreadable_media"), ("truncated", None),
    ("audio_only", "no_video_stream"), ("no_videos_dir", "no_video_files"),
    ("broken_link", None), ("missing", "not_found"),
])
def test_bad_inputs_end_as_ledger_rows_with_reasons(ledger, key, expect):
    names = {"empty": "empty.mp4", "random": "random_bytes.mp4", "truncated": "truncated_half.mp4",
             "audio_only": "speech_clean_librispeech_198-209-0000.ogg", "no_videos_dir": "no_videos",
             "broken_link": "broken_link.mp4", "missing": "does_not_exist.mp4"}
    rows = by_source(ledger, names[key])
    assert rows, f"{key} has no ledger row"
    if key == "truncated":
        # half an mp4: either unreadable as a whole, or the clips past the cut fail
        assert any(r["status"] in ("error", "rejected") for r in rows)
        assert all(r["reject_reason"] or r["status"] in ("st2v", "t2v") for r in rows)
        return
    assert all(r["status"] in ("error", "rejected") for r in rows)
    assert all(r["reject_reason"] for r in rows)
    if expect:
        assert any(expect in r["reject_reason"] for r in rows), rows


def test_clip_rows_carry_schema_version_and_backends(curated_real):
    for track in ("st2v", "t2v"):
        files = sorted((curated_real / track).glob("*.parquet"))
        assert files
        for f in files:
            meta = pq.read_schema(f).metadata
            assert meta[b"mocha.schema_version"].decode() == SCHEMA_VERSION
        for r in clips(curated_real, track):
            b = json.loads(r["backends"])
            assert {"clips", "speech", "music"} <= set(b), b
            assert b["music"]["backend"] in ("snr-vad-gated", "demucs")
            if track == "st2v":
                assert "audio_embed" in b
                assert r["audio"] is not None


def test_st2v_audio_and_video_are_decodable_and_aligned(curated_real):
    from common import media

    f = sorted((curated_real / "st2v").glob("*.parquet"))[0]
    t = read_table(str(f), "clip", columns=["clip_id", "video", "audio", "start_s", "end_s", "num_frames", "fps", "width", "height"])
    row = t.slice(0, 1).to_pylist()[0]
    frames, times = media.decode_video(row["video"])
    assert len(frames) == row["num_frames"] == int((row["end_s"] - row["start_s"]) * row["fps"] + 1e-6)
    assert frames.shape[1:3] == (row["height"], row["width"])
    pcm = media.decode_audio_bytes(row["audio"])
    assert abs(len(pcm) / 16000 - (row["end_s"] - row["start_s"])) < 0.01


def test_run_json_has_config_versions_and_counts(curated_real, ledger):
    run = json.loads((curated_real / "run.json").read_text())
    assert run["config"]["scenes"]["max_clip_s"] == 10.0
    assert run["versions"]["ray"] and run["versions"]["pyarrow"]
    assert run["counts"]["clips"] == sum(1 for r in ledger if r["clip_id"])
    assert any("audio_embed" in w for w in run["warnings"])  # no Wav2Vec2 in the cache here


def test_spans_are_consistent(curated_real):
    for r in clips(curated_real, "st2v") + clips(curated_real, "t2v"):
        assert 2.0 - 1e-6 <= r["end_s"] - r["start_s"] <= 10.0 + 1e-6
        assert r["end_frame"] > r["start_frame"] >= 0
        assert r["fps"] == 25.0
