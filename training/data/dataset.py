"""Streaming dataset of curated shards and its resumable loader.

:class:`ShardStream` is a torch IterableDataset that yields whole batches (every sample of a
batch shares a resolution bucket and a length). Each (rank, dataloader worker) pair is one
*part*: it draws from its own disjoint slice of every pool (see sampler.py), so no coordination
is needed between processes. A worker attaches its state (a few integers and the mixing RNG) to
every batch it yields; :class:`ShardLoader` collects those states in the main process, which is
all a checkpoint needs to resume mid-epoch on the very next batch.

Order: torch's DataLoader takes batches from workers round-robin, so global batch ``g`` comes
from logical worker ``g % W`` and is that worker's batch number ``g // W``. The curriculum stage
of a batch is therefore known inside the worker without any message from the trainer. On
resume after ``N`` batches, physical worker ``p`` plays logical worker ``(p + N) % W`` so the
round-robin continues exactly where it stopped.

Modes: ``curriculum`` (endless weighted draws for training) and ``epoch`` (each sample of the
chosen stage's pools exactly once over all parts, for validation, inspection and tests).
"""
from __future__ import annotations

import copy
import logging
from collections import deque
from typing import Iterator, Literal, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from common.framing import choose_bucket
from training.data.audio_features import make_featurizer
from training.data.config import DataConfig
from training.data.curriculum import stage_for_batch, stage_pools
from training.data.decode import Sample, SampleDecoder, SampleError
from training.data.sampler import CurriculumSampler, epoch_order, part_slice
from training.data.shards import ChunkReader, ShardIndex

log = logging.getLogger(__name__)

STATE_KEY = "_state"
WORKER_KEY = "_worker"
INDEX_KEY = "_batch_index"
FINAL_KEY = "_end_of_epoch"


def collate(samples: list[Sample]) -> dict:
    batch = {
        "audio_emb": torch.from_numpy(np.stack([s.audio_emb for s in samples])),
        "has_audio": torch.tensor([s.has_audio for s in samples], dtype=torch.bool),
        "prompt": [s.prompt for s in samples],
        "clip_id": [s.key for s in samples],
        "track": [s.track for s in samples],
        "shot_size": [s.shot_size for s in samples],
        "num_frames": torch.tensor([s.num_frames for s in samples], dtype=torch.int64),
    }
    if all(s.latents is not None for s in samples):
        batch["latents"] = torch.from_numpy(np.stack([s.latents for s in samples])).float()
    else:
        frames = np.stack([s.frames for s in samples])  # B T H W 3
        batch["video"] = torch.from_numpy(frames).permute(0, 4, 1, 2, 3).float().div_(127.5).sub_(1.0)
    return batch


class ShardStream(IterableDataset):
    def __init__(self, index: ShardIndex, cfg: DataConfig, rank: int = 0, world_size: int = 1,
                 mode: Literal["curriculum", "epoch"] = "curriculum", stage: Optional[int] = None,
                 epoch: int = 0, featurizer=None):
        self.index, self.cfg = index, cfg
        self.rank, self.world_size = rank, world_size
        self.mode, self.stage, self.epoch = mode, stage, epoch
        self.featurizer = featurizer if featurizer is not None else make_featurizer(cfg)
        self.buckets = cfg.bucket_list()
        self.bucket_of = [choose_bucket(it.width, it.height, self.buckets) for it in index.items]
        # Set by ShardLoader before each iteration (pickled into the workers with the dataset).
        self.resume: Optional[dict] = None

    # -- per-part setup -----------------------------------------------------------------------
    def _part(self) -> tuple[int, int, int]:
        info = get_worker_info()
        nw, phys = (info.num_workers, info.id) if info is not None else (1, 0)
        shift = int(self.resume["consumed"]) if self.resume else 0
        logical = (phys + shift) % nw
        return logical, nw, self.rank * nw + logical

    def _stage_of(self, global_batch: int) -> int:
        if self.stage is not None:
            return self.stage
        return stage_for_batch(self.cfg.curriculum, global_batch, self.cfg.accumulate_grad_batches)

    def __iter__(self) -> Iterator[dict]:
        logical, nw, part = self._part()
        num_parts = self.world_size * nw
        state = copy.deepcopy((self.resume or {}).get("workers", {}).get(logical)) or {}
        if self.resume and (self.resume.get("num_workers"), self.resume.get("world_size")) != (nw, self.world_size):
            raise RuntimeError(
                f"cannot resume: the checkpoint's data state is for {self.resume.get('world_size')} rank(s) x "
                f"{self.resume.get('num_workers')} worker(s), this run has {self.world_size} x {nw}")
        reader = ChunkReader(self.index, self.cfg.row_group_cache)
        decoder = SampleDecoder(self.cfg, self.index.audio_emb_dim, self.featurizer)
        ctx = _Part(self, logical, nw, part, num_parts, reader, decoder, state)
        yield from (ctx.run_epoch() if self.mode == "epoch" else ctx.run_curriculum())


