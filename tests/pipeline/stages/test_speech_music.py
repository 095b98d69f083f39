import json

import numpy as np
import pytest

from common import media
from pipeline.stages.music import MusicConfig, MusicStage, snr_music_ratio
from pipeline.stages.speech import SpeechConfig, SpeechStage


def _row(pcm, has_audio=True):
    return {"has_audio": has_audio, "audio_pcm": pcm, "backends": "{}", "reject_stage": None, "st2v_block": None}


@pytest.fixture(scope="module")
def stages():
    return SpeechStage(SpeechConfig()), MusicStage(MusicConfig(backend="snr"))


@pytest.mark.realdata
def test_speech_over_music_scores_clearly_higher_music_ratio_than_clean_speech(real_dir, stages):
    sp, mu = stages
    clean = _row(media.decode_audio(str(real_dir / "speech_clean_librispeech_198-209-0000.ogg")))
    mix = _row(media.decode_audio(str(real_dir / "derived" / "mix_speech_over_music_snr5db.wav")))
    for r in (clean, mix):
        sp.run([r])
        mu.run([r])
    assert clean["speech_ratio"] > 0.7 and mix["speech_ratio"] > 0.7
    assert mix["music_ratio"] > clean["music_ratio"] + 0.1
    # ground truth: the music stem is 5 dB below the speech, i.e. ~24 % of the energy
    assert 0.12 < mix["music_ratio"] < 0.4
    assert json.loads(mix["backends"])["music"]["backend"] == "snr-vad-gated"


@pytest.mark.realdata
def test_music_only_blocks_st2v(real_dir, stages):
    sp, mu = stages
    r = _row(media.decode_audio(str(real_dir / "music_only_vibe_ace.ogg"))[: 16000 * 20])
    sp.run([r])
    mu.run([r])
    assert r["music_ratio"] > 0.9
    assert r["st2v_block"] is not None and r["reject_stage"] is None  # still usable as t2v


def test_no_audio_and_silence_are_named(stages):
    sp, mu = stages
    r = _row(np.zeros(0, np.float32), has_audio=False)
    sp.run([r])
    mu.run([r])
    assert r["st2v_block"] == "speech: no_audio_stream" and r["speech_ratio"] is None
    r = _row(np.zeros(32000, np.float32))
    sp.run([r])
    assert r["st2v_block"] == "speech: silent_audio" and r["speech_ratio"] == 0.0


def test_snr_estimate_tracks_a_known_background_level():
    rng = np.random.default_rng(0)
    n = 16000 * 6
    voice = np.zeros(n, np.float32)
    voice[16000:16000 * 5] = 0.3 * np.sin(2 * np.pi * 200 * np.arange(16000 * 4) / 16000)
    noise = 0.03 * rng.standard_normal(n).astype(np.float32)
    ratio = snr_music_ratio(voice + noise, [[1.0, 5.0]])
    truth = float(np.sum(noise.astype(np.float64) ** 2) / np.sum((voice + noise).astype(np.float64) ** 2))
    assert ratio == pytest.approx(truth, rel=0.15)


@pytest.fixture(scope="module")
def tiny_htdemucs(tmp_path_factory):
    """A tiny random HTDemucs saved in demucs' own package format (serialize_model minus its
    omegaconf training args): the same loading code as the published htdemucs checkpoint.
    Depth 3 keeps the cross-transformer's sequences short enough for a CPU test."""
    import torch
    from demucs.htdemucs import HTDemucs
    from demucs.states import get_state

    torch.manual_seed(0)
    net = HTDemucs(sources=["drums", "bass", "other", "vocals"], channels=8, depth=3, t_layers=1, nfft=512, dconv_comp=2,
                   segment=1, bottom_channels=0)
    args, kwargs = net._init_args_kwargs
    pkg = {"klass": HTDemucs, "args": args, "kwargs": kwargs, "state": get_state(net, None, False), "training_args": {}}
    path = tmp_path_factory.mktemp("demucs") / "tiny-htdemucs.th"
    torch.save(pkg, path)
    return str(path)


