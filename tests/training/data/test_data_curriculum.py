"""Curriculum: stage mixes over 10,000 draws, stage switches by step, config checks, inspect."""
from __future__ import annotations

import json
from collections import Counter

import pytest

from mocha.data import register
from tests.helpers.datashards import DIM, colour_clip, mixed_rows, write_shards
from training.data.config import DataConfig, DataConfigError, StageMix, halving_stages, load_data_config
from training.data.curriculum import CurriculumError, expected_mix
from training.data.dataset import ShardLoader, ShardStream
from training.data.inspect import inspect_mix
from training.data.sampler import CurriculumSampler
from training.data.shards import build_index

ALL_POOLS = {("st2v", "close_up"): 40, ("st2v", "medium_close_up"): 30, ("st2v", "medium"): 30,
             ("st2v", "wide"): 20, ("t2v", "close_up"): 15, ("t2v", "medium"): 10, ("t2v", "no_face"): 10}


@pytest.fixture(scope="module")
def video():
    return colour_clip(60)


@pytest.fixture(scope="module")
def shards(tmp_path_factory, video):
    root = tmp_path_factory.mktemp("curr")
    write_shards(root, mixed_rows(ALL_POOLS, video))
    return root


@pytest.fixture(scope="module")
def index(shards):
    return build_index([str(shards)], DIM)


def test_default_stages_follow_the_halving_rule():
    st = halving_stages()
    assert st[0].track_mix == {"t2v": 1.0}
    assert [s.shot_mix for s in st[1:]] == [
        {"close_up": 1.0},
        {"close_up": 0.5, "medium_close_up": 0.5},
        {"close_up": 0.25, "medium_close_up": 0.25, "medium": 0.5},
        {"close_up": 0.125, "medium_close_up": 0.125, "medium": 0.25, "wide": 0.5},
    ]
    assert all(s.track_mix == {"st2v": 0.8, "t2v": 0.2} for s in st[1:])
    # the shipped YAML is the same curriculum
    y = load_data_config("training/configs/data.yaml")
    assert y.curriculum == DataConfig().curriculum
    assert y.bucket_list() == DataConfig().bucket_list()
    assert (y.num_frames - 1) % y.vae_temporal_compression == 0


@pytest.mark.parametrize("stage", range(5))
def test_10000_draws_match_the_configured_mix(index, stage):
    cfg = DataConfig()
    s = CurriculumSampler(index, cfg.curriculum, seed=stage)
    n = 10_000
    track, shot = Counter(), Counter()
    for _ in range(n):
        it = index.items[s.draw(stage)[0]]
        track[it.track] += 1
        if it.track == "st2v":
            shot[it.shot_size] += 1
    want = expected_mix(s.pools(stage))
    if stage == 0:
        assert track["st2v"] == 0
        assert track["t2v"] == n
        return
    assert abs(track["st2v"] / n - 0.8) <= 0.02
    assert abs(track["t2v"] / n - 0.2) <= 0.02
    st2v = track["st2v"]
    for size, share in want["st2v_shot"].items():
        assert abs(shot[size] / st2v - share) <= 0.02, (size, shot[size] / st2v, share)
    assert set(shot) == set(want["st2v_shot"])  # no shot size outside the stage


def test_t2v_share_may_be_restricted_to_shot_sizes(index):
    cfg = DataConfig(curriculum={"stages": [{"track_mix": {"t2v": 1.0}, "t2v_shot_sizes": ["no_face"]}],
                                 "stage_starts": [0]})
    s = CurriculumSampler(index, cfg.curriculum, seed=0)
    assert {index.items[s.draw(0)[0]].shot_size for _ in range(300)} == {"no_face"}


def test_bad_mixes_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="sum to 1"):
        StageMix(track_mix={"st2v": 0.8, "t2v": 0.3}, shot_mix={"close_up": 1.0})
    with pytest.raises(ValueError, match="unknown key"):
        StageMix(track_mix={"st2v": 1.0}, shot_mix={"closeup": 1.0})
    with pytest.raises(DataConfigError, match="stage_starts"):
        load_data_config(None, ["curriculum.stage_starts=[0, 10]"])
    with pytest.raises(DataConfigError, match="unknown key 'batchsize'"):
        load_data_config(None, ["batchsize=3"])
    with pytest.raises(DataConfigError, match="1 \\+ 4k"):
        load_data_config(None, ["num_frames=48"])


