"""Long sources: planned into segments that are cut (and committed) one at a time, in bounded
memory, with exactly the clips a whole-source cut gives; a job killed in the middle of a long
source redoes only the segments it had not committed."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from common.output import COMMITS, Output
from pipeline.engine.config import load_config
from pipeline.engine.writer import read_ledger
from pipeline.source import clips
from pipeline.source.scenes import Window
from pipeline.source.split import cut_segment, pack_segments, plan_source
from tests.conftest import ROOT, run_mocha
from tests.helpers.long_source import make_long_source
from tests.helpers.tree_memory import split_worker_peak


def _w(a, b, scene=0, k=0):
    return Window(scene, k, a, b)


def test_windows_pack_into_segments_of_bounded_span():
    windows = [_w(0, 8), _w(8, 16), _w(16, 24), _w(30, 70), _w(70, 75)]
    short = [_w(24, 25), _w(25.5, 30)]
    groups = pack_segments(windows, short, segment_s=20)
    assert [[(w.start_s, w.end_s) for w in g] for g, _ in groups] == [[(0, 8), (8, 16)], [(16, 24)], [(30, 70)], [(70, 75)]]
    # a scene too short to be a clip goes with the segment whose range holds it
    assert [[(w.start_s, w.end_s) for w in s] for _, s in groups] == [[], [(24, 25), (25.5, 30)], [], []]
    assert pack_segments([], [_w(0, 1)], 20) == [([], [_w(0, 1)])]


def _cut_all(path: Path, segment_s: float) -> tuple[int, dict]:
    """{clip_id: (span, audio digest, digests of the frames handed to the encoder)}."""
    # in this process, so the patched encoder sees the frames (the sandbox child would not)
    cfg = load_config(None, [f"scenes.segment_s={segment_s}", "ingest.sandbox.enabled=false"])
    fed: list[list[str]] = []  # per encoder, in the order they were opened
    original = clips.Mp4Writer.write

    def write(self, picture):
        if not hasattr(self, "_fed"):
            self._fed = []
            fed.append(self._fed)
        self._fed.append(hashlib.md5(picture.to_ndarray().tobytes()).hexdigest())  # the YUV planes
        return original(self, picture)

    clips.Mp4Writer.write = write
    try:
        out, n = {}, 0
        for seg in plan_source({"source_uri": str(path)}, cfg):
            n += 1
            fed.clear()
            rows = cut_segment(seg, cfg).rows
            writers = list(fed)
            clipped = [r for r in rows if r["video"]]
            assert len(writers) == len(clipped)
            for r, frames in zip(sorted(clipped, key=lambda r: r["start_s"]), writers):
                out[r["clip_id"]] = ((r["start_frame"], r["end_frame"], r["num_frames"]),
                                     hashlib.md5(r["audio_pcm"].tobytes()).hexdigest(), tuple(frames),
                                     hashlib.md5(r["video"]).hexdigest())
            for r in rows:
                if not r["video"]:
                    out[r["clip_id"]] = (r["status"], r["reject_reason"])
        return n, out
    finally:
        clips.Mp4Writer.write = original


@pytest.mark.slow
def test_segmented_cut_gives_the_clips_of_a_whole_source_cut(tmp_path):
    src = tmp_path / "episode.mkv"
    lengths = make_long_source(src, 4, seed=3)
    n_seg, seg = _cut_all(src, 30.0)
    n_whole, whole = _cut_all(src, 1e9)
    assert n_whole == 1 and n_seg >= 6
    # same ids, spans, audio samples, frames and encoded bytes, segment boundaries or not (the
    # encoder is reproducible: a second cut in the same process gives the same bytes)
    assert seg == whole
    assert _cut_all(src, 1e9)[1] == whole
    assert len([k for k, v in whole.items() if len(v) == 4]) >= len([x for x in lengths if x >= 2.0])


# The split/cut worker's peak, its sandbox children included, stays under this whatever the
# source's length (see benchmarks/bench_long_source.py for the figures; the bound leaves room
# for encoder buffers at 1280 px).
PEAK_BOUND_MB = 1536


@pytest.mark.slow
def test_split_worker_memory_does_not_grow_with_the_source(tmp_path):
    short, long_ = tmp_path / "ten.mkv", tmp_path / "thirty.mkv"
    make_long_source(short, 10, seed=1)
    make_long_source(long_, 30, seed=2)
    _, rows_10, _, mb_10 = split_worker_peak(short)
    _, rows_30, _, mb_30 = split_worker_peak(long_)
    assert rows_30 > 2.5 * rows_10
    assert mb_30 < PEAK_BOUND_MB and mb_10 < PEAK_BOUND_MB
    assert mb_30 < 1.25 * mb_10 + 50, (mb_10, mb_30)  # independent of length, not proportional


@pytest.mark.slow
def test_kill_mid_source_then_rerun_redoes_only_the_missing_segments(tmp_path):
    src = tmp_path / "film.mkv"
    make_long_source(src, 5, seed=4)
    cfg = load_config(None, ["scenes.segment_s=30"])
    planned = [s for s in plan_source({"source_uri": str(src)}, cfg)]
    want = {w_id for s in planned for w_id in [c["clip_id"] for c in cut_segment(s, cfg).rows] if w_id}
    out = tmp_path / "out"
    args = ["curate", str(src), "--output", str(out), "--runner", "local", "--no-progress", "--set", "scenes.segment_s=30"]
    proc = subprocess.Popen([sys.executable, "-m", "mocha.cli", *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 900
    while time.time() < deadline and len(list((out / COMMITS).glob("*.json"))) < 3:
        assert proc.poll() is None, "job ended before its third commit"
        time.sleep(0.05)
    assert proc.poll() is None, "job finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = Output.open(str(out)).progress()[str(src)]
    assert 3 <= len(before.segments_done) < len(planned) and not before.complete

    run_mocha(*args)
    records = Output.open(str(out)).commit_records()
    done_after = [s["index"] for r in records for s in r["segments"]]
    assert sorted(done_after) == list(range(len(planned)))  # every segment once: none redone, none lost
    ids = [i for i in read_ledger(out).column("clip_id").to_pylist() if i]
    assert len(ids) == len(set(ids)) and set(ids) == want
    run = json.loads((out / "run.json").read_text())
    assert run["inputs_this_run"] == 1 and run["inputs_skipped_resume"] == 0
