"""LightningDataModule of the curated shards with mid-epoch resume through checkpoints.

Lightning prefetches batches ahead of the training step, so the state of the loader at the
moment a checkpoint is written is *ahead* of what was trained (a known trap of streaming
loaders). This module tags every batch with its index, notes in ``on_before_batch_transfer``
(called on the batch about to be trained) how many batches were trained, and ``state_dict``
returns the loader's snapshot at exactly that count. ``load_state_dict`` (called by the
Trainer before it asks for the train dataloader) makes the next loader continue from there.
The loader itself deliberately has no ``state_dict`` method, so Lightning's own loader-state
path (which would store the prefetched position) does not also act on it.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Optional

import lightning as L

from training.data.config import DataConfig, load_data_config
from training.data.dataset import INDEX_KEY, ShardLoader, ShardStream
from training.data.shards import ShardIndex, build_index

log = logging.getLogger(__name__)


def _rank_world(trainer) -> tuple[int, int]:
    if trainer is not None:
        return int(trainer.global_rank), int(trainer.world_size)
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


class MochaDataModule(L.LightningDataModule):
    def __init__(self, cfg: DataConfig | dict | str, roots: Optional[list[str]] = None):
        super().__init__()
        if isinstance(cfg, str):
            cfg = load_data_config(cfg)
        elif isinstance(cfg, dict):
            cfg = DataConfig.model_validate(cfg)
        if roots:
            cfg = cfg.model_copy(update={"roots": list(roots)})
        self.cfg = cfg
        self.index: Optional[ShardIndex] = None
        self.loader: Optional[ShardLoader] = None
        self._trained = 0  # batches handed to training steps by this process
        self._pending: Optional[dict] = None

    def setup(self, stage: Optional[str] = None) -> None:
        if self.index is None:
            if not self.cfg.roots:
                raise ValueError("data.roots is empty: give the shard directories written by `mocha curate`")
            self.index = build_index(self.cfg.roots, self.cfg.audio_emb_dim)
            log.info("data: %s", self.index.totals())

    def train_dataloader(self) -> ShardLoader:
        self.setup()
        rank, world = _rank_world(getattr(self, "trainer", None))
        ds = ShardStream(self.index, self.cfg, rank, world, "curriculum")
        self.loader = ShardLoader(ds, self.cfg.num_workers, self.cfg.prefetch_factor, tag_batches=True)
        state = self._pending
        if state is not None and "ranks" in state:
            state = state["ranks"].get(str(rank)) or state["ranks"].get(rank)
        if state is not None:
            self.loader.restore(state)
            self._trained = int(state["consumed"])
            self._pending = None
        return self.loader

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if isinstance(batch, dict) and INDEX_KEY in batch:
            self._trained = int(batch.pop(INDEX_KEY)) + 1
        return batch

    def current_stage(self) -> int:
        return self.cfg.curriculum.stage_at(self._trained // self.cfg.accumulate_grad_batches)

    def state_dict(self) -> dict:
        if self.loader is None:
            return dict(self._pending or {})
        own = self.loader.snapshot(self._trained)
        own["stage"] = self.current_stage()
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            # every rank reads its own slice: the checkpoint keeps all ranks' states
            states: list = [None] * dist.get_world_size()
            dist.all_gather_object(states, own)
            return {"ranks": {str(i): s for i, s in enumerate(states)}, "stage": own["stage"]}
        return own

    def load_state_dict(self, state: dict) -> None:
        self._pending = dict(state) if state else None
