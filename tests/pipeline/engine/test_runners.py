"""Runner details that decide cost at scale: task-mode stages are built once per worker process,
a stage worker's device follows its resources, and segments flow through stages in batches."""
from __future__ import annotations

import ipaddress
import os
import pickle
import subprocess
import sys
from typing import ClassVar

import numpy as np
import pytest

from pipeline.engine import runners
from pipeline.engine.config import StageResources, load_config
from pipeline.engine.stage import Stage, StageResult
from pipeline.source.split import Segment
from tests.conftest import ROOT


class _Count(Stage):
    name = "count"
    built = 0
    batches: ClassVar[list[int]] = []

    def setup(self) -> None:
        type(self).built += 1

    def process_batch(self, rows):
        type(self).batches.append(len(rows))
        return [StageResult.kept(seen=True) for _ in rows]

    @classmethod
    def from_config(cls, cfg, device="cpu"):
        return cls(None, device)


def _segment(n: int) -> dict:
    seg = Segment({"source_uri": "x"}, 0, 1, rows=[{"clip_id": str(i), "reject_stage": None, "backends": "{}"}
                                                 for i in range(n)])
    return {"seg": np.array([pickle.dumps(seg)], dtype=object)}


def test_task_mode_stages_are_built_once_per_worker_process():
    _Count.built, _Count.batches = 0, []
    runners._WORKER_CACHE.clear()
    cfg = load_config(None, [])
    res = StageResources(num_cpus=1, actors=0, batch_size=3)
    for _ in range(3):  # a task's closure arrives afresh with every block
        fn = runners._task_fn("count", [_Count], cfg, res)
        out = fn(_segment(7))
    rows = pickle.loads(out["seg"][0]).rows
    assert _Count.built == 1
    assert all(r["seen"] for r in rows) and len(rows) == 7
    assert _Count.batches == [3, 3, 1] * 3  # the segment's clips in batches of batch_size


def test_worker_device_is_cpu_without_a_gpu_request():
    assert runners.worker_device(StageResources(num_gpus=0)) == "cpu"
    # asking for a GPU on a machine without one still runs (on the CPU) rather than failing
    assert runners.worker_device(StageResources(num_gpus=0.5)) in ("cpu", "cuda")


_LISTENERS = r"""
import ipaddress, os, sys
import psutil
sys.path.insert(0, {root!r})
from pipeline.engine.config import load_config
from pipeline.engine.runners import init_ray
init_ray(load_config(None, ["run.num_cpus=1"]))
import ray
mine = {{p.pid for p in psutil.Process().children(recursive=True)}} | {{os.getpid()}}
addrs = set()
for c in psutil.net_connections("inet"):
    if c.status == psutil.CONN_LISTEN and c.pid in mine:
        addrs.add(c.laddr.ip)
ray.shutdown()
print(" ".join(sorted(addrs)))
"""


@pytest.mark.slow
def test_embedded_ray_listens_on_loopback_only():
    proc = subprocess.run([sys.executable, "-c", _LISTENERS.format(root=str(ROOT))], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "RAY_AUTH_MODE": "disabled"}, check=True)
    addrs = proc.stdout.split()
    assert addrs, proc.stderr[-2000:]  # the cluster's servers were seen

    def loopback(a: str) -> bool:
        ip = ipaddress.ip_address(a)
        return ip.is_loopback or (ip.version == 6 and ip.ipv4_mapped is not None and ip.ipv4_mapped.is_loopback)

    assert all(loopback(a) for a in addrs), addrs
