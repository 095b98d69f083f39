"""Mid-epoch resume in a NEW process: the following batches are the same, by clip_id, as in an
uninterrupted run. Once through the loader's own snapshot, once through a Lightning checkpoint
written while training (the Trainer prefetches ahead: the DataModule hook must not save the
prefetched position)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.helpers.datashards import colour_clip, make_row, mixed_rows, write_shards

JOB = ROOT / "tests" / "helpers" / "data_resume_job.py"
N, M = 5, 6  # N odd: the resumed round-robin must start at worker N % 2


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    v = colour_clip(90)
    rows = mixed_rows({("st2v", "close_up"): 17, ("st2v", "medium"): 5, ("t2v", "close_up"): 9,
                       ("t2v", "wide"): 4}, v)
    rows.append(make_row("st2v-close_up-corrupt", "st2v", "close_up", b"\x00not an mp4" * 10))
    write_shards(root, rows, per_file=12, row_group=5)
    return root


def _run(*args) -> None:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    r = subprocess.run([sys.executable, str(JOB), *map(str, args)], capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]


def test_loader_snapshot_restored_in_a_new_process(shards, tmp_path):
    state = tmp_path / "state.pt"
    _run("plain", shards, tmp_path / "full.json", "--steps", N + M, "--save", state, "--save-after", N)
    _run("plain", shards, tmp_path / "resumed.json", "--steps", M, "--state", state)
    full = json.loads((tmp_path / "full.json").read_text())
    resumed = json.loads((tmp_path / "resumed.json").read_text())
    assert len(full["ids"]) == N + M
    assert resumed["ids"] == full["ids"][N:]
    # the run crossed the stage 0 -> 1 switch (step 3), so stage state travels too
    assert any(cid.startswith("st2v") for b in full["ids"][N:] for cid in b)
    assert all(cid.startswith("t2v") for b in full["ids"][:3] for cid in b)


def test_lightning_checkpoint_resume_in_a_new_process(shards, tmp_path):
    ck = tmp_path / "ckpt"
    _run("lightning", shards, tmp_path / "full.json", "--steps", N + M, "--ckpt-every", N, "--ckpt-dir", ck)
    ckpt = ck / f"step={N}.ckpt"
    assert ckpt.is_file(), sorted(os.listdir(ck))
    _run("lightning", shards, tmp_path / "resumed.json", "--steps", N + M, "--ckpt", ckpt)
    full = json.loads((tmp_path / "full.json").read_text())
    resumed = json.loads((tmp_path / "resumed.json").read_text())
    assert len(full["ids"]) == N + M
    assert resumed["ids"] == full["ids"][N:]
    assert resumed["stage"] == full["stage"] == 3  # stage_starts [0,3,6,9,12]: step 11 is stage 3
