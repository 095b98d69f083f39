"""Every trainer test runs with one torch thread (see ``one_torch_thread`` in tests/conftest.py)."""
from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="module")
def _trainer_threads(one_torch_thread):
    yield
