"""`mocha generate`: a playable mp4 whose duration matches the speech within one frame and whose
audio stream is the input speech; multi-clip prompts; `mocha eval` on the result."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from common.media import decode_audio, decode_video, encode_audio, probe
from mocha.cli import main as mocha

FPS = 25.0


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A checkpoint of a tiny module on a tiny random Wan base, as the trainer writes it (only
    the trained tensors + EMA, the base's identity)."""
    from training.demo import build_tiny_models
    from training.module import MochaLitModule

    d = tmp_path_factory.mktemp("gen")
    models = build_tiny_models(d / "models", audio_dim=8)
    torch.manual_seed(0)
    m = MochaLitModule(base=models["wan"], mocha={"audio_dim": 8}, train_mode="audio", vae=models["vae"],
                       text_encoder=models["t5"], audio_model=models["w2v"], text_max_length=64, ema_decay=0.99)
    for n in m.ema.names:  # speech layers that do something (their zero init would not)
        if n.endswith("audio_attn.to_out.0.weight"):
            torch.nn.init.normal_(m.ema.shadow(n), std=0.05)
    ck = {"state_dict": m.state_dict(), "hyper_parameters": dict(m.hparams)}
    m.on_save_checkpoint(ck)
    path = d / "tiny.ckpt"
    torch.save(ck, path)
    return str(path)


def _aligned_corr(a: np.ndarray, b: np.ndarray, max_lag: int = 2048) -> float:
    """Best correlation of ``b`` against ``a`` over small lags (AAC adds a short delay)."""
    x = a[max_lag:len(a) - max_lag]
    best = -1.0
    for lag in range(-max_lag, max_lag + 1, 8):
        y = b[max_lag + lag:max_lag + lag + len(x)]
        if len(y) == len(x):
            best = max(best, float(np.corrcoef(x, y)[0, 1]))
    return best


def _check_mp4(path, speech: np.ndarray):
    info = probe(str(path))
    assert info.has_video and info.has_audio and info.video_codec == "h264"
    frames, _ = decode_video(str(path))  # playable: every frame decodes
    dur = len(speech) / 16000.0
    assert abs(len(frames) / FPS - dur) <= 1.0 / FPS, (len(frames), dur)
    got = decode_audio(str(path))
    assert abs(len(got) - len(speech)) / 16000.0 < 0.1
    assert _aligned_corr(speech, got) > 0.9  # the muxed track is the input speech (AAC-coded)
    return frames


@pytest.mark.realdata
def test_generate_writes_mp4_with_the_input_speech(ckpt, real_dir, tmp_path):
    src = real_dir / "speech_clean_librispeech_198-209-0000.ogg"
    speech = decode_audio(str(src))[: int(3.3 * 16000)]  # 3.3 s: not a whole number of frames
    wav = tmp_path / "speech.wav"
    wav.write_bytes(encode_audio(speech, fmt="wav"))
    speech = decode_audio(str(wav))
    out = tmp_path / "out.mp4"
    rc = mocha(["generate", "--ckpt", ckpt, "--prompt", "A close-up of a woman reading aloud.", "--speech", str(wav),
                "--out", str(out), "--steps", "2", "--height", "32", "--width", "32"])
    assert rc == 0
    frames = _check_mp4(out, speech)
    assert frames.shape[1:] == (32, 32, 3)
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["backends"]["vae"].startswith("tiny-random") and side["ema"] is True


def test_multi_clip_prompt_one_pass(ckpt, tmp_path):
    from common.synth import synth_speech

    tracks = [synth_speech(1.0, 1), synth_speech(1.45, 2)]
    wavs = []
    for i, t in enumerate(tracks):
        p = tmp_path / f"s{i}.wav"
        p.write_bytes(encode_audio(t, fmt="wav"))
        wavs.append(str(p))
    prompt = ("Two video clips.\nCharacters:\nPerson1: a woman in a red coat.\nPerson2: a bearded man.\n"
              "First clip: Close-up shot. Person1 talks.\nSecond clip: Close-up shot. Person2 talks.")
    out = tmp_path / "conv.mp4"
    args = ["generate", "--ckpt", ckpt, "--prompt", prompt, "--out", str(out), "--steps", "2",
            "--height", "32", "--width", "32"]
    assert mocha(args + ["--speech", wavs[0]]) == 1  # two clips need two speech tracks
    assert mocha(args + ["--speech", wavs[0], "--speech", wavs[1]]) == 0
    speech = np.concatenate([decode_audio(w) for w in wavs])
    _check_mp4(out, speech)
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["clips"] == 2 and side["clip_frames"] == [25, 36]