class _Part:
    """The iteration of one part; its ``state`` is what a checkpoint stores for it."""

    def __init__(self, ds: ShardStream, logical, nw, part, num_parts, reader, decoder, state):
        self.ds, self.cfg = ds, ds.cfg
        self.logical, self.nw, self.part, self.num_parts = logical, nw, part, num_parts
        self.reader, self.decoder = reader, decoder
        self.state = {"batches": 0, "draws": 0, "stage": None, "buffers": {}, "skipped": {}, "pos": 0, **state}
        self.failures = 0

    def _rows(self, item: int) -> list[dict]:
        return [self.reader.row(loc) for loc in self.ds.index.items[item].rows]

    def _decode(self, rec: list) -> Optional[Sample]:
        """``rec`` = [item, draw number]; None (and a logged count) if the sample is bad."""
        item, draw = rec
        it = self.ds.index.items[item]
        rng = np.random.default_rng([self.cfg.seed, 0xC0DE, self.part, self.num_parts, int(draw)])
        b = self.ds.buckets[self.ds.bucket_of[item]]
        try:
            s = self.decoder.decode(it, self._rows(item), (b[0], b[1]), rng)
            s.item = item
            self.failures = 0
            return s
        except SampleError as e:
            reason = e.reason
            sk = self.state["skipped"]
            sk[reason] = sk.get(reason, 0) + 1
            self.failures += 1
            log.warning("skipped sample %s (%s); %d skipped so far in this worker", it.key, e, sum(sk.values()))
            if self.failures >= self.cfg.max_consecutive_failures:
                raise RuntimeError(f"{self.failures} consecutive samples failed to decode (last: {e}); "
                                   "the shards look broken") from e
            return None

    def _pixels(self, s: Sample) -> Sample:
        """Pixels of a sample that came as latents, for a batch where not all have latents."""
        it = self.ds.index.items[s.item]
        b = self.ds.buckets[self.ds.bucket_of[s.item]]
        px = self.decoder.decode(it, self._rows(s.item), (b[0], b[1]), np.random.default_rng(0), allow_latents=False)
        px.item = s.item
        return px

    def _emit(self, samples: list[Sample]) -> dict:
        if any(s.latents is None for s in samples) and any(s.latents is not None for s in samples):
            px = []
            for s in samples:
                try:
                    px.append(self._pixels(s) if s.latents is not None else s)
                except SampleError as e:  # latents but undecodable video: drop it from this batch
                    self.state["skipped"][e.reason] = self.state["skipped"].get(e.reason, 0) + 1
                    log.warning("skipped sample %s (%s) in a mixed latents/pixels batch", s.key, e)
            samples = px
        if self.decoder.latent_mismatch:
            self.state["latents_mismatched"] = self.state.get("latents_mismatched", 0) + self.decoder.latent_mismatch
            self.decoder.latent_mismatch = 0
        batch = collate(samples)
        self.state["batches"] += 1
        if self.decoder.computed:
            # which backend produced these features: the loader's Wav2Vec2, not the curation
            self.state["audio_emb_computed"] = self.state.get("audio_emb_computed", 0) + self.decoder.computed
            self.state["audio_emb_backend"] = self.ds.featurizer.label()
            self.decoder.computed = 0
        batch[STATE_KEY] = copy.deepcopy(self.state)
        batch[WORKER_KEY] = self.logical
        return batch

    # -- curriculum: endless weighted draws ----------------------------------------------------
    def run_curriculum(self) -> Iterator[dict]:
        sampler = CurriculumSampler(self.ds.index, self.cfg.curriculum, self.cfg.seed, self.part, self.num_parts,
                                    self.cfg.shuffle_window)
        if "sampler" in self.state:
            sampler.load_state_dict(self.state["sampler"])
        B = self.cfg.batch_size
        bufs: dict[str, list] = self.state["buffers"]
        while True:
            g = self.state["batches"] * self.nw + self.logical
            stage = self.ds._stage_of(g)
            if stage != self.state["stage"]:
                bufs.clear()  # pending draws belong to the previous stage's mix
                self.state["stage"] = stage
            ready: list[Sample] = []
            # the first bucket to fill up makes this batch (one left full by replacements first)
            full = sorted(k for k, v in bufs.items() if len(v) >= B)
            target: Optional[str] = full[0] if full else None
            while len(ready) < B:
                need = B - len(ready)
                if target is not None and len(bufs.get(target, ())) >= need:
                    recs, bufs[target] = bufs[target][:need], bufs[target][need:]
                    # a bad sample is replaced by further draws into the same bucket
                    ready.extend(s for s in (self._decode(r) for r in recs) if s is not None)
                    continue
                item, _, _ = sampler.draw(stage)
                self.state["draws"] += 1
                key = str(self.ds.bucket_of[item])
                bufs.setdefault(key, []).append([item, self.state["draws"]])
                if target is None and len(bufs[key]) >= B:
                    target = key
            if not bufs.get(target):
                bufs.pop(target, None)
            self.state["sampler"] = sampler.state_dict()
            yield self._emit(ready)

    # -- epoch: every sample once over all parts -----------------------------------------------
    def epoch_items(self) -> np.ndarray:
        ds = self.ds
        stage = ds.stage if ds.stage is not None else 0
        counts: dict = {}
        for it in ds.index.items:
            counts[(it.track, it.shot_size)] = counts.get((it.track, it.shot_size), 0) + 1
        if ds.stage is None:
            items = list(range(len(ds.index.items)))
        else:
            pools = stage_pools(self.cfg.curriculum.stages[stage], counts, True, stage)
            items = [i for i, it in enumerate(ds.index.items) if any(p.matches(it.track, it.shot_size) for p in pools)]
        chunk_of = [it.rows[0][0] for it in ds.index.items]
        order = epoch_order(items, chunk_of, self.cfg.seed, 0xE90C, ds.epoch, self.cfg.shuffle_window)
        return part_slice(order, self.part, self.num_parts)

    def run_epoch(self) -> Iterator[dict]:
        mine = self.epoch_items()
        B = self.cfg.batch_size
        self.state["stage"] = self.ds.stage
        bufs: dict[str, list] = self.state["buffers"]

        def flush(key: str):
            samples = [s for s in (self._decode(r) for r in bufs.pop(key)) if s is not None]
            return self._emit(samples) if samples else None

        while self.state["pos"] < len(mine):
            p = self.state["pos"]
            self.state["pos"] += 1
            item = int(mine[p])
            key = str(self.ds.bucket_of[item])
            bufs.setdefault(key, []).append([item, p])
            if len(bufs[key]) >= B and (b := flush(key)) is not None:
                yield b
        for key in sorted(bufs):  # the tail: partial batches, so the union is the whole epoch
            if (b := flush(key)) is not None:
                yield b
        # state only (skip counts after the last batch); the loader does not hand it out
        yield {STATE_KEY: copy.deepcopy(self.state), WORKER_KEY: self.logical, FINAL_KEY: True}


