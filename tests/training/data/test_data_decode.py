"""Sample decoding: corrupt rows skipped and counted, t2v zeros, per-frame alignment of audio
features, fps resampling, buckets, padding, multi-clip groups, features computed in the loader."""
from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from schemas.rows import SchemaError
from tests.helpers.datashards import DIM, colour_clip, make_row, write_shards
from training.data.config import DataConfig
from training.data.dataset import ShardLoader, ShardStream
from training.data.decode import MissingAudioFeatures, frame_counts
from training.data.shards import build_index


def _cfg(root, **kw):
    base = dict(roots=[str(root)], num_frames=5, resolution=32, buckets=[[32, 32]], batch_size=2, num_workers=0,
                audio_emb_dim=DIM, random_crop=False,
                curriculum={"stage": 1, "allow_missing_pools": True})
    base.update(kw)
    return DataConfig(**base)


def _epoch(cfg, **kw) -> tuple[list[dict], ShardLoader]:
    loader = ShardLoader(ShardStream(build_index(cfg.roots, DIM), cfg, mode="epoch", **kw), cfg.num_workers)
    return list(loader), loader


def _grey(video: "torch.Tensor") -> np.ndarray:  # noqa: F821
    """[3, T, H, W] in [-1, 1] -> mean grey level per frame, 0..255."""
    return ((video.mean(dim=(0, 2, 3)) + 1) * 127.5).numpy()


def _by_id(batches):
    out = {}
    for b in batches:
        for i, cid in enumerate(b["clip_id"]):
            out[cid] = {k: (v[i] if k != "video" or "video" in b else None) for k, v in b.items()}
    return out


def test_corrupt_video_is_skipped_with_a_logged_count(tmp_path, caplog):
    v = colour_clip(40)
    rows = [make_row(f"good{i}", "st2v", "close_up", v) for i in range(5)]
    rows.insert(2, make_row("bad", "st2v", "close_up", b"\x00\x01garbage" * 50))
    write_shards(tmp_path, rows)
    with caplog.at_level(logging.WARNING, logger="training.data.dataset"):
        batches, loader = _epoch(_cfg(tmp_path))
    ids = [c for b in batches for c in b["clip_id"]]
    assert sorted(ids) == [f"good{i}" for i in range(5)]
    assert loader.skipped == {"undecodable video": 1}
    assert any("skipped sample bad" in r.message and "1 skipped so far" in r.message for r in caplog.records)
    # curriculum mode: the bad draw is replaced, batches stay full and the epoch goes on
    loader = ShardLoader(ShardStream(build_index([str(tmp_path)], DIM), _cfg(tmp_path)), 0)
    for i, b in enumerate(loader):
        assert len(b["clip_id"]) == 2 and "bad" not in b["clip_id"]
        if i == 9:
            break
    assert loader.skipped["undecodable video"] >= 1


def test_t2v_has_zero_features_and_st2v_features_follow_their_frames(tmp_path):
    rows = [make_row("talk", "st2v", "close_up", colour_clip(30, step=8), emb_value=5.0),
            make_row("text", "t2v", "close_up", colour_clip(30, step=8))]
    write_shards(tmp_path, rows)
    cfg = _cfg(tmp_path, batch_size=1, random_crop=True, seed=3)
    s = _by_id(_epoch(cfg, stage=1)[0])
    assert not s["text"]["has_audio"] and float(s["text"]["audio_emb"].abs().sum()) == 0.0
    assert s["talk"]["has_audio"]
    src = np.round((_grey(s["talk"]["video"]) - 30) / 8)  # source frame index of each training frame
    emb = s["talk"]["audio_emb"][:, 0].numpy()
    np.testing.assert_allclose(emb, 5.0 + src / 100, atol=2e-3)  # float16 storage
    assert np.all(np.diff(src) == 1) and 0 <= src[0] <= 12 - 5
    assert s["talk"]["num_frames"] == 5 and s["talk"]["prompt"] == "prompt of talk"


def test_video_is_resampled_to_the_training_fps(tmp_path):
    rows = [make_row("hifps", "st2v", "close_up", colour_clip(10, n=24, fps=50.0, step=8), n=24, fps=50.0,
                     emb_value=1.0)]
    write_shards(tmp_path, rows)
    s = _by_id(_epoch(_cfg(tmp_path, num_frames=9, batch_size=1))[0])["hifps"]
    src = np.round((_grey(s["video"]) - 10) / 8)
    assert list(src) == [0, 2, 4, 6, 8, 10, 12, 14, 16]
    np.testing.assert_allclose(s["audio_emb"][:, 0].numpy(), 1.0 + src / 100, atol=2e-3)


