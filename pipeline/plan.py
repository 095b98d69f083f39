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


def _visual(cfg: CurateConfig) -> ClipStage:
    from pipeline.curate import resolve_visual_models
    from pipeline.visual import VisualStage

    return VisualStage(resolve_visual_models(cfg))


def _audio_embed(cfg: CurateConfig) -> ClipStage:
    from pipeline.audio_embed import AudioEmbedStage

    return AudioEmbedStage(cfg.audio_embed, cfg.run.models_dir)


def _latents(cfg: CurateConfig) -> ClipStage:
    from pipeline.latents import LatentStage

    return LatentStage(cfg.latents)


def _character(cfg: CurateConfig) -> ClipStage:
    from pipeline.character import CharacterFilterStage

    return CharacterFilterStage.from_config(cfg)


def _caption(cfg: CurateConfig) -> ClipStage:
    from pipeline.captioning import CaptionStage

    return CaptionStage.from_config(cfg)


def stage_plan(cfg: CurateConfig) -> list[tuple[str, list[StageFactory], StageResources]]:
    """Ordered operators, each a list of stages sharing one worker (one model load). Cheap
    filters first, so expensive stages see fewer clips."""
    r = cfg.resources
    plan = [
        ("speech", [_speech], r.speech),
        ("music", [_music], r.music),
        # faces -> shot size -> lip-sync (re-aligns the audio) -> motion, on one shared decode;
        # before the embedding so that it embeds re-aligned audio of surviving clips only
        ("visual", [_visual], r.visual),
        ("audio_embed", [_audio_embed], r.audio_embed),
        # one actor for both: they share the process-wide LLM backend (one model in memory)
        ("llm", [_character, _caption], r.llm),
    ]
    if cfg.latents.enabled:  # optional: one 3D-VAE pass per kept clip, for pixel-free training
        plan.append(("latents", [_latents], r.latents))
    return plan


def _dumps(row: dict) -> bytes:
    return pickle.dumps(row, protocol=5)


def apply_stages(stages: list[ClipStage], rows: list[dict]) -> list[dict]:
    """Run ``rows`` through ``stages`` in order; stages with ``process_batch`` get the batch."""
    for st in stages:
        if hasattr(st, "process_batch"):
            rows = st.process_batch(rows)
        else:
            rows = [run_stage(st, r) for r in rows]
    return rows


class _StageActor:
    """Ray callable class: builds and sets up its stages once per actor, then maps batches."""

    def __init__(self, factories: list[StageFactory], cfg: CurateConfig):
        import torch

        torch.set_num_threads(1)
        self.stages = [f(cfg) for f in factories]
        for st in self.stages:
            st.setup()
            st._ready = True

    def __call__(self, batch: dict) -> dict:
        rows = apply_stages(self.stages, [pickle.loads(b) for b in batch["row"]])
        return {"row": np.array([_dumps(r) for r in rows], dtype=object)}


def _stage_task_fn(factory: list[StageFactory], cfg: CurateConfig):
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
    for name, factories, res in stage_plan(cfg):
        kwargs = dict(batch_size=res.batch_size, batch_format="numpy", num_cpus=res.num_cpus, num_gpus=res.num_gpus or None)
        if res.actors > 0:
            ds = ds.map_batches(_StageActor, fn_constructor_args=(factories, cfg),
                                compute=ActorPoolStrategy(min_size=1, max_size=res.actors), **kwargs)
        else:
            ds = ds.map_batches(_stage_task_fn(factories, cfg), **kwargs)
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

    stages = [f(cfg) for _name, factories, _res in stage_plan(cfg) for f in factories]
    for item in items:
        for row in apply_stages(stages, split_source(dict(item), cfg)):
            yield finalize(row, cfg.clips)