def test_missing_shot_size_is_an_error_unless_renormalisation_is_allowed(tmp_path, video):
    write_shards(tmp_path, mixed_rows({("st2v", "close_up"): 6, ("t2v", "medium"): 4}, video))
    idx = build_index([str(tmp_path)], DIM)
    with pytest.raises(CurriculumError, match="medium_close_up"):
        CurriculumSampler(idx, DataConfig().curriculum, 0).draw(2)
    cur = DataConfig(curriculum={"allow_missing_pools": True}).curriculum
    s = CurriculumSampler(idx, cur, 0)
    assert {p.key for p in s.pools(2)} == {"st2v/close_up", "t2v"}
    assert abs(sum(p.weight for p in s.pools(2)) - 1) < 1e-9


@pytest.mark.parametrize("stage", [1, 2, 3, 4])
def test_empty_shot_pools_keep_the_80_20_track_share(tmp_path, video, stage):
    """The curated real clips have no st2v medium close-up: every stage still draws st2v 80 % /
    t2v 20 %, the missing shot's weight going to the st2v shots that exist, in proportion."""
    write_shards(tmp_path, mixed_rows({("st2v", "close_up"): 6, ("st2v", "medium"): 4, ("st2v", "wide"): 3,
                                       ("t2v", "medium"): 4}, video))
    idx = build_index([str(tmp_path)], DIM)
    cur = DataConfig(curriculum={"allow_missing_pools": True}).curriculum
    s = CurriculumSampler(idx, cur, seed=stage)
    want = expected_mix(s.pools(stage))
    assert want["track"] == pytest.approx({"st2v": 0.8, "t2v": 0.2})
    conf = {k: v for k, v in cur.stages[stage].shot_mix.items() if k != "medium_close_up"}
    assert want["st2v_shot"] == pytest.approx({k: v / sum(conf.values()) for k, v in conf.items()})
    n = 10_000
    track = Counter(idx.items[s.draw(stage)[0]].track for _ in range(n))
    assert abs(track["st2v"] / n - 0.8) <= 0.02 and abs(track["t2v"] / n - 0.2) <= 0.02


def test_a_track_without_samples_gives_its_share_to_the_others(tmp_path, video):
    write_shards(tmp_path, mixed_rows({("st2v", "close_up"): 6}, video))
    idx = build_index([str(tmp_path)], DIM)
    s = CurriculumSampler(idx, DataConfig(curriculum={"allow_missing_pools": True}).curriculum, 0)
    assert [(p.key, p.weight) for p in s.pools(2)] == [("st2v/close_up", pytest.approx(1.0))]


def test_pools_span_several_roots(tmp_path, video):
    a, b = tmp_path / "curated", tmp_path / "textonly"
    write_shards(a, mixed_rows({("st2v", "close_up"): 5}, video))
    write_shards(b, mixed_rows({("t2v", "wide"): 7}, video))
    idx = build_index([str(a), str(b / "t2v")], DIM)
    assert idx.totals()["per_track"] == {"st2v": 5, "t2v": 7}
    s = CurriculumSampler(idx, DataConfig().curriculum, 0)
    assert Counter(idx.items[s.draw(1)[0]].track for _ in range(1000))["t2v"] > 100


def test_stage_switches_at_configured_steps_in_the_loader(shards, index):
    # batches 0-3: stage 0; from step 4 (accumulate 2: batch 8) stage 1
    cfg = DataConfig(roots=[str(shards)], num_frames=5, resolution=32, batch_size=4, audio_emb_dim=DIM,
                     accumulate_grad_batches=2, curriculum={"stage_starts": [0, 4, 100, 200, 300]})
    loader = ShardLoader(ShardStream(index, cfg), num_workers=2)
    tracks = []
    for i, b in enumerate(loader):
        tracks.append(set(b["track"]))
        assert set(b) == {"video", "audio_emb", "has_audio", "prompt", "clip_id", "track", "shot_size", "num_frames"}
        if i == 13:
            break
    assert all(t == {"t2v"} for t in tracks[:8])
    assert any("st2v" in t for t in tracks[8:])
    assert {w["stage"] for w in loader.snapshot()["workers"].values()} == {1}


def test_data_inspect_reports_the_mix(shards, capsys):
    rep = inspect_mix([str(shards)], 3, 10_000)
    assert rep["totals"]["samples"] == sum(ALL_POOLS.values())
    for k, v in rep["st2v_shot"].items():
        assert abs(v["drawn"] - v["configured"]) <= 0.02, k
    assert rep["track"]["st2v"]["configured"] == 0.8

    import argparse

    p = argparse.ArgumentParser()
    register(p.add_subparsers(dest="command"))
    args = p.parse_args(["data", "inspect", str(shards), "--stage", "0", "--samples", "500", "--json"])
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["track"] == {"t2v": {"configured": 1.0, "effective": 1.0, "drawn": 1.0}}
    args = p.parse_args(["data", "inspect", str(shards), "--stage", "9"])
    assert args.func(args) == 2
    assert "stages 0..4" in capsys.readouterr().err
