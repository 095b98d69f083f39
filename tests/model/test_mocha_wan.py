"""MoCha on a tiny random Wan transformer saved and loaded in diffusers format: the step-0 model
is the base, the speech-video window holds through the real Wan blocks, t2v and st2v samples
mix in one batch, the training modes train what they say, the base's identity is recorded."""
from __future__ import annotations

import pytest
import torch

from model.finetune import LoraSettings, configure_training
from model.flow import interpolate
from model.mocha_wan import MochaConfig, MochaWan, is_added
from model.wan_base import TINY_LABEL, build_tiny_wan, load_base

AUDIO_DIM, TEXT_DIM, TEXT_LEN = 8, 32, 12


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def wan_dir(tmp_path_factory):
    return build_tiny_wan(tmp_path_factory.mktemp("wan") / "wan", in_channels=4, text_dim=TEXT_DIM)


@pytest.fixture(scope="module")
def wan1_dir(tmp_path_factory):
    """One block: the speech cross-attention is then the only path from speech to a token."""
    return build_tiny_wan(tmp_path_factory.mktemp("wan1") / "wan", in_channels=4, text_dim=TEXT_DIM,
                          num_layers=1)


def _mocha(path, mode="audio", **cfg):
    base, ident, label = load_base(path)
    torch.manual_seed(0)  # the new speech layers' init
    m = MochaWan(base, MochaConfig(audio_dim=AUDIO_DIM, **cfg))
    configure_training(m, mode, LoraSettings(rank=4, alpha=4))
    return m


def _inputs(seed=1, L=4, B=2):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, 4, L, 8, 8, generator=g)
    t = torch.linspace(200.0, 900.0, B)
    text = torch.zeros(B, TEXT_LEN, TEXT_DIM)
    text[:, :7] = torch.randn(B, 7, TEXT_DIM, generator=g)  # zero-padded, as Wan was trained
    audio = torch.randn(B, 1 + 4 * (L - 1), AUDIO_DIM, generator=g)
    return x, t, text, audio


def _expected_window(i: int, r: int, n_audio: int) -> list[int]:
    covered = [0] if i == 0 else list(range(r * (i - 1) + 1, r * i + 1))
    return [a for a in range(covered[0] - 1, covered[-1] + 2) if 0 <= a < n_audio]


