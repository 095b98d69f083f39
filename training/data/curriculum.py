"""The stage curriculum as pools and weights.

A pool is a set of samples drawn from as one stream: ``st2v/<shot>`` for each shot size of a
stage's st2v share, and one ``t2v`` pool (optionally restricted to some shot sizes). A stage
is a list of (pool, weight); weights are the track share times the shot share.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

from training.data.config import CurriculumConfig, StageMix

log = logging.getLogger(__name__)


class CurriculumError(ValueError):
    pass


@dataclass(frozen=True)
class PoolSpec:
    key: str
    track: str
    shots: Optional[tuple[str, ...]]  # None: any shot size
    weight: float

    def matches(self, track: str, shot: str) -> bool:
        return track == self.track and (self.shots is None or shot in self.shots)


def stage_pools(mix: StageMix, counts: dict[tuple[str, str], int], allow_missing: bool = False,
                stage: int = 0) -> list[PoolSpec]:
    """Pools of one stage with their weights, checked against the shards' pool sizes."""
    pools: list[PoolSpec] = []
    for shot, w in mix.shot_mix.items():
        share = mix.track_mix.get("st2v", 0.0) * w
        if share > 0:
            pools.append(PoolSpec(f"st2v/{shot}", "st2v", (shot,), share))
    t2v = mix.track_mix.get("t2v", 0.0)
    if t2v > 0:
        shots = tuple(mix.t2v_shot_sizes) if mix.t2v_shot_sizes else None
        pools.append(PoolSpec("t2v" if shots is None else "t2v/" + "+".join(shots), "t2v", shots, t2v))
    sizes = {p.key: sum(n for (t, s), n in counts.items() if p.matches(t, s)) for p in pools}
    empty = [p.key for p in pools if sizes[p.key] == 0]
    if empty:
        msg = f"stage {stage}: no samples in pool(s) {empty} (shards have {dict(sorted(counts.items()))})"
        if not allow_missing or len(empty) == len(pools):
            raise CurriculumError(msg + ("" if allow_missing else "; set curriculum.allow_missing_pools=true to renormalise"))
        pools = _redistribute(pools, [p for p in pools if sizes[p.key] > 0], msg)
    return pools


def _redistribute(pools: list[PoolSpec], kept: list[PoolSpec], msg: str) -> list[PoolSpec]:
    """Weights of the non-empty pools once the empty ones are dropped.

    An empty pool's weight goes to the other pools of its own track, in proportion to their
    weights, so the track shares (MoCha's 80/20 st2v:t2v) are those configured; only a track
    with no samples at all gives its share to the other tracks.
    """
    share: dict[str, float] = {}
    left: dict[str, float] = {}
    for p in pools:
        share[p.track] = share.get(p.track, 0.0) + p.weight
    for p in kept:
        left[p.track] = left.get(p.track, 0.0) + p.weight
    lost = sorted(t for t in share if t not in left)
    if lost:
        log.warning("%s; track(s) %s have no samples at all: their share goes to the other tracks", msg, lost)
    else:
        log.warning("%s; their weight goes to the other pools of the same track", msg)
    total = sum(share[t] for t in left)
    return [PoolSpec(p.key, p.track, p.shots, p.weight / left[p.track] * share[p.track] / total) for p in kept]


def expected_mix(pools: list[PoolSpec]) -> dict:
    """Track shares and st2v shot shares implied by a stage's pools (what inspect compares)."""
    track: dict[str, float] = {}
    for p in pools:
        track[p.track] = track.get(p.track, 0.0) + p.weight
    st2v = track.get("st2v", 0.0)
    shot = {p.shots[0]: p.weight / st2v for p in pools if p.track == "st2v" and st2v > 0}
    return {"track": track, "st2v_shot": shot}


def stage_for_batch(cfg: CurriculumConfig, global_batch: int, accumulate: int = 1) -> int:
    return cfg.stage_at(global_batch // max(1, accumulate))
