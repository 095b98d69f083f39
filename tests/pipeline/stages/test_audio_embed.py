"""Wav2Vec2 embeddings through the same loading code as a real checkpoint (tiny random model
built offline and saved with save_pretrained)."""
import json

import numpy as np
import pytest

from common.weights import ModelMissing
from model.wav2vec2 import embed_audio, frames_to_features, load_wav2vec2
from pipeline.stages.audio_embed import AudioEmbedConfig, AudioEmbedStage


@pytest.fixture(scope="module")
def tiny_w2v(tmp_path_factory):
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(0)
    cfg = Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                         conv_dim=(16, 16, 16, 16, 16, 16, 16), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
    path = tmp_path_factory.mktemp("w2v")
    Wav2Vec2Model(cfg).save_pretrained(path)
    Wav2Vec2FeatureExtractor(sampling_rate=16000).save_pretrained(path)
    return str(path)


def test_one_float16_vector_per_video_frame(tiny_w2v):
    net, fe = load_wav2vec2(tiny_w2v)
    pcm = np.random.default_rng(0).standard_normal(16000 * 3).astype(np.float32) * 0.1
    emb = embed_audio(net, fe, pcm, fps=25.0, num_frames=75)
    assert emb.shape == (75, 32) and emb.dtype == np.float16
    assert np.isfinite(emb.astype(np.float32)).all() and emb.std() > 0


def test_interpolation_maps_50hz_states_onto_frames():
    hidden = np.arange(100, dtype=np.float32)[:, None]  # 2 s at 50 Hz, value = index
    out = frames_to_features(hidden, 50).astype(np.float32)[:, 0]  # 25 fps
    assert out[0] == pytest.approx(0.5, abs=0.01) and out[-1] == pytest.approx(98.5, abs=0.1)
    assert np.all(np.diff(out) > 0)


def test_stage_fills_st2v_rows_and_labels_backend(tiny_w2v):
    st = AudioEmbedStage(AudioEmbedConfig(model=tiny_w2v))
    row = {"has_audio": True, "audio_pcm": np.zeros(16000 * 2, np.float32) + 0.01, "fps": 25.0, "num_frames": 50,
           "backends": "{}", "reject_stage": None, "st2v_block": None}
    st.run([row])
    assert row["audio_emb"].shape == (50, 32)
    assert json.loads(row["backends"])["audio_embed"]["backend"] == "wav2vec2"
    t2v = dict(row, st2v_block="speech: no_audio_stream", audio_emb=None, backends="{}")
    st.run([t2v])
    assert t2v["audio_emb"] is None


def test_missing_model_leaves_null_and_says_why(tmp_path):
    st = AudioEmbedStage(AudioEmbedConfig(model="facebook/wav2vec2-base-960h"), models_dir=str(tmp_path))
    row = {"has_audio": True, "audio_pcm": np.zeros(16000, np.float32), "fps": 25.0, "num_frames": 25,
           "backends": "{}", "reject_stage": None, "st2v_block": None}
    st.run([row])
    assert row["audio_emb"] is None
    b = json.loads(row["backends"])["audio_embed"]
    assert b["backend"] == "none" and "mocha models fetch wav2vec2-base-960h" in b["reason"]
    with pytest.raises(ModelMissing, match="mocha models fetch"):
        load_wav2vec2("facebook/wav2vec2-base-960h", models_dir=str(tmp_path))
