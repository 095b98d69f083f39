"""DiT, speech-video window attention, flow matching and the frozen VAE / text-encoder wrappers."""
from __future__ import annotations

import pytest
import torch

from model.dit import Attention, DiT, dit_config
from model.flow import FlowConfig, euler_sample, interpolate, sample_t
from model.window_attention import frame_audio_mask, window_mask


def _expected_window(i: int, r: int, n_audio: int) -> set[int]:
    # written from the definition, independently of the module: frames covered by latent i
    covered = [0] if i == 0 else list(range(r * (i - 1) + 1, r * i + 1))
    lo, hi = covered[0] - 1, covered[-1] + 1
    return {a for a in range(lo, hi + 1) if 0 <= a < n_audio}


@pytest.mark.parametrize("r,L", [(4, 6), (2, 5), (1, 3), (8, 3)])
def test_window_mask_matches_formula(r, L):
    n_audio = 1 + r * (L - 1)
    m = frame_audio_mask(L, r)
    assert m.shape == (L, n_audio)
    for i in range(L):
        assert set(torch.nonzero(m[i]).flatten().tolist()) == _expected_window(i, r, n_audio)
    # every audio token is seen by at least one latent frame
    assert bool(m.any(0).all())


def test_window_mask_tokens_and_segments():
    m = window_mask(3, tokens_per_frame=4, r=4)
    assert m.shape == (12, 9)
    assert torch.equal(m[4:8], frame_audio_mask(3, 4)[1].expand(4, -1))
    # two clips of 2 latent frames (5 audio tokens each): each is causal and sees only its own speech
    seg = frame_audio_mask(4, 4, segments=[2, 2])
    assert seg.shape == (4, 10)
    assert set(torch.nonzero(seg[2]).flatten().tolist()) == {5, 6}  # first frame of clip 2
    assert not seg[:2, 5:].any() and not seg[2:, :5].any()
    with pytest.raises(ValueError):
        frame_audio_mask(4, 4, segments=[2, 3])


def _tiny(window=True, depth=1, seed=0):
    torch.manual_seed(seed)
    m = DiT(dit_config("tiny", in_channels=4, text_dim=16, audio_dim=8, depth=depth, window_attention=window))
    torch.nn.init.normal_(m.head.weight, std=0.2)  # zero-init head would hide every dependency
    return m.eval()


def _inputs(seed=1, L=4, B=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, 4, L, 4, 4, generator=g)
    t = torch.full((B,), 0.5)
    text = torch.randn(B, 3, 16, generator=g)
    audio = torch.randn(B, 1 + 4 * (L - 1), 8, generator=g)
    return x, t, text, audio


