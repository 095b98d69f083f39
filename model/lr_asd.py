"""LR-ASD (Liao et al., "LR-ASD: Lightweight and Robust Network for Active Speaker Detection",
IJCV 2025; the extension of Light-ASD, CVPR 2023): is this face speaking, frame by frame.

Two light encoders and a small temporal back end, 1 M parameters in all:
- visual: 112 x 112 grayscale face crops at 25 fps, three blocks of split spatial (1 x k x k)
  and temporal (k x 1 x 1) 3-D convolutions with max-pooling between them, a spatial max
  at the end -> 128-d per frame;
- audio: 13 MFCC at 100 Hz (four steps per video frame), three blocks of split frequency
  (k x 1) and time (1 x k) 2-D convolutions, pooled in time to the video rate, averaged over
  frequency -> 128-d per frame;
- back end: the two embeddings concatenated and gated channel-wise (1x1 conv + BN + sigmoid),
  a forward and a backward GRU (64 each) gated the same way -> 128-d, and a linear head whose
  second logit is the published speaking score (>= 0: speaking).

Module and parameter names follow the published checkpoints (``model.visualEncoder.*``,
``model.audioEncoder.*``, ``model.fusion.*``, ``model.detector.*``, ``lossAV.FC``,
``lossV.FC``), so ``pretrain_AVA.model`` and ``finetuning_TalkSet.model`` load unchanged with
``torch.load(..., weights_only=True)``.

:func:`windowed_scores` is the published evaluation (``Columbia_test.py``): each track is cut
into consecutive windows of 1, 2, 3, 4, 5 and 6 s, every window is scored on its own, and the
six per-frame score sequences are averaged. Here the windows of every track and every duration
that have the same length run as one batch.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# Published normalisation of the grayscale crops (mean and std of the training faces, 0..1).
FACE_MEAN, FACE_STD = 0.4161, 0.1688
FACE_SIZE = 112
MFCC_PER_FRAME = 4  # 100 Hz MFCC steps per 25 fps video frame
# Window lengths of the published evaluation, in seconds (Columbia_test.py: durationSet).
PUBLISHED_WINDOWS_S = (1, 2, 3, 4, 5, 6)
VIDEO_RATE = 25  # frames per second the network was trained on


def _bn(ch: int, dims: int) -> nn.Module:
    # the published blocks use BN momentum 0.01 / eps 1e-3 (only eps matters at inference)
    return (nn.BatchNorm3d if dims == 3 else nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d)(ch, momentum=0.01, eps=0.001)


def _folded(conv: nn.Module, bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of ``bn(conv(x))`` as one convolution (inference: BN is affine)."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    w = conv.weight * scale.view(-1, *([1] * (conv.weight.dim() - 1)))
    return w.contiguous(), bn.bias - bn.running_mean * scale


class _ConvBNStack(nn.Module):
    """Four conv + BN + ReLU steps. In eval mode each BN is folded into its convolution (once,
    on first use), which saves a pass over every activation; training runs the plain layers."""

    _pairs = (("s_1", "s_norm_1"), ("s_2", "s_norm_2"), ("t_1", "t_norm_1"), ("t_2", "t_norm_2"))
    _conv = staticmethod(F.conv3d)

    def __init__(self):
        super().__init__()
        self._fused: list | None = None

    def train(self, mode: bool = True):
        self._fused = None  # weights may change
        return super().train(mode)

    def _apply(self, fn, *args, **kwargs):
        self._fused = None  # moved to another device or dtype
        return super()._apply(fn, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            for c, b in self._pairs:
                x = F.relu(getattr(self, b)(getattr(self, c)(x)))
            return x
        for step, _ in self.steps():
            x = step(x)
        return x

    def steps(self) -> list[tuple]:
        """(eval) The four fused conv + ReLU steps as ``(fn, temporal half-width)``: 0 for a
        step that works on each frame alone."""
        if self._fused is None:
            with torch.no_grad():
                self._fused = [(*_folded(getattr(self, c), getattr(self, b)), getattr(self, c)) for c, b in self._pairs]
        conv = self._conv
        return [((lambda x, w=w, b=bias, m=m: F.relu_(conv(x, w, b, m.stride, m.padding))),
                 m.padding[0] if conv is F.conv3d else 0) for w, bias, m in self._fused]


class VisualBlock(_ConvBNStack):
    """Spatial k1 x k1 then k2 x k2 convolutions (the first halving the size when ``down``),
    then temporal k1 then k2 convolutions; BN + ReLU after each."""

    def __init__(self, cin: int, cout: int, k1: int = 5, k2: int = 3, down: bool = False):
        super().__init__()
        s = (1, 2, 2) if down else (1, 1, 1)
        self.s_1 = nn.Conv3d(cin, cout // 2, (1, k1, k1), stride=s, padding=(0, k1 // 2, k1 // 2), bias=False)
        self.s_norm_1 = _bn(cout // 2, 3)
        self.s_2 = nn.Conv3d(cout // 2, cout, (1, k2, k2), padding=(0, k2 // 2, k2 // 2), bias=False)
        self.s_norm_2 = _bn(cout, 3)
        self.t_1 = nn.Conv3d(cout, cout, (k1, 1, 1), padding=(k1 // 2, 0, 0), bias=False)
        self.t_norm_1 = _bn(cout, 3)
        self.t_2 = nn.Conv3d(cout, cout, (k2, 1, 1), padding=(k2 // 2, 0, 0), bias=False)
        self.t_norm_2 = _bn(cout, 3)


class AudioBlock(_ConvBNStack):
    """Frequency k1 then k2 convolutions, then time k1 then k2 convolutions; BN + ReLU after each."""

    _pairs = (("m_1", "m_norm_1"), ("m_2", "m_norm_2"), ("t_1", "t_norm_1"), ("t_2", "t_norm_2"))
    _conv = staticmethod(F.conv2d)

    def __init__(self, cin: int, cout: int, k1: int = 5, k2: int = 3):
        super().__init__()
        self.m_1 = nn.Conv2d(cin, cout // 2, (k1, 1), padding=(k1 // 2, 0), bias=False)
        self.m_norm_1 = _bn(cout // 2, 2)
        self.m_2 = nn.Conv2d(cout // 2, cout, (k2, 1), padding=(k2 // 2, 0), bias=False)
        self.m_norm_2 = _bn(cout, 2)
        self.t_1 = nn.Conv2d(cout, cout, (1, k1), padding=(0, k1 // 2), bias=False)
        self.t_norm_1 = _bn(cout, 2)
        self.t_2 = nn.Conv2d(cout, cout, (1, k2), padding=(0, k2 // 2), bias=False)
        self.t_norm_2 = _bn(cout, 2)


class VisualEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.block1 = VisualBlock(1, 32, down=True)
        self.block2 = VisualBlock(32, 64)
        self.block3 = VisualBlock(64, 128)

    @staticmethod
    def _pool(x: torch.Tensor) -> torch.Tensor:
        return F.max_pool3d(x, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, T, 112, 112) normalised crops -> (B, T, 128)."""
        # channels-last: oneDNN's 3-D convolutions and pooling run 1.5-2.5x faster on the CPU
        x = x.contiguous(memory_format=torch.channels_last_3d)
        x = self._pool(self.block1(x))
        x = self._pool(self.block2(x))
        x = self.block3(x)  # (B, 128, T, 14, 14)
        return x.amax(dim=(3, 4)).transpose(1, 2)

    def forward_with_edges(self, x: torch.Tensor, starts: Sequence[int], ends: Sequence[int]):
        """(eval) :meth:`forward` of one sequence (1, 1, T, 112, 112), and what a window
        starting at each of ``starts`` (or ending at each of ``ends``) gives on its first (last)
        REACH frames when it is encoded alone, with its own zero padding.

        Only the temporal convolutions mix frames, so a window's outputs differ from the
        sequence's only within the reach of its ends. Layer by layer, the frames that differ
        are recomputed from their own earlier values and the sequence's activations beside
        them: ~4 frames of work per window end, where encoding a 2 x REACH span anew costs 18.
        Each window needs 2 x REACH frames, and ``starts`` + 2 x REACH and ``ends`` - 2 x REACH
        must lie inside ``x``, away from its own padding where that is not the sequence's.
        Returns (T, 128), (len(starts), REACH, 128) and (len(ends), REACH, 128)."""
        steps = self.block1.steps() + [(self._pool, 0)] + self.block2.steps() + [(self._pool, 0)] + self.block3.steps()
        a = x.contiguous(memory_format=torch.channels_last_3d)
        left = right = None  # (E, C, r, H, W): the differing frames next to each start / end
        r = 0
        for step, h in steps:
            if h == 0:
                a = step(a)
                left = step(left) if left is not None else None
                right = step(right) if right is not None else None
                continue
            if len(starts):
                beside = _frames(a, [p + r + k for p in starts for k in range(2 * h)], len(starts))
                inp = beside if left is None else torch.cat([left, beside], 2)
                left = step(inp.contiguous(memory_format=torch.channels_last_3d))[:, :, :r + h]
            if len(ends):
                beside = _frames(a, [q - r - 2 * h + k for q in ends for k in range(2 * h)], len(ends))
                inp = beside if right is None else torch.cat([beside, right], 2)
                right = step(inp.contiguous(memory_format=torch.channels_last_3d))[:, :, -(r + h):]
            a = step(a)
            r += h
        assert r == REACH, (r, REACH)

        def emb(t):
            return t.amax(dim=(3, 4)).transpose(1, 2) if t is not None else None

        return emb(a)[0], emb(left), emb(right)


