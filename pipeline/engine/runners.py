"""Runners of the curation plan: Ray Data (embedded or a cluster) and in-process (debugging).

Before the plan, :data:`FACTS` runs one short task per input (hash, probe, fingerprint) whose
small results the driver uses to find duplicates (``pipeline.engine.duplicates``).

The unit that flows is a *segment* of a source (``pipeline.source.split``): planned per source,
cut per segment, then through each stage operator and the write operator, which writes the
segment's shards straight to the output filesystem and hands the driver a small commit record.
The driver never sees clip media. Items travel between operators as one pickled blob (column
``seg``): segments hold ragged arrays and stage-specific columns, and a single binary column
keeps Ray's block schemas uniform. Model stages run in actor pools, set up once per actor on the
device Ray assigned; with ``actors: 0`` they run as tasks whose stages are built once per worker
process and kept in :data:`_WORKER_CACHE`.
"""
from __future__ import annotations

import json
import math
import os
import pickle
from typing import Any, Iterator, Optional

import numpy as np

from common.output import Output
from common.threads import set_worker_threads
from pipeline.engine.config import CurateConfig, StageResources
from pipeline.engine.plan import apply_stages, build_stages, stage_plan
from pipeline.engine.stage import Stage
from pipeline.engine.writer import write_shards
from pipeline.finalize.finish import finish_rows
from pipeline.source.split import Segment, cut_segment, plan_source, source_facts
from pipeline.stages.language.caption import load_tokenizer

# Ray Data releases a task's output a block at a time; a segment with its audio or clips is a few
# MB, so a small block target lets each one flow on as soon as it is ready instead of waiting
# for the whole source.
TARGET_BLOCK_BYTES = 4 * 1024**2


def worker_device(res: StageResources) -> str:
    """The device of a stage worker: the GPU Ray assigned it (it sets CUDA_VISIBLE_DEVICES for
    the actor, so that GPU is ``cuda``) when its resources ask for one, else the CPU."""
    if res.num_gpus > 0:
        import torch

        if torch.cuda.is_available():
            return "cuda"
    return "cpu"


def _dump(seg: Segment) -> bytes:
    return pickle.dumps(seg, protocol=5)


def run_segment_stages(stages: list[Stage], seg: Segment, batch_size: int) -> Segment:
    """The segment's rows through ``stages`` in batches of ``batch_size`` clips."""
    rows = seg.rows or []
    seg.rows = [r for i in range(0, len(rows), batch_size) for r in apply_stages(stages, rows[i:i + batch_size])]
    return seg


class StageActor:
    """Ray callable class: builds and sets up its stages once per worker, then maps segments."""

    def __init__(self, stages: list[type[Stage]], cfg: CurateConfig, res: StageResources):
        # this worker process is Ray's to size: as many threads as CPUs reserved for it
        set_worker_threads(math.floor(res.num_cpus))
        self.stages = build_stages(stages, cfg, worker_device(res))
        self.batch_size = res.batch_size

    def __call__(self, batch: dict) -> dict:
        segs = [run_segment_stages(self.stages, pickle.loads(b), self.batch_size) for b in batch["seg"]]
        return {"seg": np.array([_dump(s) for s in segs], dtype=object)}


class Writer:
    """Finishes segments and writes their shards; one tokenizer per worker for prompt budgets."""

    def __init__(self, cfg: CurateConfig, emb_dim: int):
        self.cfg = cfg
        self.dim = emb_dim
        self.out = Output.open(cfg.output)
        self.tokenizer = load_tokenizer(cfg.caption.tokenizer, cfg.run.models_dir) if cfg.caption.tokenizer else None

    def write(self, segs: list[Segment]) -> list[dict]:
        return write_segments(self.out, segs, self.cfg, self.dim, self.tokenizer)


