"""Wav2Vec2 embeddings through the same loading code as a real checkpoint (tiny random model
built offline and saved with save_pretrained)."""
import json

import numpy as np
import pytest

from common.weights import ModelMissing
from model.wav2vec2 import embed_audio, embed_audio_batch, frames_to_features, hidden_states_batch, load_wav2vec2
from pipeline.stages.audio_embed import AudioEmbedConfig, AudioEmbedStage


def _save_tiny_w2v(path, **config) -> str:
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(0)
    cfg = Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                         conv_dim=(16, 16, 16, 16, 16, 16, 16), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
                         **config)
    Wav2Vec2Model(cfg).save_pretrained(path)
    Wav2Vec2FeatureExtractor(sampling_rate=16000).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def tiny_w2v(tmp_path_factory):
    # wav2vec2-base's layout: GroupNorm over time in the first conv layer
    return _save_tiny_w2v(tmp_path_factory.mktemp("w2v"))


@pytest.fixture(scope="module")
def tiny_w2v_layernorm(tmp_path_factory):
    # wav2vec2-large's layout: LayerNorm per frame in every conv layer, pre-norm transformer
    return _save_tiny_w2v(tmp_path_factory.mktemp("w2v_ln"), feat_extract_norm="layer", do_stable_layer_norm=True,
                          conv_bias=True)


def _clips(seed=0):
    """Clips of different lengths (one under a second, one cut into several passes)."""
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(n).astype(np.float32), 25.0, n // 640)
            for n in (16000 * 3, 16000 * 2 + 123, 16000 * 5, 7000, 16000 * 3)]


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


@pytest.mark.parametrize("which", ["tiny_w2v", "tiny_w2v_layernorm"])
def test_batched_embedding_equals_one_at_a_time(which, request):
    net, fe = load_wav2vec2(request.getfixturevalue(which))
    clips = _clips()
    alone = [embed_audio(net, fe, *c, max_seconds_per_pass=2.0) for c in clips]
    for batch in (2, 8):
        together = embed_audio_batch(net, fe, clips, max_seconds_per_pass=2.0, batch_size=batch)
        for a, t, c in zip(alone, together, clips):
            assert t.shape == a.shape == (c[2], 32)
            # float16 output: equal up to one rounding step of the stored value
            np.testing.assert_allclose(t.astype(np.float32), a.astype(np.float32), atol=1e-3, rtol=1e-3)


def test_padding_would_change_the_features_without_the_masks(tiny_w2v):
    """What the masked batch guards against: zero padding alone (no attention mask, GroupNorm
    over the padded time axis) changes the valid frames by far more than rounding."""
    import torch

    net, fe = load_wav2vec2(tiny_w2v)
    xs = [fe(c[0], sampling_rate=16000, return_tensors="np").input_values[0] for c in _clips()]
    alone = [hidden_states_batch(net, [x])[0] for x in xs]
    masked = hidden_states_batch(net, xs)
    pad = np.zeros((len(xs), max(map(len, xs))), np.float32)
    for i, x in enumerate(xs):
        pad[i, :len(x)] = x
    with torch.inference_mode():
        naive = net(torch.from_numpy(pad), output_hidden_states=True).hidden_states[-1].numpy()
    for i, (a, m) in enumerate(zip(alone, masked)):
        assert m.shape == a.shape
        assert np.abs(m - a).max() < 1e-4
        if len(xs[i]) < pad.shape[1]:
            assert np.abs(naive[i, :len(a)] - a).max() > 0.1


def test_stage_embeds_a_batch_like_single_rows(tiny_w2v):
    st = AudioEmbedStage(AudioEmbedConfig(model=tiny_w2v, batch_size=4))

    def row(pcm, fps, n, **kw):
        return {"has_audio": True, "audio_pcm": pcm, "fps": fps, "num_frames": n, "backends": "{}",
                "reject_stage": None, "st2v_block": None, **kw}

    rows = [row(*c) for c in _clips()]
    rows[1]["st2v_block"] = "speech: silent_audio"  # t2v-bound: no embedding
    rows.append(row(np.zeros(0, np.float32), 25.0, 50, has_audio=False))
    alone = [st.run([dict(r)])[0] for r in rows]
    together = st.run([dict(r) for r in rows])
    for a, t in zip(alone, together):
        if a["audio_emb"] is None:
            assert t["audio_emb"] is None
        else:
            np.testing.assert_allclose(t["audio_emb"].astype(np.float32), a["audio_emb"].astype(np.float32),
                                       atol=1e-3, rtol=1e-3)
    assert [t["audio_emb"] is None for t in together] == [False, True, False, False, False, True]