def test_aspect_ratio_picks_the_bucket_and_short_clips_are_padded(tmp_path):
    rows = [make_row("wide", "t2v", "wide", colour_clip(100, w=64, h=32), w=64, h=32),
            make_row("short", "st2v", "close_up", colour_clip(100, n=3), n=3, emb_value=2.0)]
    write_shards(tmp_path, rows)
    cfg = _cfg(tmp_path, batch_size=1, buckets=[[32, 32], [32, 64], [64, 32]])
    batches, _ = _epoch(cfg, stage=1)
    shapes = {b["clip_id"][0]: tuple(b["video"].shape) for b in batches}
    assert shapes == {"wide": (1, 3, 5, 32, 64), "short": (1, 3, 5, 32, 32)}
    s = _by_id(batches)["short"]
    assert int(s["num_frames"]) == 3
    assert float(s["video"][:, 3:].max()) == -1.0 and float(s["video"][:, :3].min()) > -1.0
    assert float(s["audio_emb"][3:].abs().sum()) == 0.0 and float(s["audio_emb"][:3].abs().min()) > 0


def test_group_becomes_one_sample_concatenated_in_group_index_order(tmp_path):
    bases, embs = [20, 110, 200], [1.0, 2.0, 3.0]
    rows = [make_row(f"m{k}", "st2v", "medium", colour_clip(bases[k], step=2), emb_value=embs[k], group_id="g1",
                     group_index=k, group_size=3, group_prompt="three shots") for k in range(3)]
    rows = [rows[2], rows[0], rows[1]]  # storage order is not time order
    rows.append(make_row("solo", "st2v", "medium", colour_clip(60)))
    write_shards(tmp_path, rows)
    idx = build_index([str(tmp_path)], DIM)
    assert idx.totals()["groups"] == 1 and idx.totals()["samples"] == 2
    s = _by_id(_epoch(_cfg(tmp_path, num_frames=9, batch_size=1), stage=3)[0])["g1"]
    grey = _grey(s["video"])
    np.testing.assert_allclose(grey, [20, 22, 24, 110, 112, 114, 200, 202, 204], atol=2.5)
    np.testing.assert_allclose(np.floor(s["audio_emb"][:, 0].numpy()), [1, 1, 1, 2, 2, 2, 3, 3, 3])
    assert s["prompt"] == "three shots" and s["shot_size"] == "medium" and int(s["num_frames"]) == 9
    assert frame_counts([12, 2, 12], 9) == [4, 2, 3] and frame_counts([1, 1], 9) == [1, 1]


def test_foreign_parquet_is_a_clear_error(tmp_path):
    pq.write_table(pa.table({"x": [1, 2]}), tmp_path / "foreign.parquet")
    with pytest.raises(SchemaError, match="foreign.parquet.*not a shard written by mocha"):
        build_index([str(tmp_path)], DIM)


@pytest.fixture(scope="module")
def tiny_wav2vec2(tmp_path_factory):
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    cfg = Wav2Vec2Config(hidden_size=DIM, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
                         conv_dim=(8,) * 7, num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2,
                         vocab_size=8)
    path = tmp_path_factory.mktemp("w2v")
    Wav2Vec2Model(cfg).save_pretrained(path)
    Wav2Vec2FeatureExtractor(sampling_rate=16000).save_pretrained(path)
    return path


def test_missing_embeddings_are_computed_by_the_pipeline_wav2vec2(tmp_path, tiny_wav2vec2):
    from common.media import decode_audio_bytes, encode_audio
    from model.wav2vec2 import embed_audio, load_wav2vec2

    rng = np.random.default_rng(0)
    pcm = (0.3 * rng.standard_normal(int(12 / 25 * 16000))).astype(np.float32)
    row = make_row("noemb", "st2v", "close_up", colour_clip(30, step=8), audio_emb=None, audio=encode_audio(pcm))
    write_shards(tmp_path, [row])
    with pytest.raises(MissingAudioFeatures, match="audio_model"):
        _epoch(_cfg(tmp_path, batch_size=1))
    batches, loader = _epoch(_cfg(tmp_path, batch_size=1, audio_model=str(tiny_wav2vec2)))
    s = _by_id(batches)["noemb"]
    st = loader.snapshot()["workers"][0]
    assert st["audio_emb_computed"] == 1 and st["audio_emb_backend"]["where"] == "loader"
    net, fe = load_wav2vec2(str(tiny_wav2vec2))
    ref = embed_audio(net, fe, decode_audio_bytes(row["audio"]), 25.0, 12).astype(np.float32)
    np.testing.assert_allclose(s["audio_emb"].numpy(), ref[:5], rtol=1e-3, atol=1e-3)
    assert float(np.abs(ref[:5]).sum()) > 0
