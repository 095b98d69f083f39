"""Shared test fixtures: locations of the real data (skipped with a reason when absent) and
an offline environment (no hub downloads, no Ray auth)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MOCHA_SHARED_DIR", ROOT.parent / "shared"))
REAL_DIR = SHARED / "data" / "real"
WEIGHTS_DIR = SHARED / "data" / "weights"


@pytest.fixture(scope="session")
def real_dir() -> Path:
    if not (REAL_DIR / "MANIFEST.md").is_file():
        pytest.skip(f"real test data not found at {REAL_DIR} (set MOCHA_SHARED_DIR)")
    return REAL_DIR


@pytest.fixture(scope="session")
def weights_dir() -> Path:
    if not WEIGHTS_DIR.is_dir():
        pytest.skip(f"test weights not found at {WEIGHTS_DIR} (set MOCHA_SHARED_DIR)")
    return WEIGHTS_DIR


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models, whose every op takes microseconds: one intra-op thread is faster than two
    (no fork/join per op) and does not spin against other work on a 2-core machine."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def run_mocha(*args: str, timeout: float = 1200, check: bool = True, env: dict | None = None):
    """Run the `mocha` command in a subprocess (Ray never leaks into the pytest process)."""
    import subprocess
    import sys

    e = dict(os.environ)
    e.update(env or {})
    proc = subprocess.run([sys.executable, "-m", "mocha.cli", *args], cwd=ROOT, env=e,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"mocha {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr[-4000:]}")
    return proc


def make_bad_inputs(folder: Path, real: Path) -> dict[str, Path]:
    """Inputs that must each end as a ledger row with a reason."""
    folder.mkdir(parents=True, exist_ok=True)
    bad = {
        "empty": folder / "empty.mp4",
        "random": folder / "random_bytes.mp4",
        "truncated": folder / "truncated_half.mp4",
        "audio_only": real / "speech_clean_librispeech_198-209-0000.ogg",
        "no_videos_dir": folder / "no_videos",
        "broken_link": folder / "broken_link.mp4",
        "missing": folder / "does_not_exist.mp4",
    }
    bad["empty"].write_bytes(b"")
    import random

    bad["random"].write_bytes(random.Random(0).randbytes(64 * 1024))
    data = (real / "medium_talk_latentsync_demo2.mp4").read_bytes()
    bad["truncated"].write_bytes(data[: len(data) // 2])
    bad["no_videos_dir"].mkdir(exist_ok=True)
    (bad["no_videos_dir"] / "notes.txt").write_text("no video here")
    if not bad["broken_link"].is_symlink():
        bad["broken_link"].symlink_to(folder / "nowhere.mp4")
    return bad


@pytest.fixture(scope="session")
def curated_real(real_dir, tmp_path_factory) -> Path:
    """One Ray curation run over every real clip plus the bad inputs; shared by many tests.
    Returns the output dir (st2v/, t2v/, ledger/, run.json)."""
    root = tmp_path_factory.mktemp("curated_real")
    bad = make_bad_inputs(root / "bad", real_dir)
    out = root / "out"
    run_mocha("curate", str(real_dir), *[str(p) for p in bad.values()], "--output", str(out), "--no-progress")
    return out
