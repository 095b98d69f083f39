"""Runner details that decide cost at scale: task-mode stages are built once per worker process,
a stage worker's device follows its resources, and segments flow through stages in batches."""
from __future__ import annotations

import pickle

import numpy as np

from pipeline.engine import runners
from pipeline.engine.config import StageResources, load_config
from pipeline.engine.stage import Stage, StageResult
from pipeline.source.split import Segment


class _Count(Stage):
    name = "count"
    built = 0
    batches: list[int] = []

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
