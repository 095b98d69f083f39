"""The curation plan: which stages run, in which order, with which resources, on Ray Data.

Rows travel between Ray operators as one pickled blob per clip (column ``row``): clip rows hold
ragged arrays (audio, embeddings) and stage-specific columns, and a single binary column keeps
Ray's block schemas trivially uniform. Model-backed stages run in actor pools (``setup`` once per
actor); per-source splitting runs as tasks.
"""
from __future__ import annotations

import pickle
from typing import Callable, Iterator

import numpy as np

from pipeline.config import CurateConfig, StageResources
from pipeline.stage import ClipStage, run_stage

StageFactory = Callable[[CurateConfig], ClipStage]


def _speech(cfg: CurateConfig) -> ClipStage:
    from pipeline.speech import SpeechStage

    return SpeechStage(cfg.speech)


def _music(cfg: CurateConfig) -> ClipStage:
    from pipeline.music import MusicStage

    return MusicStage(cfg.music, cfg.run.models_dir)


def _audio_embed(cfg: CurateConfig) -> ClipStage:
    from pipeline.audio_embed import AudioEmbedStage

    return AudioEmbedStage(cfg.audio_embed, cfg.run.models_dir)


def stage_plan(cfg: CurateConfig) -> list[tuple[str, StageFactory, StageResources]]:
    """Ordered per-clip stages. Cheap filters first, so expensive stages see fewer clips."""
    r = cfg.resources
    return [
        ("speech", _speech, r.speech),
        ("music", _music, r.music),
        ("audio_embed", _audio_embed, r.audio_embed),
    ]


def _dumps(row: dict) -> bytes:
    return pickle.dumps(row, protocol=5)


class _StageActor:
    """Ray callable class: builds and sets up one stage per actor, then maps batches."""

    def __init__(self, factory: StageFactory, cfg: CurateConfig):
        import torch

        torch.set_num_threads(1)
        self.stage = factory(cfg)
        self.stage.setup()
        self.stage._ready = True

    def __call__(self, batch: dict) -> dict:
        out = []
        for blob in batch["row"]:
            row = pickle.loads(blob)
            run_stage(self.stage, row)
            out.append(_dumps(row))
        return {"row": np.array(out, dtype=object)}


def _stage_task_fn(factory: StageFactory, cfg: CurateConfig):
    """Stateless-task form of a stage: built lazily once per worker process."""
    cache: dict = {}

    def fn(batch: dict) -> dict:
        if "actor" not in cache:
            cache["actor"] = _StageActor(factory, cfg)
        return cache["actor"](batch)

    return fn


def _split_fn(cfg: CurateConfig):
    from pipeline.split import split_source

    def fn(item: dict) -> list[dict]:
        return [{"row": _dumps(r)} for r in split_source(dict(item), cfg)]

    return fn


def _finalize_fn(cfg: CurateConfig):
    from pipeline.route import finalize

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
    for name, factory, res in stage_plan(cfg):
        kwargs = dict(batch_size=res.batch_size, batch_format="numpy", num_cpus=res.num_cpus, num_gpus=res.num_gpus or None)
        if res.actors > 0:
            ds = ds.map_batches(_StageActor, fn_constructor_args=(factory, cfg),
                                compute=ActorPoolStrategy(min_size=1, max_size=res.actors), **kwargs)
        else:
            ds = ds.map_batches(_stage_task_fn(factory, cfg), **kwargs)
    ds = ds.map_batches(_finalize_fn(cfg), batch_size=r.finalize.batch_size, batch_format="numpy",
                        num_cpus=r.finalize.num_cpus)
    return ds


def iter_ray(items: list[dict], cfg: CurateConfig) -> Iterator[dict]:
    ds = build_ray_dataset(items, cfg)
    for batch in ds.iter_batches(batch_format="numpy", batch_size=1, prefetch_batches=2):
        for blob in batch["row"]:
            yield pickle.loads(blob)


def iter_local(items: list[dict], cfg: CurateConfig) -> Iterator[dict]:
    """The same plan in this process, one clip at a time (debugging, tiny runs, tests)."""
    from pipeline.route import finalize
    from pipeline.split import split_source

    stages = [factory(cfg) for _name, factory, _res in stage_plan(cfg)]
    for item in items:
        for row in split_source(dict(item), cfg):
            for st in stages:
                run_stage(st, row)
            yield finalize(row, cfg.clips)
