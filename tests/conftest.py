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
