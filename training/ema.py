"""Exponential moving average of the trained parameters only.

The frozen base has no EMA to keep (it does not move), so the shadow holds one fp32 copy per
trained tensor: a few hundred MB for the speech layers and LoRA adapters, not a second copy of a
14 B base. Shadows are buffers, so they travel with ``.to(device)`` and in the state dict
(``ema.<name with dots as __>``).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable

import torch
from torch import nn


def _key(name: str) -> str:
    if "__" in name:
        raise ValueError(f"parameter name {name!r} contains '__', which the EMA keys reserve")
    return name.replace(".", "__")


class EMA(nn.Module):
    def __init__(self, named: Iterable[tuple[str, torch.Tensor]]):
        super().__init__()
        self.names: list[str] = []
        for n, p in named:
            self.register_buffer(_key(n), p.detach().clone().float())
            self.names.append(n)

    def shadow(self, name: str) -> torch.Tensor:
        return getattr(self, _key(name))

    @torch.no_grad()
    def update(self, params: dict[str, torch.Tensor], decay: float) -> None:
        for n in self.names:
            self.shadow(n).lerp_(params[n].detach().float(), 1.0 - decay)

    @torch.no_grad()
    def copy_from(self, params: dict[str, torch.Tensor], names: Iterable[str] | None = None) -> None:
        for n in (self.names if names is None else names):
            self.shadow(n).copy_(params[n].detach().float())

    @contextmanager
    def swapped_into(self, params: dict[str, torch.Tensor]):
        """The EMA values in place of ``params`` inside the block, the raw ones restored after."""
        saved = {n: params[n].detach().clone() for n in self.names}
        with torch.no_grad():
            for n in self.names:
                params[n].copy_(self.shadow(n).to(params[n].dtype))
        try:
            yield
        finally:
            with torch.no_grad():
                for n in self.names:
                    params[n].copy_(saved[n])
