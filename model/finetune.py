"""What a run trains of the MoCha model: the training modes.

- ``audio``: the speech layers only (audio projector, each block's speech norm + attention);
  the base stays frozen, exactly the pretrained text-to-video model.
- ``lora``: the speech layers plus LoRA adapters (``peft``) on the base's attention
  projections and FFN; the adapters' B matrices start at zero, so step 0 is still the base.
- ``full``: every parameter (with FSDP and activation checkpointing at scale).

The frozen part never enters a checkpoint; :func:`configure_training` returns the names of the
parameters that do.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

from torch import nn

from .mocha_wan import is_added

TrainMode = Literal["audio", "lora", "full"]
TRAIN_MODES = ("audio", "lora", "full")

# The base's self- and text-attention projections and both FFN linears in every block
# (diffusers' names); the speech layers are trained in full and never get adapters.
LORA_TARGETS = r"blocks\.\d+\.(attn1|attn2)\.(to_q|to_k|to_v|to_out\.0)|blocks\.\d+\.ffn\.net\.(0\.proj|2)"


@dataclass
class LoraSettings:
    # rank 32 on every attention and FFN linear of Wan 1.3B is 44 M parameters (3.1 % of the
    # base): enough to adapt a pretrained base to a new domain without forgetting it
    rank: int = 32
    # alpha = rank keeps the adapter's scale (alpha / rank) at 1 whatever the rank
    alpha: float = 32.0
    # adapter dropout draws from the global RNG, which a resumed run does not restore: 0 keeps
    # resumption exact
    dropout: float = 0.0
    targets: str = LORA_TARGETS

    def to_dict(self) -> dict:
        return asdict(self)


def add_lora(model: nn.Module, lora: LoraSettings) -> None:
    from peft import LoraConfig, inject_adapter_in_model

    cfg = LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                     target_modules=lora.targets, init_lora_weights=True)
    inject_adapter_in_model(cfg, model)


def configure_training(model: nn.Module, mode: str, lora: LoraSettings | None = None) -> list[str]:
    """Set ``requires_grad`` for ``mode`` (adding LoRA adapters for ``lora``); trained names."""
    if mode not in TRAIN_MODES:
        raise ValueError(f"unknown train_mode {mode!r}; choose from {TRAIN_MODES}")
    if mode == "lora":
        add_lora(model, lora or LoraSettings())
    names = []
    for n, p in model.named_parameters():
        train = mode == "full" or is_added(n) or (mode == "lora" and ".lora_" in n)
        p.requires_grad_(train)
        if train:
            # master weights in fp32, whatever dtype a frozen base was loaded in
            p.data = p.data.float()
            names.append(n)
    return names
