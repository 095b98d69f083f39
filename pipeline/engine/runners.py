"""Runners of the curation plan: Ray Data (embedded or a cluster) and in-process (debugging).

Rows travel between Ray operators as one pickled blob per clip (column ``row``): clip rows hold
ragged arrays (audio, embeddings) and stage-specific columns, and a single binary column keeps
Ray's block schemas uniform whatever a stage adds. Model stages run in actor pools (set up once
per actor on the device Ray assigned it); with ``actors: 0`` they run as tasks, their stages
built once per worker process and kept in :data:`_WORKER_STAGES`.
"""
from __future__ import annotations

import math
import os
import pickle
from typing import Iterator

import numpy as np

from pipeline.engine.config import CurateConfig, StageResources
from pipeline.engine.plan import apply_stages, build_stages, stage_plan
from pipeline.engine.stage import Stage
from pipeline.finalize.route import finalize
from pipeline.source.split import split_source


def worker_device(res: StageResources) -> str:
    """The device of a stage worker: the GPU Ray assigned it (it sets CUDA_VISIBLE_DEVICES for
    the actor, so that GPU is ``cuda``) when its resources ask for one, else the CPU."""
    if res.num_gpus > 0:
        import torch

        if torch.cuda.is_available():
            return "cuda"
    return "cpu"


def _dumps(row: dict) -> bytes:
    return pickle.dumps(row, protocol=5)


class StageActor:
    """Ray callable class: builds and sets up its stages once per worker, then maps batches."""

    def __init__(self, stages: list[type[Stage]], cfg: CurateConfig, res: StageResources):
        import torch

        # this worker process is Ray's to size: as many torch threads as CPUs reserved for it
        torch.set_num_threads(max(1, math.floor(res.num_cpus)))
        self.stages = build_stages(stages, cfg, worker_device(res))

    def __call__(self, batch: dict) -> dict:
        rows = apply_stages(self.stages, [pickle.loads(b) for b in batch["row"]])
        return {"row": np.array([_dumps(r) for r in rows], dtype=object)}


# Stages of task-mode operators, per worker process: a task's closure is unpickled afresh for
# every block, but this module is imported once per worker, so its models load once.
_WORKER_STAGES: dict[str, StageActor] = {}


def _task_fn(name: str, stages: list[type[Stage]], cfg: CurateConfig, res: StageResources):
    key = f"{name}:{cfg.model_dump_json()}"

    def fn(batch: dict) -> dict:
        actor = _WORKER_STAGES.get(key)
        if actor is None:
            actor = _WORKER_STAGES[key] = StageActor(stages, cfg, res)
        return actor(batch)

    return fn


def _split_fn(cfg: CurateConfig):
    def fn(item: dict) -> list[dict]:
        return [{"row": _dumps(r)} for r in split_source(dict(item), cfg)]

    return fn


def _finalize_fn(cfg: CurateConfig):
    def fn(batch: dict) -> dict:
        rows = [finalize(pickle.loads(b), cfg.clips) for b in batch["row"]]
        return {"row": np.array([_dumps(r) for r in rows], dtype=object)}

    return fn


def build_ray_dataset(items: list[dict], cfg: CurateConfig):
    import ray
    from ray.data import ActorPoolStrategy

    r = cfg.resources
    ds = ray.data.from_items(items, override_num_blocks=max(1, len(items)))
    ds = ds.flat_map(_split_fn(cfg), num_cpus=r.split.num_cpus)
    for name, stages, res in stage_plan(cfg):
        kwargs = dict(batch_size=res.batch_size, batch_format="numpy", num_cpus=res.num_cpus, num_gpus=res.num_gpus or None)
        if res.actors > 0:
            ds = ds.map_batches(StageActor, fn_constructor_args=(stages, cfg, res),
                                compute=ActorPoolStrategy(min_size=1, max_size=res.actors), **kwargs)
        else:
            ds = ds.map_batches(_task_fn(name, stages, cfg, res), **kwargs)
    ds = ds.map_batches(_finalize_fn(cfg), batch_size=r.finalize.batch_size, batch_format="numpy",
                        num_cpus=r.finalize.num_cpus)
    return ds


def local_cpus(cfg: CurateConfig) -> int:
    """Logical CPUs for the embedded Ray: at least what every actor pool plus one split task and
    one finalize task reserve at once. Actors hold their reservation for the whole run, so on a
    small machine a plan needing more than the core count would wait forever for a split slot;
    the OS shares the real cores instead."""
    r = cfg.resources
    need = r.split.num_cpus + r.finalize.num_cpus
    need += sum(res.num_cpus * max(1, res.actors) for _n, _s, res in stage_plan(cfg))
    return max(os.cpu_count() or 1, math.ceil(need))


def iter_ray(items: list[dict], cfg: CurateConfig) -> Iterator[dict]:
    import ray

    if not ray.is_initialized():
        if cfg.run.ray_address:
            ray.init(address=cfg.run.ray_address, log_to_driver=False)
        else:
            ray.init(num_cpus=cfg.run.num_cpus or local_cpus(cfg), include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # our own progress display reports sources and clips
    ctx.print_on_execution_start = False
    ds = build_ray_dataset(items, cfg)
    for batch in ds.iter_batches(batch_format="numpy", batch_size=1, prefetch_batches=2):
        for blob in batch["row"]:
            yield pickle.loads(blob)


def iter_local(items: list[dict], cfg: CurateConfig) -> Iterator[dict]:
    """The same plan in this process, one source at a time (debugging, tiny runs, tests)."""
    ops = [(build_stages(stages, cfg, "cpu"), res) for _name, stages, res in stage_plan(cfg)]
    for item in items:
        rows = split_source(dict(item), cfg)
        for stages, res in ops:
            out = []
            for i in range(0, len(rows), res.batch_size):  # the same batches as the Ray plan
                out += apply_stages(stages, rows[i:i + res.batch_size])
            rows = out
        for row in rows:
            yield finalize(row, cfg.clips)


RUNNERS = {"ray": iter_ray, "local": iter_local}
