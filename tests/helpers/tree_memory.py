"""Peak memory of a split/cut worker, children included.

The media work of a source runs in sandbox children (``pipeline.source.sandbox``), so the
worker's own ``ru_maxrss`` says little. The measuring process samples the resident memory of
itself and all its descendants together; summing RSS counts pages a fork shares twice, so the
figure is an upper bound of what the node gives the worker.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_SCRIPT = r"""
import sys, threading, time
import psutil
sys.path.insert(0, {root!r})
from pipeline.engine.config import load_config
from pipeline.source.split import cut_segment, plan_source

me, peak, stop = psutil.Process(), [0], threading.Event()

def sample():
    while not stop.is_set():
        total = 0
        for p in [me] + me.children(recursive=True):
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass  # a child that ended between the listing and the read
        peak[0] = max(peak[0], total)
        time.sleep(0.05)

threading.Thread(target=sample, daemon=True).start()
cfg = load_config(None, {sets!r})
t = time.perf_counter(); segs = rows = 0
for seg in plan_source({{"source_uri": {src!r}}}, cfg):
    rows += len(cut_segment(seg, cfg).rows); segs += 1
secs = time.perf_counter() - t
stop.set(); time.sleep(0.1)
print(segs, rows, round(secs, 1), peak[0] // 2**20)
"""


def split_worker_peak(src: Path, sets: list[str] = (), timeout: float = 3600) -> tuple[int, int, float, int]:
    """(segments, rows, seconds, peak MiB of the worker and its children) of planning and
    cutting every segment of ``src`` in one fresh process, as a split/cut worker does."""
    proc = subprocess.run([sys.executable, "-c", _SCRIPT.format(root=str(ROOT), src=str(src), sets=list(sets))],
                          capture_output=True, text=True, check=True, timeout=timeout)
    segs, rows, secs, mb = proc.stdout.split()
    return int(segs), int(rows), float(secs), int(mb)
