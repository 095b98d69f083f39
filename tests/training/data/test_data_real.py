"""Real shards written by `mocha curate` from ../shared/data/real load, decode and batch at the
training settings (256 px buckets, 49 frames at 25 fps)."""
from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from schemas.rows import META_EMB_DIM
from training.data.config import DataConfig
from training.data.datamodule import MochaDataModule
from training.data.dataset import ShardLoader, ShardStream
from training.data.inspect import inspect_mix
from training.data.shards import build_index

pytestmark = [pytest.mark.realdata, pytest.mark.slow]


@pytest.fixture(scope="module")
def shards(request):
    out = request.getfixturevalue("curated_real")  # session fixture: one `mocha curate` run
    if not list(out.glob("st2v/*.parquet")):
        pytest.fail(f"mocha curate wrote no st2v shard in {out}")
    return out


@pytest.fixture(scope="module")
def emb_dim(shards):
    f = sorted(shards.glob("st2v/*.parquet"))[0]
    return int(pq.read_schema(f).metadata[META_EMB_DIM])


@pytest.fixture(scope="module")
def wav2vec2_for(tmp_path_factory, emb_dim):
    """A tiny random Wav2Vec2 of the shards' embedding width: only used if the curation ran
    without an embedding model (then the loader must compute the features itself)."""
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    cfg = Wav2Vec2Config(hidden_size=emb_dim, num_hidden_layers=1, num_attention_heads=4, intermediate_size=32,
                         conv_dim=(16,) * 7, num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=4,
                         vocab_size=8)
    path = tmp_path_factory.mktemp("w2v_real")
    Wav2Vec2Model(cfg).save_pretrained(path)
    Wav2Vec2FeatureExtractor(sampling_rate=16000).save_pretrained(path)
    return str(path)


def test_every_real_sample_decodes_into_training_batches(shards, emb_dim, wav2vec2_for):
    # missing_prompt=empty: every curated clip must decode, whether or not captioning ran
    cfg = DataConfig(roots=[str(shards)], batch_size=2, num_workers=0, audio_emb_dim=emb_dim,
                     audio_model=wav2vec2_for, missing_prompt="empty")
    index = build_index(cfg.roots, emb_dim)
    tot = index.totals()
    assert tot["per_track"].get("st2v", 0) >= 1
    loader = ShardLoader(ShardStream(index, cfg, mode="epoch"), 0)
    seen = []
    for b in loader:
        B, C, T, H, W = b["video"].shape
        assert (C, T) == (3, 49) and [H, W] in cfg.bucket_list()
        assert b["audio_emb"].shape == (B, 49, emb_dim)
        assert b["video"].min() >= -1 and b["video"].max() <= 1 and b["video"].std() > 0.05
        for i in range(B):
            assert bool(b["has_audio"][i]) == (b["track"][i] == "st2v")
            n = int(b["num_frames"][i])
            assert n == 49  # curated clips are >= 2 s
            energy = float(b["audio_emb"][i, :n].abs().mean())
            assert (energy > 0) == (b["track"][i] == "st2v")
            assert isinstance(b["prompt"][i], str)
        seen += b["clip_id"]
    assert sorted(seen) == sorted(it.key for it in index.items)
    assert loader.skipped == {}


def test_rows_without_prompt_are_skipped_and_counted(shards, emb_dim, wav2vec2_for):
    no_prompt = sum(p is None for t in ("st2v", "t2v") for f in shards.glob(f"{t}/*.parquet")
                    for p in pq.read_table(f, columns=["prompt"]).column("prompt").to_pylist())
    cfg = DataConfig(roots=[str(shards)], batch_size=4, num_workers=0, audio_emb_dim=emb_dim,
                     audio_model=wav2vec2_for, num_frames=5, resolution=64, spatial_multiple=16)
    loader = ShardLoader(ShardStream(build_index(cfg.roots, emb_dim), cfg, mode="epoch"), 0)
    n = sum(len(b["clip_id"]) for b in loader)
    assert loader.skipped.get("no prompt text", 0) == no_prompt
    assert n == len(build_index(cfg.roots, emb_dim).items) - no_prompt


def test_datamodule_draws_curriculum_batches_from_real_shards(shards, emb_dim, wav2vec2_for):
    dm = MochaDataModule(DataConfig(roots=[str(shards)], batch_size=2, num_workers=1, audio_emb_dim=emb_dim,
                                    audio_model=wav2vec2_for, missing_prompt="empty",
                                    curriculum={"stage": 1, "allow_missing_pools": True}))
    dm.setup("fit")
    for i, b in enumerate(dm.train_dataloader()):
        b = dm.on_before_batch_transfer(b, 0)
        assert set(b) == {"video", "audio_emb", "has_audio", "prompt", "clip_id", "track", "shot_size", "num_frames"}
        assert all(s == "close_up" for s, t in zip(b["shot_size"], b["track"]) if t == "st2v")
        if i == 2:
            break
    st = dm.state_dict()
    assert st["consumed"] == 3 and st["stage"] == 1
    rep = inspect_mix([str(shards)], 0, 200)
    assert rep["track"]["t2v"]["drawn"] == 1.0