def _frames(a: torch.Tensor, idx: list[int], groups: int) -> torch.Tensor:
    """Frames ``idx`` of (1, C, T, H, W) ``a`` as (groups, C, len(idx) // groups, H, W)."""
    sel = a[0].index_select(1, torch.as_tensor(idx, device=a.device))  # (C, n, H, W)
    C, n, H, W = sel.shape
    return sel.view(C, groups, n // groups, H, W).permute(1, 0, 2, 3, 4)


class AudioEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.block1 = AudioBlock(1, 32)
        self.block2 = AudioBlock(32, 64)
        self.block3 = AudioBlock(64, 128)

    @staticmethod
    def _pool(x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(x, (1, 3), stride=(1, 2), padding=(0, 1))  # halves time

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, 13, 4T) MFCC -> (B, T, 128)."""
        x = self._pool(self.block1(x))
        x = self._pool(self.block2(x))
        x = self.block3(x)  # (B, 128, 13, T)
        return x.mean(dim=2).transpose(1, 2)


class GatedFusion(nn.Module):
    """Concatenate two (B, T, C) streams and gate every channel by a sigmoid of a 1x1 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.attention = nn.Conv1d(channels, channels, kernel_size=1, bias=False)
        self.bn = _bn(channels, 1)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        x = torch.cat((a, b), 2).transpose(1, 2)  # (B, C, T)
        return (x * torch.sigmoid(self.bn(self.attention(x)))).transpose(1, 2)


class BiGRUDetector(nn.Module):
    """A forward and a separate backward GRU over the fused sequence, fused by a gate."""

    def __init__(self, channels: int = 256):
        super().__init__()
        h = channels // 4
        self.gru_forward = nn.GRU(channels, h, num_layers=1, batch_first=True)
        self.gru_backward = nn.GRU(channels, h, num_layers=1, batch_first=True)
        self.attention = GatedFusion(2 * h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fwd, _ = self.gru_forward(x)
        bwd, _ = self.gru_backward(torch.flip(x, dims=[1]))
        return self.attention(fwd, torch.flip(bwd, dims=[1]))


def _normalised(faces: torch.Tensor) -> torch.Tensor:
    return (faces.float() / 255.0 - FACE_MEAN) / FACE_STD


class ASDNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.visualEncoder = VisualEncoder()
        self.audioEncoder = AudioEncoder()
        self.fusion = GatedFusion(256)
        self.detector = BiGRUDetector(256)

    def embed_faces(self, faces: torch.Tensor) -> torch.Tensor:
        """(B, T, 112, 112) grayscale 0..255 -> (B, T, 128)."""
        return self.visualEncoder(_normalised(faces).unsqueeze(1))

    def embed_faces_with_edges(self, faces: torch.Tensor, starts: Sequence[int], ends: Sequence[int]):
        """(1, T, 112, 112) -> :meth:`VisualEncoder.forward_with_edges`."""
        return self.visualEncoder.forward_with_edges(_normalised(faces).unsqueeze(1), starts, ends)

    def embed_audio(self, mfcc: torch.Tensor) -> torch.Tensor:
        """(B, 4T, 13) MFCC -> (B, T, 128)."""
        return self.audioEncoder(mfcc.float().unsqueeze(1).transpose(2, 3))

    def backend(self, audio: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        return self.detector(self.fusion(audio, visual))  # (B, T, 128)


class ScoreHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.FC = nn.Linear(128, 2)


class LRASD(nn.Module):
    """The network plus the published heads: ``lossAV`` (audio-visual, the score used) and
    ``lossV`` (visual-only auxiliary head of training, loaded but unused)."""

    def __init__(self):
        super().__init__()
        self.model = ASDNet()
        self.lossAV = ScoreHead()
        self.lossV = ScoreHead()

    def forward(self, mfcc: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
        """(B, 4T, 13) MFCC and (B, T, 112, 112) crops -> (B, T) speaking logits."""
        a = self.model.embed_audio(mfcc)
        v = self.model.embed_faces(faces)
        n = min(a.shape[1], v.shape[1])
        x = self.model.backend(a[:, :n], v[:, :n])
        return self.lossAV.FC(x)[..., 1]

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device


def load_lr_asd(path: Union[str, Path], device: str = "cpu") -> LRASD:
    """The published checkpoint (a plain state dict of tensors), loaded without unpickling
    anything else; every key must match."""
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    net = LRASD()
    net.load_state_dict(state, strict=True)
    return net.eval().to(device)


def _windows(num_frames: int, seconds: int) -> list[tuple[int, int]]:
    """Consecutive windows of ``seconds`` (the last one shorter), in frames."""
    w = seconds * VIDEO_RATE
    return [(s, min(s + w, num_frames)) for s in range(0, num_frames, w)]


def usable_frames(num_frames: int, num_mfcc: int) -> int:
    """Frames with a complete set of audio steps (the published ``length``: the MFCC count
    floored to a multiple of four, in video frames, at most the frame count)."""
    return int(min(num_frames, num_mfcc // MFCC_PER_FRAME))


# Temporal reach of the encoders, in video frames: an output frame depends on the input frames
# this far on either side (visual: three blocks of a 5- and a 3-tap temporal convolution, 9
# frames; audio: 6 frames), so inside a window it differs from the whole-track output only
# within this distance of the window's ends, where the window's zero padding shows.
REACH = 9

_Span = tuple[int, int, int]  # (track, start frame, end frame)


class _Encoded:
    """Encoder outputs of input spans, computed in batches of equal-length spans."""

    def __init__(self, net: LRASD, faces, mfccs, max_batch_frames: int):
        self.net, self.faces, self.mfccs, self.max_batch = net, faces, mfccs, max_batch_frames
        self.out: dict[_Span, tuple[torch.Tensor, torch.Tensor]] = {}  # span -> (audio, visual) (L, 128)

    def run(self, spans: list[_Span], visual: bool = True) -> None:
        """Both encoders on each span (the audio one only, ``visual`` false: the visual
        output is then None)."""
        by_len: dict[int, list[_Span]] = {}
        for sp in dict.fromkeys(spans):
            if sp not in self.out:
                by_len.setdefault(sp[2] - sp[1], []).append(sp)
        device = self.net.device
        for length, items in by_len.items():
            per = max(1, self.max_batch // length)
            for k in range(0, len(items), per):
                chunk = items[k:k + per]
                a = torch.from_numpy(np.stack([self.mfccs[i][s * MFCC_PER_FRAME:e * MFCC_PER_FRAME]
                                               for i, s, e in chunk])).to(device)
                ea = self.net.model.embed_audio(a)
                ev = None
                if visual:
                    ev = self.net.model.embed_faces(torch.from_numpy(np.stack([self.faces[i][s:e] for i, s, e in chunk])).to(device))
                for j, sp in enumerate(chunk):
                    self.out[sp] = (ea[j], ev[j] if ev is not None else None)

    def run_track(self, i: int, lo: int, hi: int, starts: list[int], ends: list[int]) -> None:
        """Track ``i``'s frames [lo, hi) through both encoders, and the visual outputs next to
        window ``starts`` and ``ends`` (frame indices of the track) as the windows alone give
        them, under ("start", i, p) and ("end", i, q)."""
        device = self.net.device
        a = torch.from_numpy(np.ascontiguousarray(self.mfccs[i][lo * MFCC_PER_FRAME:hi * MFCC_PER_FRAME]))[None].to(device)
        v = torch.from_numpy(np.ascontiguousarray(self.faces[i][lo:hi]))[None].to(device)
        full, first, last = self.net.model.embed_faces_with_edges(v, [p - lo for p in starts], [q - lo for q in ends])
        self.out[(i, lo, hi)] = (self.net.model.embed_audio(a)[0], full)
        for k, p in enumerate(starts):
            self.out[("start", i, p)] = first[k]
        for k, q in enumerate(ends):
            self.out[("end", i, q)] = last[k]


def _window_embeddings(enc: _Encoded, i: int, s: int, e: int, n: int, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(audio, visual) embeddings of window [s, e) of track i as the window alone gives them:
    the whole-track outputs, with the REACH frames next to an inner window end replaced by what
    the window's own padding makes of them (audio: a 2 x REACH span that starts or ends there
    encoded alone; visual: :meth:`_Encoded.run_track`'s recomputation)."""
    if (i, s, e) in enc.out:
        return enc.out[(i, s, e)]
    parts_a, parts_v = [], []
    for c0 in range(s - s % chunk, e, chunk):  # the whole-track outputs come in chunks
        full_a, full_v = enc.out[("full", i, c0)]
        lo, hi = max(s, c0) - c0, min(e, c0 + chunk) - c0
        parts_a.append(full_a[lo:hi])
        parts_v.append(full_v[lo:hi])
    a, v = torch.cat(parts_a).clone(), torch.cat(parts_v).clone()
    if s > 0:
        za, _ = enc.out[(i, s, s + 2 * REACH)]
        a[:REACH], v[:REACH] = za[:REACH], enc.out[("start", i, s)]
    if e < n:
        za, _ = enc.out[(i, e - 2 * REACH, e)]
        a[-REACH:], v[-REACH:] = za[-REACH:], enc.out[("end", i, e)]
    return a, v


@torch.no_grad()
def windowed_scores(net: LRASD, faces: Sequence[np.ndarray], mfccs: Sequence[np.ndarray],
                    windows_s: Sequence[int] = PUBLISHED_WINDOWS_S, max_batch_frames: int = 2000,
                    shared_encoders: bool = True, per_window: bool = False):
    """Per-frame speaking scores of several tracks: the mean over ``windows_s`` of the scores
    of consecutive windows, each window scored on its own (the published evaluation).

    ``faces[i]``: (T_i, 112, 112) uint8 crops of track i; ``mfccs[i]``: (N_i, 13) MFCC of the
    same span. Returns one (T'_i,) float32 array per track, T'_i = :func:`usable_frames`.
    Spans of equal length (from any track and duration) run together, at most
    ``max_batch_frames`` frames per forward pass.

    With ``shared_encoders`` the encoders run once over the whole track instead of once per
    window and duration, and each inner window end (they fall on multiples of 25 frames, shared
    by all durations) recomputes only what its own zero padding changes: the audio encoder on a
    2 x REACH span there, the visual one layer by layer on the frames within reach
    (:meth:`VisualEncoder.forward_with_edges`). The result is the same, and the whole
    evaluation takes half the time it takes with 2 x REACH spans encoded anew (1000 frames on
    two CPU cores: 7.5 s against 15.5 s); the window ends add about a quarter to one visual pass
    over the track. The back end (fusion and GRUs) runs per window either way.

    With ``per_window`` the result is ``(means, by_duration)``, ``by_duration[d]`` the scores
    of the ``d``-second windows alone (one array per track).
    """
    lengths = [usable_frames(len(f), len(m)) for f, m in zip(faces, mfccs)]
    durations = list(dict.fromkeys(int(d) for d in windows_s))  # listed twice counts once, as published
    windows = [(i, s, e) for i, n in enumerate(lengths) for d in durations for s, e in _windows(n, d)]
    enc = _Encoded(net, faces, mfccs, max_batch_frames)
    # whole seconds, so every window start and end (on the 1 s grid) has the frames its
    # recomputation needs inside one chunk
    chunk = max(2 * VIDEO_RATE, max_batch_frames // VIDEO_RATE * VIDEO_RATE)
    if shared_encoders:
        spans, direct = [], []
        starts: dict[int, set[int]] = {i: set() for i in range(len(lengths))}
        ends: dict[int, set[int]] = {i: set() for i in range(len(lengths))}
        for i, s, e in windows:
            if e - s < 2 * REACH:  # a short last window: as cheap to encode on its own
                direct.append((i, s, e))
                continue
            if s > 0:
                spans.append((i, s, s + 2 * REACH))
                starts[i].add(s)
            if e < lengths[i]:
                spans.append((i, e - 2 * REACH, e))
                ends[i].add(e)
        enc.run(direct)
        enc.run(spans, visual=False)  # the audio encoder is cheap: its spans are encoded anew
        for i, n in enumerate(lengths):
            for c0 in range(0, n, chunk):  # whole-track outputs, chunked with REACH frames of context
                c1 = min(n, c0 + chunk)
                lo, hi = max(0, c0 - REACH), min(n, c1 + REACH)
                enc.run_track(i, lo, hi, sorted(p for p in starts[i] if c0 <= p < c1),
                              sorted(q for q in ends[i] if c0 < q <= c1))
                a, v = enc.out[(i, lo, hi)]
                enc.out[("full", i, c0)] = (a[c0 - lo:c1 - lo], v[c0 - lo:c1 - lo])
    else:
        enc.run(windows)
    per = {d: [np.zeros(n, np.float32) for n in lengths] for d in durations}
    duration_of = {}  # window -> its durations (two durations can give the same window)
    for d in durations:
        for i, n in enumerate(lengths):
            for s, e in _windows(n, d):
                duration_of.setdefault((i, s, e), []).append(d)
    by_len: dict[int, list[_Span]] = {}
    for w in dict.fromkeys(windows):
        by_len.setdefault(w[2] - w[1], []).append(w)
    for length, items in by_len.items():
        step = max(1, max_batch_frames // length)
        for k in range(0, len(items), step):
            chunk_w = items[k:k + step]
            emb = [_window_embeddings(enc, i, s, e, lengths[i], chunk) for i, s, e in chunk_w]
            x = net.model.backend(torch.stack([a for a, _ in emb]), torch.stack([v for _, v in emb]))
            out = net.lossAV.FC(x)[..., 1].float().cpu().numpy()
            for (i, s, e), row in zip(chunk_w, out):
                for d in duration_of[(i, s, e)]:
                    per[d][i][s:e] = row
    means = [np.mean([per[d][i] for d in durations], axis=0).astype(np.float32) if n else np.zeros(0, np.float32)
             for i, n in enumerate(lengths)]
    return (means, per) if per_window else means