def test_plan_frames_within_half_a_frame():
    from training.generate import plan_frames

    for durs in ([0.05], [3.3], [1.01, 2.02, 0.77], [0.5] * 7):
        lat, cut = plan_frames(durs, FPS, 4)
        assert all(1 + 4 * (L - 1) >= n for L, n in zip(lat, cut))  # the latents cover every kept frame
        assert all(1 + 4 * (L - 2) < n for L, n in zip(lat, cut) if L > 1)  # and no more latents than needed
        assert abs(sum(cut) / FPS - sum(durs)) <= 0.5 / FPS + 1e-9


@pytest.mark.realdata
def test_eval_scores_videos_and_labels_backend(ckpt, real_dir, tmp_path):
    """`mocha eval`: Sync-C/Sync-D per video from the sync stage's scorer; an unscorable video
    (the tiny model's noise has no face) is a row with its reason, not a crash."""
    from common.media import encode_mp4

    src = str(real_dir / "closeup_talk_hdtf_katiehill.mp4")
    frames, _ = decode_video(src, width=256, height=256, max_frames=75)
    talk = tmp_path / "talk.mp4"
    talk.write_bytes(encode_mp4(list(frames), FPS, audio=decode_audio(src)[: 3 * 16000]))
    noise = tmp_path / "noise.mp4"
    wav = tmp_path / "s.wav"
    wav.write_bytes(encode_audio(decode_audio(str(talk)), fmt="wav"))
    assert mocha(["generate", "--ckpt", ckpt, "--prompt", "A woman talks.", "--speech", str(wav),
                  "--out", str(noise), "--steps", "1", "--height", "32", "--width", "32"]) == 0
    report_path = tmp_path / "eval.json"
    assert mocha(["eval", str(talk), str(noise), "--out", str(report_path)]) == 0
    rep = json.loads(report_path.read_text())
    assert rep["summary"]["videos"] == 2 and rep["summary"]["scored"] == 1
    row = rep["videos"][0]
    assert np.isfinite(row["sync_c"]) and np.isfinite(row["sync_d"]) and row["backend"]["backend"] == "av-correlation"
    assert "error" in rep["videos"][1]
    assert rep["summary"]["sync_c_mean"] == pytest.approx(row["sync_c"])


def test_caption_json_prompt_is_rendered_and_counts_clips():
    from training.generate import count_prompt_clips, prompt_from_input

    doc = {"clips": [
        {"characters": [{"tag": "Person1", "appearance": "a woman in a red coat", "speaking": True}],
         "camera": {"shot_size": "close_up"}},
        {"characters": [{"tag": "Person2", "appearance": "a bearded man", "speaking": True}],
         "camera": {"shot_size": "medium"}}]}
    text = prompt_from_input(json.dumps(doc))
    assert text.startswith("Two video clips.") and "Person1" in text and "Person2" in text
    assert count_prompt_clips(text) == 2
    assert count_prompt_clips("A woman talks to the camera.") == 1
    assert prompt_from_input("A woman talks.") == "A woman talks."


def test_speech_and_ema_steer_the_sampler(ckpt):
    """The speech track reaches the video (through the EMA speech layers and the audio
    guidance); the raw weights (zero-init speech output) ignore it; the two samplers differ."""
    from common.synth import synth_speech
    from training.generate import GenerateConfig, generate, load_module

    module = load_module(ckpt)
    feats = lambda pcm, fps, n: np.random.default_rng(len(pcm)).standard_normal((n, 8)).astype(np.float32)  # noqa: E731
    cfg = dict(height=32, width=32, steps=3, seed=0)
    a, b = synth_speech(1.0, 1), synth_speech(1.0, 2)[:15800]  # same frame count, other features
    run = lambda s, **kw: generate(module, "A woman talks.", [s], GenerateConfig(**{**cfg, **kw}), feats).frames  # noqa: E731
    fa, fb = run(a), run(b)
    assert fa.shape == fb.shape and np.abs(fa.astype(int) - fb.astype(int)).max() > 0
    raw_a, raw_b = run(a, use_ema=False), run(b, use_ema=False)
    assert np.array_equal(raw_a, raw_b)  # untrained speech layers add exactly nothing
    assert not np.array_equal(run(a, scheduler="euler"), fa)
