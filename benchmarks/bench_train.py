"""Training-step figures of the DiT on this CPU, and a computed memory budget for the 1B config.

    .venv/bin/python benchmarks/bench_train.py [--quick]

Prints:
- step time (forward + backward + AdamW) and video tokens/s of the tiny and the ~100M config;
- the speech-video window attention's overhead against plain audio cross-attention (same
  model, same inputs, window on vs off, interleaved runs);
- parameter count of the 1B config and its estimated per-GPU memory under FSDP FULL_SHARD on
  8 GPUs (bf16 mixed precision, fp32 master weights + AdamW + EMA, activation checkpointing).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.dit import DiT, dit_config  # noqa: E402
from model.flow import interpolate  # noqa: E402


def make_inputs(cfg, B, T, H, W, text_len=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = cfg.vae_temporal_compression
    x1 = torch.randn(B, cfg.in_channels, T, H, W, generator=g)
    x0 = torch.randn(B, cfg.in_channels, T, H, W, generator=g)
    t = torch.rand(B, generator=g)
    text = torch.randn(B, text_len, cfg.text_dim, generator=g)
    audio = torch.randn(B, 1 + r * (T - 1), cfg.audio_dim, generator=g)
    return x1, x0, t, text, audio


def step_times(model, inputs, steps, warmup=1):
    x1, x0, t, text, audio = inputs
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        xt, v = interpolate(x1, x0, t)
        loss = (model(xt, t, text, audio) - v).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def bench_config(name, preset, overrides, shape, steps):
    cfg = dit_config(preset, **overrides)
    torch.manual_seed(0)
    model = DiT(cfg)
    B, T, H, W = shape
    inputs = make_inputs(cfg, B, T, H, W)
    gt, gh, gw = model.grid(inputs[0].shape)
    tokens = B * gt * gh * gw
    ts = step_times(model, inputs, steps)
    med = statistics.median(ts)
    print(f"{name:>6}: {model.num_params() / 1e6:8.2f} M params | latents B={B} T'={T} {H}x{W} -> "
          f"{tokens} video tokens/step | step {med * 1000:9.1f} ms (median of {steps}) | "
          f"{tokens / med:9.0f} tokens/s")
    return model, inputs


def window_overhead(model, inputs, reps):
    """Median step time with the window mask vs without, interleaved so load drift cancels."""
    on, off = [], []
    for _ in range(reps):
        model.cfg.window_attention = True
        on += step_times(model, inputs, 1, warmup=0)
        model.cfg.window_attention = False
        off += step_times(model, inputs, 1, warmup=0)
    model.cfg.window_attention = True
    return statistics.median(on), statistics.median(off)


def attention_only_overhead(width=768, heads=12, L=13, tokens_per_frame=256, reps=20):
    """The audio cross-attention alone (where the mask acts), forward+backward."""
    from model.dit import Attention
    from model.window_attention import window_mask

    torch.manual_seed(0)
    att = Attention(width, heads)
    n_audio = 1 + 4 * (L - 1)
    x = torch.randn(1, L * tokens_per_frame, width, requires_grad=True)
    a = torch.randn(1, n_audio, width)
    mask = window_mask(L, tokens_per_frame, 4)[None, None]
    res = {}
    for name, m in (("window", mask), ("plain", None)):
        ts = []
        for i in range(reps + 2):
            t0 = time.perf_counter()
            att(x, a, m).sum().backward()
            if i >= 2:
                ts.append(time.perf_counter() - t0)
        res[name] = statistics.median(ts)
    return res, L * tokens_per_frame, n_audio


def fsdp_memory(gpus=8, B=2, frames=49, side=256, text_len=512):
    """Per-GPU memory of the 1B config under FSDP FULL_SHARD, in GiB (estimate, see notes)."""
    cfg = dit_config("1b", in_channels=16, text_dim=4096, audio_dim=768)
    with torch.device("meta"):
        model = DiT(cfg)
    P = sum(p.numel() for p in model.parameters())
    block = sum(p.numel() for p in model.blocks[0].parameters())
    GiB = 1024 ** 3
    # sharded state: fp32 master weights 4 B, fp32 grads 4 B, AdamW m+v 8 B, EMA fp32 4 B
    sharded = P * (4 + 4 + 8 + 4) / gpus
    # unsharded bf16 copies in flight: the gathered unit being computed + one prefetched
    gathered = 2 * block * 2 * 2  # (params + grads during backward) x 2 units x 2 B
    L = 1 + (frames - 1) // 4
    N = L * (side // 8 // 2) ** 2  # Wan VAE 8x spatial, patch 2
    w = cfg.width
    # activation checkpointing: block inputs kept (bf16) for every block, plus one block's
    # full activations during recompute (~ 34 * N * w bytes for attention+MLP in bf16, with
    # flash/SDPA attention that does not materialise N x N scores)
    act = B * (N * w * 2 * cfg.depth + 34 * N * w + 2 * text_len * w * 2)
    frozen_t5 = 5.7e9 * 2  # umT5-XXL encoder in bf16, replicated (unless prompts are pre-encoded)
    frozen_vae = 127e6 * 2  # Wan 2.1 VAE in bf16 (unused when latents are precomputed)
    return {
        "params": P, "params_per_block": block, "video_tokens_per_sample": N,
        "sharded_state_gib": sharded / GiB, "gathered_units_gib": gathered / GiB,
        "activations_gib": act / GiB, "frozen_t5_gib": frozen_t5 / GiB, "frozen_vae_gib": frozen_vae / GiB,
        "total_dit_only_gib": (sharded + gathered + act) / GiB,
        "total_with_frozen_gib": (sharded + gathered + act + frozen_t5 + frozen_vae) / GiB,
        "unsharded_state_gib": P * 20 / GiB,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = ap.parse_args()
    reps = 3 if args.quick else 8
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    print("== training step (fp32, CPU) ==")
    tiny, tiny_in = bench_config("tiny", "tiny", dict(in_channels=4, text_dim=32, audio_dim=8),
                                 (2, 5, 16, 16), steps=reps * 3)
    big, big_in = bench_config("100m", "100m", dict(in_channels=16, text_dim=4096, audio_dim=768),
                               (1, 5, 16, 16), steps=reps)
    print("== speech-video window attention vs plain audio cross-attention ==")
    for name, m, inp in (("tiny", tiny, tiny_in), ("100m", big, big_in)):
        on, off = window_overhead(m, inp, reps)
        print(f"{name:>6} full step: window {on * 1000:.1f} ms, plain {off * 1000:.1f} ms, ratio {on / off:.3f}")
    res, n, na = attention_only_overhead(reps=reps * 3)
    print(f"audio cross-attn alone (w=768, {n} video x {na} audio tokens, fwd+bwd): window "
          f"{res['window'] * 1000:.2f} ms, plain {res['plain'] * 1000:.2f} ms, ratio {res['window'] / res['plain']:.3f}")
    print("== 1B config under FSDP FULL_SHARD, 8 GPUs (computed) ==")
    m = fsdp_memory()
    print(f"params {m['params'] / 1e9:.3f} B ({m['params_per_block'] / 1e6:.1f} M per block), "
          f"{m['video_tokens_per_sample']} video tokens per 49-frame 256x256 sample")
    print(f"per GPU: sharded fp32 weights+grads+AdamW+EMA {m['sharded_state_gib']:.2f} GiB, gathered bf16 units "
          f"{m['gathered_units_gib']:.2f} GiB, activations (B=2, checkpointed) {m['activations_gib']:.2f} GiB "
          f"-> DiT {m['total_dit_only_gib']:.2f} GiB; + replicated umT5-XXL/VAE {m['frozen_t5_gib'] + m['frozen_vae_gib']:.2f} GiB "
          f"-> {m['total_with_frozen_gib']:.2f} GiB (unsharded state would be {m['unsharded_state_gib']:.1f} GiB)")


if __name__ == "__main__":
    main()
