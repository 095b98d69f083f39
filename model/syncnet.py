"""SyncNet v2 (Chung & Zisserman, "Out of time", 2016) as published with joonson/syncnet_python.

Two streams mapping 0.2 s of audio and 5 video frames to 1024-d embeddings whose Euclidean
distance is small when lips and sound are in sync:
- audio: MFCC (13 x 20: 13 cepstra, 100 Hz, 20 steps = 0.2 s), 2-D conv stack + 2 FC layers;
- video: 5 face crops 224 x 224 (3 channels, 0-255), 3-D conv stack + 2 FC layers.
Parameter names follow the published ``syncnet_v2.model`` state dict (``netcnnaud.*``,
``netfcaud.*``, ``netcnnlip.*``, ``netfclip.*``; Sequential indices include the pooling/ReLU
slots), so that checkpoint loads unchanged.
"""
from __future__ import annotations

from pathlib import Path
from typing import Union

import torch
from torch import nn

from common.weights import load_state_dict


def _conv2(cin, cout, k=(3, 3), s=(1, 1), p=(1, 1)):
    return [nn.Conv2d(cin, cout, kernel_size=k, stride=s, padding=p), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def _conv3(cin, cout, k, s=(1, 1, 1), p=(0, 0, 0)):
    return [nn.Conv3d(cin, cout, kernel_size=k, stride=s, padding=p), nn.BatchNorm3d(cout), nn.ReLU(inplace=True)]


def _fc(dim_out: int):
    return nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, dim_out))


class SyncNet(nn.Module):
    def __init__(self, embed_dim: int = 1024):
        super().__init__()
        # 13x20 -> 13x20 -> (pool 3x3 s(1,2)) 11x9 -> 3 convs -> (pool 3x3 s2) 5x4 -> (5,4) conv -> 1x1
        self.netcnnaud = nn.Sequential(
            *_conv2(1, 64), nn.MaxPool2d(kernel_size=(1, 1), stride=(1, 1)),
            *_conv2(64, 192), nn.MaxPool2d(kernel_size=(3, 3), stride=(1, 2)),
            *_conv2(192, 384),
            *_conv2(384, 256),
            *_conv2(256, 256), nn.MaxPool2d(kernel_size=(3, 3), stride=(2, 2)),
            *_conv2(256, 512, k=(5, 4), p=(0, 0)),
        )
        self.netfcaud = _fc(embed_dim)
        # 5x224x224 -> (5,7,7) s(1,2,2) 1x109 -> pool 54 -> (1,5,5) s2 p1 26 -> pool p1 13
        # -> 3 convs 13 -> pool 6 -> (1,6,6) conv -> 1x1x1
        self.netcnnlip = nn.Sequential(
            *_conv3(3, 96, (5, 7, 7), s=(1, 2, 2)), nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2)),
            *_conv3(96, 256, (1, 5, 5), s=(1, 2, 2), p=(0, 1, 1)),
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
            *_conv3(256, 256, (1, 3, 3), p=(0, 1, 1)),
            *_conv3(256, 256, (1, 3, 3), p=(0, 1, 1)),
            *_conv3(256, 256, (1, 3, 3), p=(0, 1, 1)), nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2)),
            *_conv3(256, 512, (1, 6, 6)),
        )
        self.netfclip = _fc(embed_dim)

    def forward_aud(self, mfcc: torch.Tensor) -> torch.Tensor:
        """(B, 1, 13, 20) MFCC -> (B, embed_dim)."""
        x = self.netcnnaud(mfcc)
        return self.netfcaud(x.reshape(x.shape[0], -1))

    def forward_lip(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, 3, 5, 224, 224) face crops, 0-255 -> (B, embed_dim)."""
        x = self.netcnnlip(frames)
        return self.netfclip(x.reshape(x.shape[0], -1))

    def forward(self, mfcc: torch.Tensor, frames: torch.Tensor):
        return self.forward_aud(mfcc), self.forward_lip(frames)


def _strip_prefix(state: dict) -> dict:
    out = {}
    for k, v in state.items():
        for pre in ("__S__.", "module.", "S."):
            if k.startswith(pre):
                k = k[len(pre):]
        out[k] = v
    return out


def load_syncnet(path_or_state: Union[str, Path, dict], device: str = "cpu") -> SyncNet:
    """Build SyncNet and load a state dict in the published layout (file path or dict).

    A file loads without running pickled code (:func:`common.weights.load_state_dict`: the
    published ``syncnet_v2.model`` is a plain state dict in torch's pre-1.6 format, or a
    ``.safetensors`` conversion of it); a file that holds other objects raises
    :class:`common.weights.UnsafeWeights`. Missing or mis-shaped parameters raise a ``ValueError``
    naming them, so a wrong checkpoint fails loudly instead of scoring with random weights.
    """
    if isinstance(path_or_state, dict):
        state = path_or_state
    else:
        p = Path(path_or_state)
        if not p.is_file():
            raise FileNotFoundError(f"SyncNet checkpoint not found at {p} (set visual.sync.syncnet_checkpoint)")
        state = load_state_dict(p, map_location=device)
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"not a SyncNet v2 state dict: a {type(state).__name__}")
    state = _strip_prefix(state)
    net = SyncNet()
    own = net.state_dict()
    # Checkpoints saved before PyTorch 0.4.1 (the published one among them) have no BatchNorm
    # ``num_batches_tracked`` counters; they are unused in eval mode.
    needed = [k for k in own if not k.endswith("num_batches_tracked")]
    missing = [k for k in needed if k not in state]
    bad = [k for k in needed if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or bad:
        raise ValueError(f"not a SyncNet v2 state dict: missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                         f"wrong shapes {bad[:5]}")
    net.load_state_dict({k: state[k] for k in own if k in state}, strict=False)
    return net.eval().to(device)