def write_segments(out: Output, segs: list[Segment], cfg: CurateConfig, emb_dim: int, tokenizer=None) -> list[dict]:
    """Shards of finished segments and their commit records: one record for the segments that
    are done, and one per segment to be retried (its own record, which the record of the
    retried work later supersedes without touching other segments' files)."""
    done = [s for s in segs if not s.retry]
    groups = ([done] if done else []) + [[s] for s in segs if s.retry]
    records = []
    for group in groups:
        rows: list[dict] = []
        for seg in group:
            rows += finish_rows(seg.rows or [], cfg, tokenizer)
        records.append(write_shards(out, rows, [s.record() for s in group], emb_dim,
                                    cfg.run.max_shard_bytes, cfg.run.max_shard_rows))
    return records


# Per worker process: objects of task-mode operators (a task's closure is unpickled afresh for
# every block, but this module is imported once per worker, so models load once).
_WORKER_CACHE: dict[str, Any] = {}


def _cached(key: str, make):
    obj = _WORKER_CACHE.get(key)
    if obj is None:
        obj = _WORKER_CACHE[key] = make()
    return obj


def _task_fn(name: str, stages: list[type[Stage]], cfg: CurateConfig, res: StageResources):
    key = f"stages:{name}:{cfg.model_dump_json()}"

    def fn(batch: dict) -> dict:
        return _cached(key, lambda: StageActor(stages, cfg, res))(batch)

    return fn


def _plan_fn(cfg: CurateConfig):
    def fn(item: dict) -> Iterator[dict]:
        skip = frozenset(item.pop("done_segments", ()))
        for seg in plan_source(item, cfg, skip):
            yield {"seg": _dump(seg)}

    return fn


def _cut_fn(cfg: CurateConfig):
    def fn(row: dict) -> dict:
        return {"seg": _dump(cut_segment(pickle.loads(row["seg"]), cfg))}

    return fn


def _write_fn(cfg: CurateConfig, emb_dim: int):
    key = f"writer:{cfg.model_dump_json()}"

    def fn(batch: dict) -> dict:
        writer = _cached(key, lambda: Writer(cfg, emb_dim))
        recs = writer.write([pickle.loads(b) for b in batch["seg"]])
        return {"record": np.array([json.dumps(r) for r in recs], dtype=object)}

    return fn


def build_ray_dataset(items: list[dict], cfg: CurateConfig, emb_dim: int):
    import ray
    from ray.data import ActorPoolStrategy

    r = cfg.resources
    ds = ray.data.from_items(items, override_num_blocks=max(1, len(items)))
    ds = ds.flat_map(_plan_fn(cfg), num_cpus=r.split.num_cpus)
    ds = ds.map(_cut_fn(cfg), num_cpus=r.split.num_cpus)
    for name, stages, res in stage_plan(cfg):
        kwargs = dict(batch_size=1, batch_format="numpy", num_cpus=res.num_cpus, num_gpus=res.num_gpus or None)
        if res.actors > 0:
            ds = ds.map_batches(StageActor, fn_constructor_args=(stages, cfg, res),
                                compute=ActorPoolStrategy(min_size=1, max_size=res.actors), **kwargs)
        else:
            ds = ds.map_batches(_task_fn(name, stages, cfg, res), **kwargs)
    return ds.map_batches(_write_fn(cfg, emb_dim), batch_size=r.finalize.batch_size, batch_format="numpy",
                          num_cpus=r.finalize.num_cpus)


def local_cpus(cfg: CurateConfig) -> int:
    """Logical CPUs for the embedded Ray: at least what every actor pool plus one split task and
    one write task reserve at once. Actors hold their reservation for the whole run, so on a
    small machine a plan needing more than the core count would wait forever for a split slot;
    the OS shares the real cores instead."""
    r = cfg.resources
    need = 2 * r.split.num_cpus + r.finalize.num_cpus
    need += sum(res.num_cpus * max(1, res.actors) for _n, _s, res in stage_plan(cfg))
    return max(os.cpu_count() or 1, math.ceil(need))


