"""The curriculum mix the sampler really draws for one stage, next to the configured one and the
one effective after pools absent from the shards are renormalised (metadata only, nothing is
decoded): what ``mocha data inspect`` prints."""
from __future__ import annotations

from collections import Counter

from training.data.config import DataConfigError, load_data_config
from training.data.curriculum import expected_mix
from training.data.sampler import CurriculumSampler
from training.data.shards import build_index


def inspect_mix(roots: list[str], stage: int, samples: int, config: str | None = None,
                overrides: list[str] = ()) -> dict:
    cfg = load_data_config(config, list(overrides), roots=list(roots))
    if not 0 <= stage < len(cfg.curriculum.stages):
        raise DataConfigError(f"--stage {stage}: the curriculum has stages 0..{len(cfg.curriculum.stages) - 1}")
    index = build_index(cfg.roots, None)
    sampler = CurriculumSampler(index, cfg.curriculum, cfg.seed, window=cfg.shuffle_window)
    pools = sampler.pools(stage)
    track, shot = Counter(), Counter()
    for _ in range(samples):
        item = index.items[sampler.draw(stage)[0]]
        track[item.track] += 1
        if item.track == "st2v":
            shot[item.shot_size] += 1
    # effective = after renormalising pools absent from the shards (allow_missing_pools)
    want = expected_mix(pools)
    mix = cfg.curriculum.stages[stage]
    conf_shot = mix.shot_mix if mix.track_mix.get("st2v", 0) > 0 else {}
    n_st2v = max(1, track["st2v"])

    def row(conf: dict, eff: dict, drawn: Counter, total: int, key: str) -> dict:
        return {"configured": round(conf.get(key, 0.0), 4), "effective": round(eff.get(key, 0.0), 4),
                "drawn": round(drawn[key] / max(1, total), 4)}

    return {
        "stage": stage, "samples": samples,
        "pools": [{"pool": p.key, "weight": round(p.weight, 6)} for p in pools],
        "track": {t: row(mix.track_mix, want["track"], track, samples, t)
                  for t in sorted(set(mix.track_mix) | set(track))},
        "st2v_shot": {s: row(conf_shot, want["st2v_shot"], shot, n_st2v, s)
                      for s in sorted(set(conf_shot) | set(shot))},
        "totals": index.totals(),
    }
