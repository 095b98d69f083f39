"""A worker's thread budget for the numeric libraries (torch, onnxruntime), set without importing
torch: a stage whose configured backends do not need it (rules, OpenCV, fallbacks) leaves the
two seconds of its import, and its memory, out of that worker."""
from __future__ import annotations

import os
import sys


def set_worker_threads(n: int) -> None:
    """Intra-op threads for this process: torch reads OMP_NUM_THREADS when first imported, and
    is told directly if a stage already imported it."""
    n = max(1, int(n))
    os.environ["OMP_NUM_THREADS"] = str(n)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)


def worker_threads() -> int:
    """The intra-op thread budget: torch's where it is loaded, else the one set for this worker,
    else every CPU (torch's own default)."""
    if "torch" in sys.modules:
        return sys.modules["torch"].get_num_threads()
    try:
        return max(1, int(os.environ.get("OMP_NUM_THREADS", "")))
    except ValueError:
        return os.cpu_count() or 1
