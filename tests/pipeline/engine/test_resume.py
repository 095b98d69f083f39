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

from common.output import COMMITS, TRACKS, Output
from pipeline.engine.writer import read_ledger
from tests.conftest import ROOT, run_mocha


def _ids(out: Path) -> list[str]:
    return [r for r in read_ledger(out).column("clip_id").to_pylist() if r]


def _track_ids(out: Path) -> list[str]:
    o = Output.open(str(out))
    return [i for t in TRACKS for rel in o.dataset_files(t) for i in pq.read_table(out / rel, columns=["clip_id"]).column(0).to_pylist()]


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
    # what the killed run had written but not committed was removed, and nothing else is left over
    committed = {f for r in Output.open(str(out)).commit_records() for f in r["files"]}
    assert {str(p.relative_to(out)) for p in out.glob("*/*.parquet")} == committed
