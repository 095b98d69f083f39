"""Partitioning over ranks x dataloader workers: disjoint, complete, deterministic."""
from __future__ import annotations

from typing import Optional

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers.datashards import DIM, colour_clip, mixed_rows, write_shards
from training.data.config import DataConfig
from training.data.dataset import ShardLoader, ShardStream, _Part
from training.data.decode import SampleDecoder
from training.data.sampler import PoolCursor, epoch_order, part_slice
from training.data.shards import ChunkReader, ShardIndex, build_index


def batch_parts(index: ShardIndex, cfg: DataConfig, rank: int, world_size: int, num_workers: int,
                stage: Optional[int] = None, epoch: int = 0) -> list[list[int]]:
    """Items of each worker of ``rank`` in epoch mode."""
    ds = ShardStream(index, cfg, rank, world_size, "epoch", stage, epoch)
    out = []
    for w in range(num_workers):
        part = _Part(ds, w, num_workers, rank * num_workers + w, world_size * num_workers, None, None, {})
        out.append([int(i) for i in part.epoch_items()])
    return out

POOLS = {("st2v", "close_up"): 23, ("st2v", "medium"): 14, ("t2v", "wide"): 11}


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    root = tmp_path_factory.mktemp("part")
    write_shards(root, mixed_rows(POOLS, colour_clip(80)), per_file=9, row_group=4)
    return build_index([str(root)], DIM)


def _cfg(index_root=None, **kw):
    base = dict(num_frames=5, resolution=32, batch_size=3, audio_emb_dim=DIM, num_workers=2)
    base.update(kw)
    return DataConfig(**base)


def test_two_ranks_by_two_workers_see_disjoint_samples_whose_union_is_the_epoch(index):
    """Real DataLoader worker processes, one loader per rank, one epoch each."""
    cfg = _cfg()
    seen = []
    for rank in range(2):
        loader = ShardLoader(ShardStream(index, cfg, rank=rank, world_size=2, mode="epoch"), num_workers=2)
        ids = [cid for b in loader for cid in b["clip_id"]]
        assert len(ids) == len(set(ids))
        seen.append(set(ids))
    assert not seen[0] & seen[1]
    assert seen[0] | seen[1] == {it.key for it in index.items}
    # balanced: parts differ by at most one sample
    sizes = [len(p) for r in range(2) for p in batch_parts(index, cfg, r, 2, 2)]
    assert sum(sizes) == len(index.items) and max(sizes) - min(sizes) <= 1


def test_epoch_order_is_deterministic_by_seed_and_epoch(index):
    cfg = _cfg()
    a = batch_parts(index, cfg, 0, 2, 2, epoch=0)
    assert a == batch_parts(index, cfg, 0, 2, 2, epoch=0)
    assert a != batch_parts(index, cfg, 0, 2, 2, epoch=1)
    assert a != batch_parts(index, _cfg(seed=7), 0, 2, 2, epoch=0)


def test_pool_cursors_partition_every_epoch(index):
    """In curriculum mode each pool's epoch is split the same way: 4 parts, 3 epochs."""
    items = [i for i, it in enumerate(index.items) if it.track == "st2v" and it.shot_size == "close_up"]
    chunk_of = [it.rows[0][0] for it in index.items]
    n = len(items)
    parts = [PoolCursor(index, items, "st2v/close_up", 0, p, 4, 5, chunk_of) for p in range(4)]
    for epoch in range(3):
        got = []
        for p, c in enumerate(parts):
            share = (p + 1) * n // 4 - p * n // 4
            draws = [c.next() for _ in range(share)]
            assert {e for _, e in draws} == {epoch}
            got.extend(i for i, _ in draws)
        assert sorted(got) == sorted(items)


def test_chunk_major_order_keeps_row_groups_together(index):
    """Each part reads only a few row groups (contiguous slices of a chunk-major order)."""
    chunk_of = [it.rows[0][0] for it in index.items]
    order = epoch_order(list(range(len(index.items))), chunk_of, 0, 1, 0, window=1)
    switches = int(np.sum(np.diff([chunk_of[i] for i in order]) != 0))
    assert switches == len(set(chunk_of)) - 1


@settings(max_examples=200, deadline=None)
@given(n=st.integers(0, 500), parts=st.integers(1, 64))
def test_part_slices_are_disjoint_complete_and_balanced(n, parts):
    order = np.random.default_rng(n).permutation(n)
    sl = [part_slice(order, p, parts) for p in range(parts)]
    assert sorted(np.concatenate(sl).tolist()) == list(range(n))
    assert max(map(len, sl)) - min(map(len, sl)) <= 1


def test_a_part_reads_only_its_row_groups_once_with_a_bounded_cache(index, monkeypatch):
    """IO locality and bounded memory: in an epoch each worker reads each of its row groups once
    (plus at most the boundary ones) and never holds more than row_group_cache of them."""
    reads, peak = [], [0]
    orig = ChunkReader._table

    def counting(self, ci):
        if ci not in self._cache:
            reads.append(ci)
        t = orig(self, ci)
        peak[0] = max(peak[0], len(self._cache))
        return t

    monkeypatch.setattr(ChunkReader, "_table", counting)
    cfg = _cfg(shuffle_window=1, row_group_cache=2)
    parts = batch_parts(index, cfg, 0, 1, 4)
    chunk_of = [it.rows[0][0] for it in index.items]
    for w, items in enumerate(parts):
        reads.clear()
        ds = ShardStream(index, cfg, rank=0, world_size=1, mode="epoch")
        ctx = _Part(ds, w, 4, w, 4, ChunkReader(index, cfg.row_group_cache), SampleDecoder(cfg, DIM), {})
        ids = [c for b in ctx.run_epoch() if "clip_id" in b for c in b["clip_id"]]
        assert sorted(ids) == sorted(index.items[i].key for i in items)
        assert len(reads) == len(set(reads)) == len({chunk_of[i] for i in items})
    assert peak[0] <= 2
