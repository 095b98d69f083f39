"""Optional precomputed latents: the pipeline stage encodes the training window with the VAE
wrapper (a tiny random Wan VAE built offline), the loader uses them instead of pixels, and
falls back to pixels for a batch where not every sample has them or the shape does not match."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from common.framing import latents_from_bytes
from pipeline.stages.latents import LatentsConfig, LatentStage
from tests.helpers.datashards import DIM, colour_clip, make_row, write_shards
from training.data.config import DataConfig
from training.data.dataset import ShardLoader, ShardStream
from training.data.shards import build_index


@pytest.fixture(scope="module")
def vae_path(tmp_path_factory):
    from model.vae import build_tiny_vae

    return build_tiny_vae(tmp_path_factory.mktemp("vae"))


@pytest.fixture(scope="module")
def stage(vae_path):
    return LatentStage(LatentsConfig(enabled=True, vae=vae_path, subfolder=None, num_frames=5, buckets=[[32, 32]]))


def _cfg(root, **kw):
    base = dict(roots=[str(root)], num_frames=5, resolution=32, buckets=[[32, 32]], batch_size=2, num_workers=0,
                audio_emb_dim=DIM, vae_spatial_compression=4, random_crop=True,
                curriculum={"stage": 1, "allow_missing_pools": True})
    base.update(kw)
    return DataConfig(**base)


def test_stage_writes_latents_of_the_training_window(stage):
    row = make_row("c0", "st2v", "close_up", colour_clip(40, step=8))
    out = stage.run([dict(row)])[0]
    z = latents_from_bytes(out["latents"])
    assert z.dtype == np.float16 and z.shape == (4, 2, 8, 8)  # 1 + (5-1)/4 frames, 32/4 px
    assert "latents" in out["backends"] and "tiny-random" in out["backends"]
    short = stage.run([make_row("c1", "st2v", "close_up", colour_clip(40, n=3), n=3)])[0]
    assert short["latents"] is None and "shorter" in short["backends"]


def test_loader_uses_latents_and_they_match_its_own_pixels(tmp_path, stage):
    rows = [make_row(f"c{i}", "st2v", "close_up", colour_clip(30 + 20 * i, step=8), emb_value=float(i))
            for i in range(2)]
    for r in rows:
        r["latents"] = stage.run([dict(r)])[0]["latents"]
    write_shards(tmp_path, rows)
    idx = build_index([str(tmp_path)], DIM)
    (lat,) = list(ShardLoader(ShardStream(idx, _cfg(tmp_path), mode="epoch"), 0))
    assert "video" not in lat and lat["latents"].shape == (2, 4, 2, 8, 8)
    # audio features cover frames 0..4, the window the latents encode
    np.testing.assert_allclose(lat["audio_emb"][:, :, 0].numpy() % 1, np.tile(np.arange(5) / 100, (2, 1)), atol=2e-3)
    (px,) = list(ShardLoader(ShardStream(idx, _cfg(tmp_path, use_latents=False, random_crop=False), mode="epoch"), 0))
    assert "latents" not in px and px["video"].shape == (2, 3, 5, 32, 32)
    order = [px["clip_id"].index(c) for c in lat["clip_id"]]
    z = stage.vae.encode(px["video"][order])
    torch.testing.assert_close(lat["latents"], z, atol=2e-2, rtol=1e-2)


def test_mixed_batch_and_mismatched_latents_fall_back_to_pixels(tmp_path, stage):
    rows = [make_row(f"c{i}", "st2v", "close_up", colour_clip(30, step=8)) for i in range(2)]
    rows[0]["latents"] = stage.run([dict(rows[0])])[0]["latents"]
    write_shards(tmp_path, rows)
    idx = build_index([str(tmp_path)], DIM)
    (b,) = list(ShardLoader(ShardStream(idx, _cfg(tmp_path), mode="epoch"), 0))
    assert "latents" not in b and b["video"].shape == (2, 3, 5, 32, 32)
    # another spatial compression than the stored latents: they are not this sample's
    loader = ShardLoader(ShardStream(idx, _cfg(tmp_path, vae_spatial_compression=8), mode="epoch"), 0)
    (b,) = list(loader)
    assert "video" in b
    assert loader.snapshot()["workers"][0]["latents_mismatched"] == 1


def test_batched_latents_equal_one_at_a_time(vae_path):
    """Clips of two buckets and one too short, in one batch: each gets the latents it gets
    alone (the batch is grouped by bucket, so no padding reaches the VAE)."""
    st = LatentStage(LatentsConfig(enabled=True, vae=vae_path, subfolder=None, num_frames=5,
                                   buckets=[[32, 32], [32, 48]], batch_size=4))
    rows = [make_row("a", "st2v", "close_up", colour_clip(30, step=8)),
            make_row("b", "st2v", "close_up", colour_clip(90, step=5, w=48), w=48),
            make_row("c", "st2v", "close_up", colour_clip(60, step=3)),
            make_row("d", "st2v", "close_up", colour_clip(60, n=3), n=3),
            make_row("e", "st2v", "close_up", colour_clip(150, step=2, w=48), w=48)]
    alone = [st.run([dict(r)])[0] for r in rows]
    together = st.run([dict(r) for r in rows])
    shapes = set()
    for a, t in zip(alone, together):
        if a["latents"] is None:
            assert t["latents"] is None and "shorter" in t["backends"]
            continue
        za, zt = latents_from_bytes(a["latents"]), latents_from_bytes(t["latents"])
        shapes.add(za.shape)
        np.testing.assert_allclose(zt.astype(np.float32), za.astype(np.float32), atol=2e-3, rtol=1e-3)
    assert shapes == {(4, 2, 8, 8), (4, 2, 8, 12)}  # both buckets were encoded
    # the clips really differ, so equal latents are not a constant
    z = [latents_from_bytes(t["latents"]) for t in together if t["latents"] is not None]
    assert not np.allclose(z[0], z[2])