class ShardLoader:
    """Iterates a ShardStream through a torch DataLoader and keeps the state to resume it.

    ``snapshot(n)`` is the state after the first ``n`` batches handed out (kept for the last
    ``history`` batches, because a trainer that prefetches has taken more batches than it has
    trained on); ``restore(state)`` makes the next iteration continue from it.
    """

    def __init__(self, dataset: ShardStream, num_workers: int = 0, prefetch_factor: int = 2,
                 tag_batches: bool = False, history: int = 64):
        self.dataset, self.num_workers, self.prefetch_factor = dataset, num_workers, prefetch_factor
        self.tag_batches = tag_batches
        self.consumed = 0
        self._workers: dict[int, dict] = {}
        self._history: deque = deque(maxlen=history)
        self._start: Optional[dict] = None

    def _state(self) -> dict:
        return {"consumed": self.consumed, "num_workers": max(1, self.num_workers),
                "world_size": self.dataset.world_size, "rank": self.dataset.rank,
                "workers": dict(self._workers)}

    def snapshot(self, n: Optional[int] = None) -> dict:
        if n is None or n == self.consumed:
            return copy.deepcopy(self._state())
        for c, st in reversed(self._history):
            if c == n:
                return copy.deepcopy(st)
        if self._start is not None and n == self._start["consumed"]:
            return copy.deepcopy(self._start)
        raise KeyError(f"no data state kept for batch {n} (consumed {self.consumed}, history {len(self._history)})")

    def restore(self, state: Optional[dict]) -> None:
        if not state:
            return
        self.consumed = int(state["consumed"])
        self._workers = {int(k): v for k, v in state.get("workers", {}).items()}
        self._history.clear()
        self._start = copy.deepcopy(self._state())

    @property
    def skipped(self) -> dict:
        out: dict = {}
        for st in self._workers.values():
            for k, v in st.get("skipped", {}).items():
                out[k] = out.get(k, 0) + v
        return out

    def __iter__(self) -> Iterator[dict]:
        self.dataset.resume = self._state() if self.consumed else None
        if self._start is None:
            self._start = copy.deepcopy(self._state())
        if self.num_workers > 0:
            dl = DataLoader(self.dataset, batch_size=None, num_workers=self.num_workers,
                            prefetch_factor=self.prefetch_factor, persistent_workers=False)
        else:
            dl = self.dataset
        for batch in dl:
            self._workers[int(batch.pop(WORKER_KEY))] = batch.pop(STATE_KEY)
            if batch.pop(FINAL_KEY, False):
                continue
            self.consumed += 1
            self._history.append((self.consumed, self._state()))
            if self.tag_batches:
                batch[INDEX_KEY] = self.consumed - 1
            yield batch
