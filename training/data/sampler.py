"""Deterministic, partitioned, resumable draws from the curriculum's pools.

Partitioning: every epoch of a pool is a permutation that is chunk-major (row groups shuffled,
items shuffled inside each, then shuffled in windows), split into ``num_parts`` contiguous
slices, one per (rank, dataloader worker). Slices are disjoint and their union is the epoch;
being contiguous, each part reads only its own row groups. All randomness derives from the
seed, the pool and the epoch, so any process rebuilds the same order; the only mutable state is
a few integers per pool plus the mixing RNG, which :meth:`state_dict` returns as plain Python.
"""
from __future__ import annotations

import logging
import zlib

import numpy as np

from training.data.curriculum import PoolSpec, stage_pools
from training.data.shards import ShardIndex

log = logging.getLogger(__name__)


def _tag(s: str) -> int:
    return zlib.crc32(s.encode())


def epoch_order(items: list[int], chunk_of: list[int], seed: int, tag: int, epoch: int, window: int) -> np.ndarray:
    """A permutation of ``items``: row groups shuffled, items shuffled inside them, then a
    windowed shuffle that interleaves neighbouring row groups."""
    rng = np.random.default_rng([seed, tag, epoch])
    by_chunk: dict[int, list[int]] = {}
    for it in items:
        by_chunk.setdefault(chunk_of[it], []).append(it)
    keys = sorted(by_chunk)
    order = []
    for k in rng.permutation(len(keys)):
        grp = by_chunk[keys[k]]
        order.extend(grp[j] for j in rng.permutation(len(grp)))
    order = np.asarray(order, dtype=np.int64)
    if window > 1:
        for s in range(0, len(order), window):
            order[s:s + window] = order[s:s + window][rng.permutation(len(order[s:s + window]))]
    return order


def part_slice(order: np.ndarray, part: int, num_parts: int) -> np.ndarray:
    """The contiguous share of ``order`` for ``part``; shares differ in size by at most one."""
    n = len(order)
    lo = part * n // num_parts
    hi = (part + 1) * n // num_parts
    return order[lo:hi]


class PoolCursor:
    """An endless walk over this part's slice of successive epochs of one pool."""

    def __init__(self, index: ShardIndex, items: list[int], key: str, seed: int, part: int, num_parts: int,
                 window: int, chunk_of: list[int]):
        self.items, self.key, self.seed = items, key, seed
        self.part, self.num_parts, self.window = part, num_parts, window
        self.chunk_of = chunk_of
        self.epoch, self.pos = 0, 0
        self._cache: tuple[int, np.ndarray] | None = None
        self.shared = len(items) < num_parts
        if self.shared:
            # Fewer samples than parts: a disjoint slice would leave some parts nothing to
            # draw, so every part walks the whole pool from its own offset.
            log.warning("pool %s has %d samples for %d parts: parts share it", key, len(items), num_parts)

    def _slice(self, epoch: int) -> np.ndarray:
        if self._cache is None or self._cache[0] != epoch:
            order = epoch_order(self.items, self.chunk_of, self.seed, _tag(self.key), epoch, self.window)
            if self.shared:
                sl = np.roll(order, -(self.part % len(order)))
            else:
                sl = part_slice(order, self.part, self.num_parts)
            self._cache = (epoch, sl)
        return self._cache[1]

    def next(self) -> tuple[int, int]:
        """(item, epoch) of the next sample."""
        sl = self._slice(self.epoch)
        if self.pos >= len(sl):
            self.epoch, self.pos = self.epoch + 1, 0
            sl = self._slice(self.epoch)
        item = int(sl[self.pos])
        self.pos += 1
        return item, self.epoch

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, st: dict) -> None:
        self.epoch, self.pos = int(st["epoch"]), int(st["pos"])


class CurriculumSampler:
    """Draws items for a stage: pool chosen by weight, item from that pool's cursor."""

    def __init__(self, index: ShardIndex, curriculum, seed: int, part: int = 0, num_parts: int = 1,
                 window: int = 256):
        self.index, self.curriculum, self.seed = index, curriculum, seed
        self.part, self.num_parts, self.window = part, num_parts, window
        self.chunk_of = [it.rows[0][0] for it in index.items]
        self.counts: dict[tuple[str, str], int] = {}
        for it in index.items:
            self.counts[(it.track, it.shot_size)] = self.counts.get((it.track, it.shot_size), 0) + 1
        self._pools: dict[int, list[PoolSpec]] = {}
        self.cursors: dict[str, PoolCursor] = {}
        self._pending: dict[str, dict] = {}  # cursor states restored before the cursor exists
        self.rng = np.random.default_rng([seed, 0x5EED, part, num_parts])

    def pools(self, stage: int) -> list[PoolSpec]:
        if stage not in self._pools:
            self._pools[stage] = stage_pools(self.curriculum.stages[stage], self.counts,
                                             self.curriculum.allow_missing_pools, stage)
        return self._pools[stage]

    def _cursor(self, p: PoolSpec) -> PoolCursor:
        c = self.cursors.get(p.key)
        if c is None:
            items = [i for i, it in enumerate(self.index.items) if p.matches(it.track, it.shot_size)]
            c = self.cursors[p.key] = PoolCursor(self.index, items, p.key, self.seed, self.part, self.num_parts,
                                                 self.window, self.chunk_of)
            if p.key in self._pending:
                c.load_state_dict(self._pending.pop(p.key))
        return c

    def draw(self, stage: int) -> tuple[int, str, int]:
        """(item, pool key, pool epoch) of the next sample of ``stage``."""
        pools = self.pools(stage)
        w = np.asarray([p.weight for p in pools])
        k = int(self.rng.choice(len(pools), p=w / w.sum())) if len(pools) > 1 else 0
        item, epoch = self._cursor(pools[k]).next()
        return item, pools[k].key, epoch

    def state_dict(self) -> dict:
        cur = {k: c.state_dict() for k, c in self.cursors.items()}
        cur.update({k: v for k, v in self._pending.items() if k not in cur})
        return {"rng": self.rng.bit_generator.state, "cursors": cur}

    def load_state_dict(self, st: dict) -> None:
        self.rng.bit_generator.state = st["rng"]
        self._pending = dict(st.get("cursors", {}))
        for k in list(self._pending):
            if k in self.cursors:
                self.cursors[k].load_state_dict(self._pending.pop(k))