def test_demucs_backend_loads_a_serialized_model_and_cleans_the_audio(tiny_htdemucs):
    st = MusicStage(MusicConfig(backend="demucs", demucs_model=tiny_htdemucs))
    pcm = (0.2 * np.sin(2 * np.pi * 220 * np.arange(16000 * 2) / 16000)).astype(np.float32)
    r = _row(pcm)
    r["speech_segments"] = "[[0, 2]]"
    st.run([r])
    assert r["reject_stage"] is None, r["reject_reason"]
    b = json.loads(r["backends"])["music"]
    assert b["backend"] == "demucs" and b["file"] == "tiny-htdemucs.th"
    assert 0.0 <= r["music_ratio"] <= 1.0
    assert r["audio_pcm"].shape == pcm.shape and not np.allclose(r["audio_pcm"], pcm)


def _mixes(seed=0):
    """Clips of different lengths: under one segment, several segments with a short tail."""
    rng = np.random.default_rng(seed)
    t = np.arange(16000 * 4) / 16000
    tone = 0.2 * np.sin(2 * np.pi * 180 * t)
    return [(tone[:n] + 0.05 * rng.standard_normal(n)).astype(np.float32) for n in (16000 * 2, 16000 * 3 + 77, 9000)]


def test_segment_batches_equal_demucs_apply_model(tiny_htdemucs):
    """Segments of several clips in one forward give each clip demucs' own ``apply_model``
    result (which runs one clip, one segment at a time)."""
    from pipeline.stages.music import load_demucs, separate_vocals, separate_vocals_batch

    net, _ = load_demucs(tiny_htdemucs)
    pcms = _mixes()
    alone = [separate_vocals(net, p) for p in pcms]
    together = separate_vocals_batch(net, pcms, batch_size=8)
    for a, t, p in zip(alone, together, pcms):
        assert t.shape == a.shape == p.shape
        np.testing.assert_allclose(t, a, atol=1e-6 * float(np.abs(a).max()) + 1e-9)
    assert not np.allclose(together[0][:9000], together[2], atol=1e-4)  # a real per-clip result


def test_music_stage_batch_equals_single_rows(tiny_htdemucs):
    st = MusicStage(MusicConfig(backend="demucs", demucs_model=tiny_htdemucs, demucs_batch_size=3))
    rows = [_row(p) for p in _mixes(1)] + [_row(np.zeros(16000, np.float32)), _row(np.zeros(0, np.float32), False)]
    alone = [st.run([dict(r)])[0] for r in rows]
    together = st.run([dict(r) for r in rows])
    for a, t in zip(alone, together):
        assert t["music_ratio"] == pytest.approx(a["music_ratio"], abs=1e-5)
        np.testing.assert_allclose(t["audio_pcm"], a["audio_pcm"], atol=1e-6)
    assert [t["music_ratio"] for t in together[3:]] == [0.0, None]


def test_demucs_requested_but_missing_is_an_error_naming_fetch(tmp_path):
    from common.weights import ModelMissing

    st = MusicStage(MusicConfig(backend="demucs"), models_dir=str(tmp_path))
    with pytest.raises(ModelMissing, match="mocha models fetch htdemucs"):
        st.setup()


def test_demucs_skips_clips_already_kept_out_of_st2v(tiny_htdemucs, monkeypatch):
    """Separation only where it can still decide something: a clip the speech stage already
    blocked keeps its audio and no music ratio, and does not reach the network."""
    from pipeline.stages import music

    sent = []
    for name in ("separate_vocals", "separate_vocals_batch"):
        fn = getattr(music, name)
        monkeypatch.setattr(music, name, lambda net, pcms, *a, _fn=fn, **k: (sent.append(pcms), _fn(net, pcms, *a, **k))[1])
    st = MusicStage(MusicConfig(backend="demucs", demucs_model=tiny_htdemucs))
    pcm = (0.2 * np.sin(2 * np.pi * 220 * np.arange(16000 * 2) / 16000)).astype(np.float32)
    blocked, open_ = _row(pcm.copy()), _row(0.5 * pcm)
    blocked["st2v_block"] = "speech: low_speech_ratio 0.10 < 0.50"
    open_["speech_segments"] = "[[0, 2]]"
    st.run([blocked, open_])
    assert blocked["music_ratio"] is None and np.array_equal(blocked["audio_pcm"], pcm)
    assert blocked["st2v_block"] == "speech: low_speech_ratio 0.10 < 0.50" and blocked["reject_stage"] is None
    assert open_["music_ratio"] is not None
    got = [p for batch in sent for p in (batch if isinstance(batch, list) else [batch])]
    assert len(got) == 1 and np.array_equal(got[0], 0.5 * pcm)  # only the open clip was separated