def init_ray(cfg: CurateConfig) -> None:
    if not cfg.run.ray_address or cfg.run.ray_address.split("://")[-1].split(":")[0] in ("127.0.0.1", "localhost"):
        # the embedded cluster, or one bound to loopback: Ray otherwise rewrites 127.0.0.1 to this
        # host's network address and its servers listen on every interface (read by Ray when it
        # is first imported)
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    if not ray.is_initialized():
        if cfg.run.ray_address:
            ray.init(address=cfg.run.ray_address, log_to_driver=False)
        else:
            # the embedded cluster listens on loopback only and starts no dashboard; "local"
            # starts a new one even where a cluster started with `ray start` runs on this machine
            ray.init(address="local", num_cpus=cfg.run.num_cpus or local_cpus(cfg), include_dashboard=False, log_to_driver=False,
                     configure_logging=False, _node_ip_address="127.0.0.1")
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # our own progress display reports sources and seconds
    ctx.print_on_execution_start = False
    ctx.target_max_block_size = TARGET_BLOCK_BYTES
    # A block whose task fails for good (its worker killed again and again, a stage actor that
    # crashes) drops its rows instead of failing the job: the driver then gives every source
    # that never committed an error row (``pipeline.engine.duplicates.lost_sources``).
    ctx.max_errored_blocks = -1


def iter_ray(items: list[dict], cfg: CurateConfig, emb_dim: int, stats: Optional[dict] = None) -> Iterator[dict]:
    """Commit records, as the write operator produces them; ``stats`` gets what the driver
    received and Ray Data's per-operator execution statistics."""
    init_ray(cfg)
    ds = build_ray_dataset(items, cfg, emb_dim)
    received = 0
    for row in ds.iter_rows():
        received += len(row["record"])
        yield json.loads(row["record"])
    if stats is not None:
        stats["driver_bytes_received"] = received
        stats["ray_data"] = ds.stats()


def iter_local(items: list[dict], cfg: CurateConfig, emb_dim: int, stats: Optional[dict] = None) -> Iterator[dict]:
    """The same plan in this process, one segment at a time (debugging, tiny runs, tests)."""
    ops = [(build_stages(stages, cfg, "cpu"), res) for _name, stages, res in stage_plan(cfg)]
    writer = Writer(cfg, emb_dim)
    for item in items:
        skip = frozenset(item.pop("done_segments", ()))
        for seg in plan_source(dict(item), cfg, skip):
            seg = cut_segment(seg, cfg)
            for stages, res in ops:
                seg = run_segment_stages(stages, seg, res.batch_size)
            yield from writer.write([seg])


def facts_local(items: list[dict], cfg: CurateConfig) -> list[dict]:
    """Every input hashed, probed and fingerprinted, in this process (children do the reading)."""
    return [source_facts(item, cfg) for item in items]


def _facts_fn(cfg: CurateConfig):
    def fn(row: dict) -> dict:
        return {"item": pickle.dumps(source_facts(pickle.loads(row["item"]), cfg), protocol=5)}

    return fn


def facts_ray(items: list[dict], cfg: CurateConfig) -> list[dict]:
    """The same as one Ray task per input, in input order."""
    if not items:
        return []
    init_ray(cfg)
    import ray

    rows = [{"item": pickle.dumps(it, protocol=5)} for it in items]
    ds = ray.data.from_items(rows, override_num_blocks=len(rows))
    ds = ds.map(_facts_fn(cfg), num_cpus=cfg.resources.split.num_cpus)
    got = [pickle.loads(r["item"]) for r in ds.iter_rows()]
    by_uri = {g["source_uri"]: g for g in got}
    # a block lost for good (see max_errored_blocks) leaves its input as it was: the plan
    # then checks it itself
    return [by_uri.get(it["source_uri"], it) for it in items]


RUNNERS = {"ray": iter_ray, "local": iter_local}
FACTS = {"ray": facts_ray, "local": facts_local}