@pytest.mark.parametrize("mode", ["audio", "lora", "full"])
def test_step0_velocity_is_the_base_and_diverges_after_training(wan_dir, mode):
    base, _, label = load_base(wan_dir)
    assert label == TINY_LABEL
    m = _mocha(wan_dir, mode)
    x, t, text, audio = _inputs()
    with torch.no_grad():
        ref = base(x, t, text, return_dict=False)[0]
        out = m(x, t, text, audio, has_audio=torch.tensor([True, True]))
    assert ref.abs().mean() > 0.1  # a random base predicts something
    assert torch.allclose(out, ref, rtol=0, atol=1e-6)
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-2)
    target = torch.randn_like(ref)
    for _ in range(3):
        loss = (m(x, t, text, audio) - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        assert (m(x, t, text, audio) - ref).abs().max() > 1e-3


def test_training_modes_train_what_they_say(wan_dir):
    counts = {}
    for mode in ("audio", "lora", "full"):
        m = _mocha(wan_dir, mode)
        trained = [n for n, p in m.named_parameters() if p.requires_grad]
        counts[mode] = sum(p.numel() for p in m.parameters() if p.requires_grad)
        if mode == "audio":
            assert trained and all(is_added(n) for n in trained)
            assert {n.split(".")[0] for n in trained} == {"audio_proj", "blocks"}
        if mode == "lora":
            lora = [n for n in trained if ".lora_" in n]
            assert lora and all(is_added(n) or ".lora_" in n for n in trained)
            # adapters on the base's attention and FFN, never on the speech layers
            assert any(".attn1.to_q.lora_A" in n for n in lora) and any(".ffn.net.2.lora_B" in n for n in lora)
            assert not any("audio_attn" in n for n in lora)
        if mode == "full":
            assert len(trained) == len(list(m.parameters()))
    assert counts["audio"] < counts["lora"] < counts["full"]
    with pytest.raises(ValueError, match="train_mode"):
        configure_training(_mocha(wan_dir), "everything")


def _randomise_speech(m, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for blk in m.blocks:
            w = blk.audio_attn.to_out[0].weight
            w.copy_(torch.randn(w.shape, generator=g) * 0.3)  # zero-init would hide every dependency


@torch.no_grad()
def test_speech_reaches_a_latent_frame_only_through_its_window(wan1_dir):
    x, t, text, audio = _inputs(B=1)
    L, n_audio = x.shape[2], audio.shape[1]
    win = _mocha(wan1_dir, window_attention=True).eval()
    full = _mocha(wan1_dir, window_attention=False).eval()
    for m in (win, full):
        _randomise_speech(m)
    for i in range(L):
        allowed = _expected_window(i, 4, n_audio)
        outside = [a for a in range(n_audio) if a not in allowed]
        base_w, base_f = win(x, t, text, audio)[:, :, i], full(x, t, text, audio)[:, :, i]
        a_out = audio.clone()
        a_out[:, outside] += 3.0 * torch.randn_like(a_out[:, outside])
        assert torch.allclose(win(x, t, text, a_out)[:, :, i], base_w, atol=1e-6), f"latent {i} saw outside speech"
        assert not torch.allclose(full(x, t, text, a_out)[:, :, i], base_f, atol=1e-4), "window off must see it"
        a_in = audio.clone()
        a_in[:, allowed[len(allowed) // 2]] += 3.0
        assert not torch.allclose(win(x, t, text, a_in)[:, :, i], base_w, atol=1e-4), f"latent {i} blind to its window"


def test_t2v_and_st2v_rows_mix_in_one_batch(wan_dir):
    m = _mocha(wan_dir, "audio")
    _randomise_speech(m)
    x, t, text, audio = _inputs(B=2)
    has_audio = torch.tensor([True, False])
    with torch.no_grad():
        y = m(x, t, text, audio, has_audio=has_audio)
        # the t2v row ignores whatever features it carries; the st2v row does not
        y2 = m(x, t, text, audio * 5 + 1, has_audio=has_audio)
        y_zero = m(x[1:], t[1:], text[1:], torch.zeros_like(audio[1:]))
    assert torch.allclose(y[1], y2[1], atol=1e-6) and not torch.allclose(y[0], y2[0], atol=1e-4)
    assert torch.allclose(y[1:], y_zero, atol=1e-5)
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=3e-3)
    g = torch.Generator().manual_seed(5)
    x1, x0 = torch.randn(x.shape, generator=g), torch.randn(x.shape, generator=g)
    s = torch.tensor([0.4, 0.6])
    losses = []
    for _ in range(15):
        xs, v = interpolate(x1, x0, s)
        loss = (m(xs, s * 1000, text, audio, has_audio=has_audio) - v).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_speech_padding_rows_without_any_key_get_no_speech(wan1_dir):
    """Video beyond the end of a shorter speech track has no valid audio in its window: its
    tokens get no speech signal (not NaN)."""
    m = _mocha(wan1_dir).eval()
    _randomise_speech(m)
    x, t, text, audio = _inputs(B=1)
    valid = torch.zeros(1, audio.shape[1], dtype=torch.bool)
    valid[:, :5] = True  # speech covers latent frames 0-1 only
    with torch.no_grad():
        y = m(x, t, text, audio, audio_valid=valid)
        y_other = m(x, t, text, audio * 0 + 7, audio_valid=valid)
    assert torch.isfinite(y).all()
    assert torch.allclose(y[:, :, 3], y_other[:, :, 3], atol=1e-6)


def test_grad_checkpointing_same_gradients(wan_dir):
    x, t, text, audio = _inputs()
    grads = []
    for ckpt in (False, True):
        m = _mocha(wan_dir, "full", grad_checkpointing=ckpt).train()
        _randomise_speech(m)
        m(x, t, text, audio).square().mean().backward()
        grads.append(m.blocks[0].attn1.to_q.weight.grad.clone())
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_base_identity_follows_the_weights(tmp_path):
    a = build_tiny_wan(tmp_path / "a", seed=0)
    b = build_tiny_wan(tmp_path / "b", seed=0)
    c = build_tiny_wan(tmp_path / "c", seed=1)
    ids = [load_base(p)[1] for p in (a, b, c)]
    assert ids[0]["sha256"] == ids[1]["sha256"] != ids[2]["sha256"]
    assert set(ids[0]["files"]) == {"config.json", "diffusion_pytorch_model.safetensors"}
    # a folder holding a whole pipeline is read from its transformer/ subfolder
    pipe = tmp_path / "pipe"
    build_tiny_wan(pipe / "transformer", seed=0)
    assert load_base(str(pipe))[1]["sha256"] == ids[0]["sha256"]


def test_default_base_is_a_pinned_registry_entry(tmp_path, monkeypatch):
    from common.weights import REGISTRY, ModelMissing
    from model.wan_base import DEFAULT_BASE

    e = REGISTRY[DEFAULT_BASE]
    assert e.kind == "hf" and e.source == "Wan-AI/Wan2.1-T2V-1.3B-Diffusers" and e.subfolder == "transformer"
    assert e.revision and len(e.revision) == 40
    monkeypatch.setenv("MOCHA_MODELS_DIR", str(tmp_path))
    with pytest.raises(ModelMissing, match=f"mocha models fetch {DEFAULT_BASE}"):
        load_base(DEFAULT_BASE)


def test_hub_id_in_the_hf_cache_gives_revision_and_blob_digests(tmp_path, monkeypatch):
    """A hub id already in the Hugging Face cache loads from its snapshot (never downloads); the
    revision is the snapshot's commit and weight digests are the blobs' names (no re-hashing)."""
    import hashlib
    import os

    import huggingface_hub.constants as hfc

    src = build_tiny_wan(tmp_path / "src")
    repo = tmp_path / "hub" / "models--acme--tiny-wan"
    commit = "a" * 40
    snap = repo / "snapshots" / commit / "transformer"
    snap.mkdir(parents=True)
    (repo / "blobs").mkdir()
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for f in sorted(os.listdir(src)):
        data = open(os.path.join(src, f), "rb").read()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        os.symlink(os.path.relpath(blob, snap), snap / f)
    monkeypatch.setattr(hfc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    calls = []
    import model.wan_base as wb

    monkeypatch.setattr(wb, "sha256_file", lambda p: calls.append(p) or hashlib.sha256(open(p, "rb").read()).hexdigest())
    _, ident, _ = load_base("acme/tiny-wan")
    assert ident["revision"] == commit and ident["sha256"] == load_base(src)[1]["sha256"]
    assert not any("snapshots" in str(p) for p in calls)  # digests from the blob names, nothing re-hashed
