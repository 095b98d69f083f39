"""Training-step figures of MoCha on a tiny random Wan base (CPU), and computed per-GPU memory of
Wan 2.1 1.3B and 14B under each training mode on 8 GPUs.

    .venv/bin/python benchmarks/bench_train.py [--quick] [--threads N]

Prints:
- step time (forward + backward + AdamW) and video tokens/s of the tiny configuration
  (``training/configs/smoke.yaml``'s model: tiny Wan saved and loaded in diffusers format) in
  each training mode, and the speech-video window's cost against plain speech attention;
- parameter counts of Wan 1.3B / 14B (from their published configs, built on the meta device:
  nothing is downloaded) with MoCha's speech layers and LoRA rank 32;
- per-GPU memory under FSDP FULL_SHARD on 8 GPUs (bf16-mixed, activation checkpointing per
  block) for train_mode audio / lora / full, and for audio / lora under DDP with a bf16 frozen
  base, by the formula printed with the figures.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.finetune import LORA_TARGETS, LoraSettings, configure_training  # noqa: E402
from model.flow import interpolate, timestep_of  # noqa: E402
from model.mocha_wan import MochaConfig, MochaWan, is_added  # noqa: E402
from model.wan_base import build_tiny_wan, load_base  # noqa: E402

GiB = 1024 ** 3
# published transformer configs (Wan-AI/Wan2.1-T2V-{1.3B,14B}-Diffusers transformer/config.json)
WAN = {
    "1.3B": dict(num_attention_heads=12, attention_head_dim=128, ffn_dim=8960, num_layers=30),
    "14B": dict(num_attention_heads=40, attention_head_dim=128, ffn_dim=13824, num_layers=40),
}


# ----- CPU step time of the tiny configuration ------------------------------------------------
def tiny_inputs(B=2, L=5, side=16, text_len=128, text_dim=32, audio_dim=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x1 = torch.randn(B, 4, L, side, side, generator=g)
    x0 = torch.randn(B, 4, L, side, side, generator=g)
    s = torch.rand(B, generator=g)
    text = torch.randn(B, text_len, text_dim, generator=g)
    audio = torch.randn(B, 1 + 4 * (L - 1), audio_dim, generator=g)
    return x1, x0, s, text, audio


def step_times(model, inputs, steps, warmup=1):
    x1, x0, s, text, audio = inputs
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        xs, v = interpolate(x1, x0, s)
        loss = (model(xs, timestep_of(s), text, audio) - v).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def bench_tiny(steps: int):
    d = tempfile.mkdtemp(prefix="bench_wan_")
    path = build_tiny_wan(Path(d) / "wan")
    inputs = tiny_inputs()
    models = {}
    for mode in ("audio", "lora", "full"):
        base, _, _ = load_base(path)
        torch.manual_seed(0)
        m = MochaWan(base, MochaConfig(audio_dim=8))
        configure_training(m, mode, LoraSettings(rank=4, alpha=4))
        tokens = inputs[0].shape[0] * m.video_tokens(inputs[0].shape)
        ts = step_times(m, inputs, steps)
        med = statistics.median(ts)
        trained = sum(p.numel() for p in m.parameters() if p.requires_grad)
        print(f"  tiny {mode:>5}: {m.num_params() / 1e3:7.1f} k params ({trained / 1e3:6.1f} k trained) | "
              f"B=2 x 5x16x16 latents -> {tokens} video tokens/step | step {med * 1000:7.1f} ms "
              f"(median of {steps}) | {tokens / med:8.0f} tokens/s")
        models[mode] = m
    return models["full"], inputs


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


# ----- parameter counts and memory of the real sizes ------------------------------------------
def counts(size: str, lora_rank: int = 32, audio_dim: int = 768) -> dict:
    """Parameter counts of MoCha on Wan ``size`` (meta device: shapes only)."""
    from diffusers import WanTransformer3DModel

    with torch.device("meta"):
        base = WanTransformer3DModel(**WAN[size])
        m = MochaWan(base, MochaConfig(audio_dim=audio_dim))
    P = sum(p.numel() for p in m.parameters())
    added = sum(p.numel() for n, p in m.named_parameters() if is_added(n))
    pat = re.compile(LORA_TARGETS)
    lora = sum(lora_rank * (mod.in_features + mod.out_features) for n, mod in m.named_modules()
               if isinstance(mod, torch.nn.Linear) and pat.fullmatch(n))
    blk = sum(p.numel() for p in m.blocks[0].parameters())
    cfg = WAN[size]
    return {"P_base": P - added, "P_added": added, "P_lora": lora, "P_block": blk,
            "D": cfg["num_attention_heads"] * cfg["attention_head_dim"], "F": cfg["ffn_dim"],
            "layers": cfg["num_layers"]}


def memory(c: dict, mode: str, strategy: str, gpus: int, B: int, frames: int, h: int, w: int,
           text_len: int = 512) -> dict:
    """Per-GPU bytes (see FORMULA)."""
    P_all = c["P_base"] + c["P_added"] + (c["P_lora"] if mode == "lora" else 0)
    P_tr = {"audio": c["P_added"], "lora": c["P_added"] + c["P_lora"], "full": P_all}[mode]
    if strategy == "fsdp":
        # fp32 sharded weights of every unit; gradients exist for the whole flat parameter of a
        # unit that holds any trained tensor (frozen parts included); AdamW m, v for trained only
        state = (4 * P_all + 4 * P_all + 8 * P_tr) / gpus
        gathered = 2 * (2 + 2) * c["P_block"]  # 2 units (current + prefetched): bf16 params + bf16 grads
    else:  # DDP: frozen base replicated in bf16, trained fp32 + grads + AdamW + EMA replicated
        state = 2 * (P_all - P_tr) + (4 + 4 + 8 + 4) * P_tr
        gathered = 0
    L = 1 + (frames - 1) // 4
    N = L * (h // 16) * (w // 16)  # Wan VAE 8x spatial, patch 2
    D, F, nl = c["D"], c["F"], c["layers"]
    # activation checkpointing: each block's bf16 input kept, one block's activations live
    # during its recompute (attention without N x N scores: flash / memory-efficient SDPA)
    act = B * (nl * N * D * 2 + N * (48 * D + 4 * F) + text_len * D * 2 * 2)
    frozen = 5.7e9 * 2 + 127e6 * 2  # umT5-XXL encoder + Wan VAE in bf16, replicated
    return {"N": N, "state": state, "gathered": gathered, "act": act, "frozen": frozen,
            "total": state + gathered + act + frozen, "trained": P_tr}


FORMULA = """\
  per GPU = state + gathered + activations + frozen encoders, P_all = base + speech layers (+ LoRA),
  P_tr = trained parameters, G = 8 GPUs, bf16-mixed:
    FSDP FULL_SHARD: state = (4 P_all [fp32 weights] + 4 P_all [fp32 grads of every unit holding a trained
                     tensor] + 8 P_tr [AdamW m, v]) / G;  gathered = 2 units x (2 B + 2 B) x P_block (bf16
                     params + grads of the current and the prefetched block); no EMA under FSDP
    DDP:             state = 2 P_frozen [bf16 base] + 20 P_tr [fp32 weights, grads, AdamW m+v, EMA]
    activations    = B (layers x N x D x 2 B [checkpointed block inputs] + N (48 D + 4 F) B [one block
                     recomputed] + 2 x 512 x D x 2 B [text states]), N = video tokens
    frozen         = umT5-XXL encoder (5.7 B) + Wan VAE (127 M) in bf16 (0 with pre-encoded prompts/latents)"""


def print_memory():
    print("== Wan 2.1 + MoCha speech layers: parameters (meta device) ==")
    cs = {}
    for size in WAN:
        c = cs[size] = counts(size)
        print(f"  Wan {size:>4}: base {c['P_base'] / 1e9:6.3f} B, speech layers {c['P_added'] / 1e6:7.1f} M "
              f"({100 * c['P_added'] / c['P_base']:.1f} %), LoRA r=32 {c['P_lora'] / 1e6:6.1f} M, "
              f"{c['P_block'] / 1e6:6.1f} M per block (D={c['D']}, F={c['F']}, {c['layers']} blocks)")
    print("== per-GPU memory, 8 GPUs, bf16-mixed, activation checkpointing (computed) ==")
    print(FORMULA)
    shapes = [("49 f 256x256 (stage yamls), B=2", 2, 49, 256, 256), ("81 f 480x832 (Wan's native), B=1", 1, 81, 480, 832)]
    for label, B, f, h, w in shapes:
        print(f"  -- {label} --")
        for size, c in cs.items():
            for mode, strat in (("audio", "ddp"), ("lora", "ddp"), ("audio", "fsdp"), ("lora", "fsdp"), ("full", "fsdp")):
                m = memory(c, mode, strat, 8, B, f, h, w)
                print(f"  Wan {size:>4} {mode:>5} {strat:>4}: {m['N']:6d} tokens/sample | state {m['state'] / GiB:6.2f} "
                      f"+ gathered {m['gathered'] / GiB:5.2f} + act {m['act'] / GiB:6.2f} + umT5/VAE {m['frozen'] / GiB:5.2f} "
                      f"= {m['total'] / GiB:6.2f} GiB  (trained {m['trained'] / 1e6:8.1f} M)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch intra-op threads (1: fastest for the tiny model, and steady on a shared box)")
    args = ap.parse_args()
    reps = 3 if args.quick else 8
    torch.set_num_threads(args.threads or max(1, os.cpu_count() or 1))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU thread(s)")
    print("== training step of the tiny configuration (fp32, CPU) ==")
    model, inputs = bench_tiny(steps=reps * 3)
    on, off = window_overhead(model, inputs, reps)
    print(f"  speech-video window vs plain speech attention (tiny, full step): {on * 1000:.1f} ms vs "
          f"{off * 1000:.1f} ms, ratio {on / off:.3f}")
    print_memory()


if __name__ == "__main__":
    main()
