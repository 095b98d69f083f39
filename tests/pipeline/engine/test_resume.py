"""Kill a curation job hard in the middle, rerun it: only the missing work is done and the final
clip_id set equals an uninterrupted run's, with no duplicate."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.engine.writer import COMMITS, ShardWriter, read_ledger, recover
from tests.conftest import ROOT, run_mocha


def _ids(out: Path) -> list[str]:
    return [r for r in read_ledger(out).column("clip_id").to_pylist() if r]


def _track_ids(out: Path) -> list[str]:
    ids = []
    for track in ("st2v", "t2v"):
        for f in (out / track).glob("*.parquet"):
            ids += pq.read_table(f, columns=["clip_id"]).column("clip_id").to_pylist()
    return ids


@pytest.mark.realdata
@pytest.mark.slow
def test_hard_kill_then_rerun_finishes_only_missing_work(real_dir, tmp_path):
    inputs = [str(real_dir / n) for n in ("closeup_talk_hdtf_katiehill.mp4", "cuts_movie_goldeneye_vfr_noaudio.mp4",
                                          "cuts_nature_noperson_noaudio.mp4")]
    small = ["--set", "clips.max_side=320"]  # keeps the test quick; the resume logic is size-blind
    ref = tmp_path / "ref"
    run_mocha("curate", *inputs, "--output", str(ref), "--runner", "local", "--no-progress", *small)

    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "mocha.cli", "curate", *inputs, "--output", str(out), "--runner", "local",
           "--no-progress", "--set", "run.max_shard_rows=1", *small]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 600
    while time.time() < deadline and not list((out / COMMITS).glob("*.json")):
        assert proc.poll() is None, "job ended before its first commit"
        time.sleep(0.05)
    assert proc.poll() is None, "job finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = _ids(out)
    assert partial and not (out / "run.json").exists()

    run_mocha("curate", *inputs, "--output", str(out), "--runner", "local", "--no-progress", *small)
    run = json.loads((out / "run.json").read_text())
    assert 1 <= run["inputs_skipped_resume"] < len(inputs)
    final = _ids(out)
    assert len(final) == len(set(final)), "duplicate clip_id after resume"
    assert set(final) == set(_ids(ref))
    assert sorted(_track_ids(out)) == sorted(_track_ids(ref))
    assert not list(out.rglob("*.tmp"))


def _row(uri, i, n):
    return {"source_uri": uri, "source_num_rows": n, "clip_id": f"{uri}-{i}", "status": "rejected",
            "reject_stage": "scenes", "reject_reason": "too_short", "start_s": float(i), "end_s": i + 1.0}


def test_committed_flush_rolls_forward_and_uncommitted_is_discarded(tmp_path):
    w = ShardWriter(tmp_path, max_rows=1)
    w.add(_row("a", 0, 1))  # flush 0 committed
    # simulate a crash between the commit record and the renames of flush 1
    w.add(_row("b", 0, 1))
    rec = json.loads((tmp_path / COMMITS / "000001.json").read_text())
    final = tmp_path / rec["files"][0]
    os.replace(final, final.with_name(final.name + ".tmp"))
    # and an uncommitted temporary from a flush that never reached its commit record
    (tmp_path / "ledger" / "part-000002.parquet.tmp").write_bytes(b"partial")
    done, next_part = recover(tmp_path)
    assert done == {"a", "b"} and next_part == 2
    assert final.exists() and not list(tmp_path.rglob("*.tmp"))
    assert sorted(_ids(tmp_path)) == ["a-0", "b-0"]


def test_rows_of_one_source_wait_for_the_whole_source(tmp_path):
    w = ShardWriter(tmp_path, max_rows=1)
    assert w.add(_row("a", 0, 2)) is None
    assert not list((tmp_path / "ledger").glob("*.parquet"))
    assert len(w.add(_row("a", 1, 2))) == 2
    assert sorted(_ids(tmp_path)) == ["a-0", "a-1"]
