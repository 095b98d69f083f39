"""Speech-video window mask, flow matching in the base's convention, diffusers' samplers, and the
frozen VAE / text-encoder wrappers."""
from __future__ import annotations

import pytest
import torch

from model.flow import FlowConfig, interpolate, sample, sample_sigma, shift_sigma, timestep_of
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


def test_flow_matching_interpolation_and_sampling():
    """Wan's convention: x_s = (1-s) data + s noise, target noise - data, timestep 1000 s; both
    diffusers samplers land on the data given the exact velocity of a straight path."""
    x1, x0 = torch.randn(3, 2, 5), torch.randn(3, 2, 5)
    s = torch.tensor([0.0, 0.5, 1.0])
    xs, v = interpolate(x1, x0, s)
    assert torch.allclose(xs[0], x1[0]) and torch.allclose(xs[2], x0[2])
    assert torch.allclose(xs[1], 0.5 * (x1[1] + x0[1])) and torch.allclose(v, x0 - x1)
    assert torch.equal(timestep_of(s), torch.tensor([0.0, 500.0, 1000.0]))
    seen = []
    for sched in ("unipc", "euler"):
        def vel(x, t):
            seen.append(float(t[0]))
            return x0 - x1
        out = sample(vel, x0, steps=7, shift=3.0, scheduler=sched)
        assert torch.allclose(out, x1, atol=1e-4), sched
    assert seen[0] > 990 and all(a > b for a, b in zip(seen[:7], seen[1:7]))  # from noise down
    with pytest.raises(ValueError, match="unknown scheduler"):
        sample(lambda x, t: x, x0, scheduler="ddim")
    ss = sample_sigma(20000, FlowConfig(), torch.Generator().manual_seed(0))
    assert 0 < ss.min() and ss.max() < 1 and abs(ss.median().item() - 0.5) < 0.02
    # logit-normal puts less mass in the tails than uniform
    assert ((ss < 0.1) | (ss > 0.9)).float().mean() < 0.1
    # Wan's shift moves levels towards noise and keeps the ends fixed
    shifted = sample_sigma(20000, FlowConfig(shift=3.0), torch.Generator().manual_seed(0))
    assert shifted.median() > 0.7
    assert torch.allclose(shift_sigma(torch.tensor([0.0, 1.0]), 3.0), torch.tensor([0.0, 1.0]))


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