@torch.no_grad()
def test_audio_perturbation_respects_window():
    """In a one-block DiT the audio cross-attention is the only path from speech to a latent
    frame (self-attention runs before it), so the model output shows the mask exactly."""
    x, t, text, audio = _inputs()
    L, n_audio = x.shape[2], audio.shape[1]
    win = _tiny(window=True)
    full = _tiny(window=False)
    for i in range(L):
        allowed = sorted(_expected_window(i, 4, n_audio))
        outside = [a for a in range(n_audio) if a not in allowed]
        base_w, base_f = win(x, t, text, audio)[:, :, i], full(x, t, text, audio)[:, :, i]
        a_out = audio.clone()
        a_out[:, outside] += 3.0 * torch.randn_like(a_out[:, outside])
        assert torch.allclose(win(x, t, text, a_out)[:, :, i], base_w, atol=1e-6), f"latent {i} saw outside audio"
        assert not torch.allclose(full(x, t, text, a_out)[:, :, i], base_f, atol=1e-4), "window off must see it"
        a_in = audio.clone()
        a_in[:, allowed[len(allowed) // 2]] += 3.0
        assert not torch.allclose(win(x, t, text, a_in)[:, :, i], base_w, atol=1e-4), f"latent {i} blind to its window"


@torch.no_grad()
def test_attention_mask_rows_without_keys_are_zero_not_nan():
    att = Attention(16, 2)
    x, ctx = torch.randn(1, 3, 16), torch.randn(1, 2, 16)
    mask = torch.tensor([[True, False], [False, False], [False, True]])
    out = att(x, ctx, mask[None, None])
    assert torch.isfinite(out).all()
    assert torch.allclose(out[0, 1], att.o.bias)


def test_t2v_zero_audio_and_mixed_batch_trains():
    m = _tiny(window=True, depth=2)
    m.train()
    x, t, text, audio = _inputs(B=2)
    has_audio = torch.tensor([True, False])
    with torch.no_grad():
        y = m(x, t, text, audio, has_audio=has_audio)
        # the t2v sample's speech is ignored entirely: any features give the same output
        y2 = m(x, t, text, audio * 5 + 1, has_audio=has_audio)
        y_zero = m(x[1:], t[1:], text[1:], torch.zeros_like(audio[1:]))
    assert torch.allclose(y[1], y2[1], atol=1e-6) and not torch.allclose(y[0], y2[0], atol=1e-4)
    assert torch.allclose(y[1:], y_zero, atol=1e-5)
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    x1 = torch.randn_like(x)
    x0 = torch.randn_like(x)
    losses = []
    for _ in range(30):
        xt, v = interpolate(x1, x0, t)
        loss = (m(xt, t, text, audio, has_audio=has_audio) - v).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_grad_checkpointing_same_gradients():
    x, t, text, audio = _inputs()
    grads = []
    for ckpt in (False, True):
        m = _tiny(depth=2)
        m.cfg.grad_checkpointing = ckpt
        m.train()
        m(x, t, text, audio).square().mean().backward()
        grads.append(m.blocks[0].self_attn.q.weight.grad.clone())
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_flow_matching_interpolation_and_sampling():
    x1, x0 = torch.randn(3, 2, 5), torch.randn(3, 2, 5)
    t = torch.tensor([0.0, 0.5, 1.0])
    xt, v = interpolate(x1, x0, t)
    assert torch.allclose(xt[0], x0[0]) and torch.allclose(xt[2], x1[2])
    assert torch.allclose(v, x1 - x0)
    # with the exact velocity field of a straight path the Euler sampler lands on the data
    out = euler_sample(lambda x, tt: x1 - x0, x0, steps=7, shift=3.0)
    assert torch.allclose(out, x1, atol=1e-5)
    ts = sample_t(20000, FlowConfig(), torch.Generator().manual_seed(0))
    assert 0 < ts.min() and ts.max() < 1 and abs(ts.median().item() - 0.5) < 0.02
    # logit-normal puts less mass in the tails than uniform
    assert ((ts < 0.1) | (ts > 0.9)).float().mean() < 0.1


def test_tiny_vae_and_text_encoder_roundtrip(tmp_path):
    from common.weights import ModelMissing
    from model.text_encoder import TINY_LABEL as T5_TINY
    from model.text_encoder import build_tiny_text_encoder, load_text_encoder
    from model.vae import TINY_LABEL, build_tiny_vae, load_vae

    vae = load_vae(build_tiny_vae(tmp_path / "vae"))
    assert vae.label == TINY_LABEL
    assert (vae.temporal_compression, vae.spatial_compression) == (4, 4)
    video = torch.rand(1, 3, 9, 16, 16) * 2 - 1
    z = vae.encode(video)
    assert z.shape == (1, vae.latent_channels, 3, 4, 4) == (1, *vae.latent_shape(9, 16, 16))
    assert vae.decode(z).shape == video.shape
    with pytest.raises(ValueError, match="1 \\+ 4k"):
        vae.encode(video[:, :, :8])
    te = load_text_encoder(build_tiny_text_encoder(tmp_path / "t5"))
    assert te.label == T5_TINY
    h, mask = te.encode(["a", "a much longer prompt"])
    assert h.shape[:2] == mask.shape and mask[0].sum() < mask[1].sum()
    assert torch.all(h[0][~mask[0]] == 0)
    with pytest.raises(ModelMissing, match="mocha models fetch"):
        load_vae(str(tmp_path / "missing"))
