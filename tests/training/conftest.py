"""Trainer tests run tiny models whose every op is microseconds: one intra-op thread is faster
than two (no fork/join per op) and does not spin against other work on a shared 2-core box."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
