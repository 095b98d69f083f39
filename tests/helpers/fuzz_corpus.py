"""A seeded corpus of hostile media inputs, the strange files a crawl holds.

From a few small, well-formed sources (synthetic talking clips made here, optionally a real clip)
it derives: truncations at many offsets; random byte flips in headers and in payloads; zeroed and
overwritten blocks; MP4 box edits (zero, huge and negative durations, timestamps and frame rates,
giant declared frame sizes, rotation matrices); YUV4MPEG streams with hostile headers (giant,
zero or odd sizes, zero and extreme frame rates, interlacing, 4:4:4 / 10-bit / grey); real
encodes in odd pixel formats (10-bit, 4:4:4, 4:2:2, RGB, palette, 16-bit), interlaced video,
variable frame rates, negative and repeated timestamps, huge gaps, extreme and tiny frame rates,
many streams, many audio channels, odd sample rates; and containers under a wrong extension,
archives, images, web pages and noise named like videos.

``build_corpus(folder, size, seed)`` writes at least ``size`` inputs (the same bytes for the same
seed and size) and returns them; the good sources they come from are returned apart.
"""
from __future__ import annotations

import gzip
import io
import math
import struct
import zipfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator, Optional

import av
import numpy as np

from common.synth import draw_character, synth_speech


@dataclass
class FuzzInput:
    path: Path
    kind: str  # family of the mutation, e.g. "truncate", "y4m_header", "pix_fmt"
    detail: str


@dataclass
class Corpus:
    good: list[Path]  # the well-formed sources (their curation must not change)
    inputs: list[FuzzInput]  # the hostile ones


# ---------------------------------------------------------------------------- well-formed media


def _frames(n: int, w: int, h: int, seed: int, face: bool = True) -> Iterator[np.ndarray]:
    """Each seed its own picture: background, a bright block somewhere, the character's place."""
    rng = np.random.default_rng(seed)
    base = np.clip(rng.integers(40, 200, size=3)[None, None] + rng.integers(0, 30, size=(h, w, 1)), 0, 255).astype(np.uint8)
    bx, by = int(rng.integers(0, max(1, w - w // 4))), int(rng.integers(0, max(1, h - h // 4)))
    base[by:by + h // 4, bx:bx + w // 4] = rng.integers(0, 256, size=3)
    cx0 = int(w * rng.uniform(0.3, 0.7))
    for k in range(n):
        f = base.copy()
        if face:
            draw_character(f, cx0 + int(3 * math.sin(k / 5)), int(h * 0.45), 0.5 + 0.5 * math.sin(k / 2), scale=h / 360)
        else:
            f = np.roll(f, k, axis=1)
        yield f


def encode(path: Path, *, container: Optional[str] = None, vcodec: str = "libx264", pix_fmt: str = "yuv420p",
           size: tuple[int, int] = (96, 72), seconds: float = 2.4, fps: float = 25, vopts: Optional[dict] = None,
           acodec: Optional[str] = "aac", arate: int = 16000, alayout: str = "mono", audio_streams: int = 1,
           video_streams: int = 1, pts: Optional[list[int]] = None, time_base: Optional[Fraction] = None,
           seed: int = 0, face: bool = True, opts: Optional[dict] = None, mux_pts: Optional[list[int]] = None) -> Path:
    """A small clip: a cartoon talking character over noise, speech-like audio. ``pts`` (in
    ``time_base``) replaces the regular frame times (variable rates, odd timestamps);
    ``mux_pts`` rewrites the timestamps of the encoded packets of an intra-only codec, for times
    an encoder refuses (repeated ones)."""
    w, h = size
    n = len(pts) if pts is not None else max(1, int(round(seconds * fps)))
    rate = Fraction(fps).limit_denominator(1000) if fps >= 1 else Fraction(fps).limit_denominator(1000)
    with av.open(str(path), mode="w", format=container, options=opts or {}) as c:
        vs = []
        for _ in range(video_streams):
            v = c.add_stream(vcodec, rate=rate if fps >= 1 else Fraction(1))
            v.width, v.height, v.pix_fmt = w, h, pix_fmt
            o = {"x264-params": "log-level=error"} if vcodec.startswith("libx264") else {}
            o.update(vopts or {})
            v.options = o
            if time_base is not None:
                v.codec_context.time_base = time_base
                v.time_base = time_base
            vs.append(v)
        ast = []
        if acodec:
            for _ in range(audio_streams):
                a = c.add_stream(acodec, rate=arate)
                a.layout = alayout
                ast.append(a)
        sent = [0]

        def mux(pkt):
            if mux_pts is not None and pkt.stream.type == "video":
                pkt.pts = pkt.dts = mux_pts[min(sent[0], len(mux_pts) - 1)]
                sent[0] += 1
            c.mux(pkt)

        for k, img in enumerate(_frames(n, w, h, seed, face)):
            for v in vs:
                fr = av.VideoFrame.from_ndarray(img, format="rgb24")
                if fr.format.name != pix_fmt:
                    fr = fr.reformat(format=pix_fmt)
                fr.pts = pts[k] if pts is not None else k
                if time_base is not None:
                    fr.time_base = time_base
                for pkt in v.encode(fr):
                    mux(pkt)
        for v in vs:
            for pkt in v.encode(None):
                mux(pkt)
        if pts is not None and time_base is not None:
            dur = (max(pts) - min(pts)) * float(time_base) + 0.04
        else:
            dur = n / float(fps) + 0.04
        for i, a in enumerate(ast):
            _write_audio(c, a, min(dur, 30.0), arate, alayout, seed + i)
    return path


def _write_audio(c, a, seconds: float, rate: int, layout: str, seed: int) -> None:
    pcm = synth_speech(seconds, seed=seed)  # 16 kHz mono
    if rate != 16000:
        t = np.arange(int(seconds * rate)) / rate
        pcm = np.interp(t, np.arange(len(pcm)) / 16000, pcm).astype(np.float32)
    channels = av.AudioLayout(layout).nb_channels
    fmt = a.codec_context.codec.audio_formats[0].name if a.codec_context.codec.audio_formats else "s16"
    step = a.codec_context.frame_size or 1024
    for i in range(0, len(pcm), step):
        chunk = pcm[i:i + step]
        if len(chunk) < step and a.codec_context.frame_size:
            chunk = np.pad(chunk, (0, step - len(chunk)))
        multi = np.repeat(chunk[None], channels, axis=0) * np.linspace(1.0, 0.5, channels)[:, None]
        arr = _audio_array(multi.astype(np.float32), fmt)
        fr = av.AudioFrame.from_ndarray(arr, format=fmt, layout=layout)
        fr.sample_rate, fr.pts = rate, i
        for pkt in a.encode(fr):
            c.mux(pkt)
    for pkt in a.encode(None):
        c.mux(pkt)


def _audio_array(x: np.ndarray, fmt: str) -> np.ndarray:
    planar = fmt.endswith("p")
    base = fmt.rstrip("p")
    if base == "s16":
        x = (np.clip(x, -1, 1) * 32767).astype(np.int16)
    elif base == "s32":
        x = (np.clip(x, -1, 1) * 2147483647).astype(np.int32)
    elif base == "dbl":
        x = x.astype(np.float64)
    return np.ascontiguousarray(x if planar else x.T.reshape(1, -1))


def make_bases(folder: Path) -> dict[str, Path]:
    """The well-formed sources the corpus derives from (short, small, fast to curate)."""
    folder.mkdir(parents=True, exist_ok=True)
    return {
        # moov at the front, so truncations keep a readable header
        "talk_mp4": encode(folder / "talk.mp4", seed=1, size=(160, 120), opts={"movflags": "+faststart"}),
        "talk_mkv": encode(folder / "talk.mkv", seed=2, size=(176, 132), acodec="pcm_s16le", arate=44100,
                           alayout="stereo", seconds=2.6),
    }


# ---------------------------------------------------------------------------- MP4 boxes

_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts", b"dinf", b"udta", b"mvex"}


def mp4_boxes(data: bytes, start: int = 0, end: Optional[int] = None, path: tuple = ()) -> Iterator[tuple[tuple, int, int]]:
    """(box path, offset of the box, size) for every box, recursing into containers."""
    end = len(data) if end is None else end
    i = start
    while i + 8 <= end:
        size, typ = struct.unpack(">I4s", data[i:i + 8])
        hdr = 8
        if size == 1:
            size, hdr = struct.unpack(">Q", data[i + 8:i + 16])[0], 16
        elif size == 0:
            size = end - i
        if size < hdr or i + size > end:
            return
        p = path + (typ,)
        yield p, i, size
        if typ in _CONTAINERS:
            yield from mp4_boxes(data, i + hdr, i + size, p)
        elif typ == b"stsd":
            yield from mp4_boxes(data, i + 16, i + size, p)
        i += size


def find_box(data: bytes, *names: bytes) -> list[int]:
    want = tuple(names)
    return [off for p, off, _ in mp4_boxes(data) if p[-len(want):] == want]


def patch(data: bytes, off: int, fmt: str, value) -> bytes:
    b = bytearray(data)
    struct.pack_into(fmt, b, off, value)
    return bytes(b)


def _full_box_v(data: bytes, off: int) -> int:
    return data[off + 8]


def mp4_edits(data: bytes) -> list[tuple[str, bytes]]:
    """Edited copies of an MP4 (moov at the front): (what, bytes)."""
    out = []
    (mvhd,) = find_box(data, b"mvhd")[:1] or (None,)
    if mvhd is not None and _full_box_v(data, mvhd) == 0:
        out += [("mvhd duration 0", patch(data, mvhd + 24, ">I", 0)),
                ("mvhd duration max", patch(data, mvhd + 24, ">I", 0xFFFFFFFF)),
                ("mvhd timescale 0", patch(data, mvhd + 20, ">I", 0)),
                ("mvhd timescale 1", patch(data, mvhd + 20, ">I", 1))]
    for k, mdhd in enumerate(find_box(data, b"mdhd")):
        if _full_box_v(data, mdhd) == 0:
            out += [(f"mdhd[{k}] duration 0", patch(data, mdhd + 24, ">I", 0)),
                    (f"mdhd[{k}] timescale 1", patch(data, mdhd + 20, ">I", 1)),
                    (f"mdhd[{k}] timescale max", patch(data, mdhd + 20, ">I", 0xFFFFFFFF)),
                    (f"mdhd[{k}] timescale 0", patch(data, mdhd + 20, ">I", 0))]
    for k, stts in enumerate(find_box(data, b"stts")[:1]):
        if struct.unpack(">I", data[stts + 12:stts + 16])[0] >= 1:
            out += [("stts delta 0 (zero frame durations)", patch(data, stts + 20, ">I", 0)),
                    ("stts delta 1 (extreme frame rate)", patch(data, stts + 20, ">I", 1)),
                    ("stts delta 2^31 (huge timestamps)", patch(data, stts + 20, ">I", 0x80000000)),
                    ("stts count max", patch(data, stts + 16, ">I", 0xFFFFFFFF))]
    for k, tkhd in enumerate(find_box(data, b"tkhd")[:1]):
        m = tkhd + (48 if _full_box_v(data, tkhd) == 0 else 60)
        for deg, (a, b, c, d) in {90: (0, 1, -1, 0), 180: (-1, 0, 0, -1), 270: (0, -1, 1, 0)}.items():
            x = bytearray(data)
            struct.pack_into(">9i", x, m, a << 16, b << 16, 0, c << 16, d << 16, 0, 0, 0, 1 << 30)
            out.append((f"tkhd rotation {deg}", bytes(x)))
        out += [("tkhd size 65535x65535", patch(patch(data, m + 36, ">I", 0xFFFF0000), m + 40, ">I", 0xFFFF0000))]
    for entry in (b"avc1", b"mp4v", b"hvc1"):
        for off in find_box(data, b"stsd", entry)[:1]:
            out += [(f"{entry.decode()} size 30000x30000", patch(patch(data, off + 32, ">H", 30000), off + 34, ">H", 30000)),
                    (f"{entry.decode()} size 0x0", patch(patch(data, off + 32, ">H", 0), off + 34, ">H", 0)),
                    (f"{entry.decode()} size 65535x2", patch(patch(data, off + 32, ">H", 65535), off + 34, ">H", 2))]
    for off in find_box(data, b"ctts")[:1]:
        n = struct.unpack(">I", data[off + 12:off + 16])[0]
        x = bytearray(data)
        x[off + 8] = 1  # version 1: signed offsets
        for k in range(min(n, 64)):
            struct.pack_into(">i", x, off + 16 + 8 * k + 4, -100000 * (k + 1))
        out.append(("ctts negative offsets (backwards timestamps)", bytes(x)))
    for off in find_box(data, b"elst")[:1]:
        if _full_box_v(data, off) == 0:
            out += [("elst media_time -1", patch(data, off + 20, ">i", -1)),
                    ("elst media_time huge", patch(data, off + 20, ">i", 0x7FFFFFF0)),
                    ("elst duration 0", patch(data, off + 16, ">I", 0))]
    return out


# ---------------------------------------------------------------------------- YUV4MPEG


def y4m(header: str, frames: int = 3, frame_bytes: Optional[int] = None, seed: int = 0) -> bytes:
    """A YUV4MPEG2 stream: a text header (sizes, rate, interlacing, colour space) and frames of
    noise; ``frame_bytes`` overrides the payload size (a lie about the declared frame)."""
    rng = np.random.default_rng(seed)
    fields = dict(t[0:1] and (t[0], t[1:]) for t in header.split())
    w, h = int(fields.get("W", "16")), int(fields.get("H", "16"))
    cs = fields.get("C", "420")
    per = {"mono": 1.0, "444": 3.0, "422": 2.0}.get(cs.split("p")[0], 1.5) * (2 if "p10" in cs or "p16" in cs else 1)
    n = frame_bytes if frame_bytes is not None else max(0, int(abs(w) * abs(h) * per))
    n = min(n, 1 << 20)
    body = b"".join(b"FRAME\n" + rng.integers(0, 256, n, dtype=np.uint8).tobytes() for _ in range(frames))
    return f"YUV4MPEG2 {header}\n".encode() + body


_Y4M_HEADERS = [
    "W65535 H65535 F25:1 Ip A1:1 C420jpeg",
    "W100000 H2 F25:1 Ip C420jpeg",
    "W0 H0 F25:1 Ip C420jpeg",
    "W-64 H48 F25:1 Ip C420jpeg",
    "W64 H48 F0:0 Ip C420jpeg",
    "W64 H48 F1000000:1 Ip C420jpeg",
    "W64 H48 F1:1000 Ip C420jpeg",
    "W64 H48 F25:0 Ip C420jpeg",
    "W64 H48 F25:1 It C420jpeg",
    "W64 H48 F25:1 Ib C420jpeg",
    "W64 H48 F25:1 Im C420jpeg",
    "W64 H48 F25:1 Ip C444",
    "W64 H48 F25:1 Ip C422",
    "W64 H48 F25:1 Ip Cmono",
    "W64 H48 F25:1 Ip C420p10",
    "W64 H48 F25:1 Ip C444p16",
    "W63 H47 F25:1 Ip C420jpeg",
    "W64 H48 F25:1 Ip A0:0 C420jpeg",
    "W64 H48 F25:1 Ip Cbogus",
    "W64 H48 F30000:1001 Ip XYSCSS=420JPEG C420jpeg",
]


# ---------------------------------------------------------------------------- odd encodes


# Families of well-formed encodes (odd, but valid files): each decodes, none is an error row.
ODD_ENCODE_KINDS = frozenset({"pix_fmt", "interlaced", "timestamps", "frame_rate", "streams", "channels"})


def _odd_encodes(folder: Path, seed: int) -> Iterator[tuple[str, str, Callable[[Path], Path]]]:
    """(kind, detail, maker) of real encodes that exercise decoders and formats, each of its own
    content (a corpus of one picture in many formats would be one video and its near copies)."""
    seeds = iter(range(100 + 1000 * seed, 1 << 30))

    def e(p: Path, **kw) -> Path:
        kw.setdefault("seed", next(seeds))
        return encode(p, **kw)

    yield "pix_fmt", "h264 10-bit 4:2:0", lambda p: e(p, pix_fmt="yuv420p10le", vopts={"profile": "high10"})
    yield "pix_fmt", "h264 4:4:4", lambda p: e(p, pix_fmt="yuv444p", vopts={"profile": "high444"})
    yield "pix_fmt", "h264 4:2:2 10-bit", lambda p: e(p, pix_fmt="yuv422p10le", container="matroska")
    yield "pix_fmt", "h264 RGB (libx264rgb)", lambda p: e(p, vcodec="libx264rgb", pix_fmt="rgb24", container="matroska")
    yield "pix_fmt", "hevc 10-bit 4:4:4", lambda p: e(p, vcodec="libx265", pix_fmt="yuv444p10le",
                                                      vopts={"x265-params": "log-level=error"}, container="matroska")
    yield "pix_fmt", "ffv1 16-bit 4:2:0", lambda p: e(p, vcodec="ffv1", pix_fmt="yuv420p16le", container="matroska")
    yield "pix_fmt", "ffv1 BGRA", lambda p: e(p, vcodec="ffv1", pix_fmt="bgra", container="matroska", acodec="flac")
    yield "pix_fmt", "png rgb48 in mov", lambda p: e(p, vcodec="png", pix_fmt="rgb48be", container="mov", seconds=2.2,
                                                     acodec="pcm_s16le")
    yield "pix_fmt", "png grey+alpha 16-bit in mov", lambda p: e(p, vcodec="png", pix_fmt="ya16be", container="mov", seconds=2.2,
                                                                 acodec="pcm_s16le")
    yield "pix_fmt", "mjpeg 4:4:4 full range", lambda p: e(p, vcodec="mjpeg", pix_fmt="yuvj444p", container="avi", acodec="pcm_s16le")
    yield "pix_fmt", "gif palette, no audio", lambda p: e(p, vcodec="gif", pix_fmt="rgb8", container="gif", acodec=None)
    yield "pix_fmt", "utvideo gbrp in avi", lambda p: e(p, vcodec="utvideo", pix_fmt="gbrp", container="avi", acodec="pcm_s16le")
    yield "pix_fmt", "prores 4:2:2 10-bit", lambda p: e(p, vcodec="prores_ks", pix_fmt="yuv422p10le", container="mov",
                                                        acodec="pcm_s16le")
    yield "pix_fmt", "vp9 4:4:4 in webm", lambda p: e(p, vcodec="libvpx-vp9", pix_fmt="yuv444p", container="webm",
                                                      acodec="libopus", arate=48000, vopts={"deadline": "realtime", "cpu-used": "8"})
    yield "pix_fmt", "av1 10-bit", lambda p: _quiet_svt() or e(p, vcodec="libsvtav1", pix_fmt="yuv420p10le", container="matroska",
                                               size=(96, 64), vopts={"preset": "12"})
    yield "pix_fmt", "qtrle rgb24 in mov", lambda p: e(p, vcodec="qtrle", pix_fmt="rgb24", container="mov", acodec="pcm_s16le")
    yield "pix_fmt", "rawvideo gray in nut", lambda p: e(p, vcodec="rawvideo", pix_fmt="gray", container="nut", acodec="pcm_s16le")
    yield "pix_fmt", "odd size 97x71 yuv444", lambda p: e(p, size=(97, 71), pix_fmt="yuv444p", vopts={"profile": "high444"})
    yield "pix_fmt", "tiny 8x8 frame", lambda p: e(p, size=(8, 8), container="matroska")
    yield "interlaced", "h264 interlaced tff", lambda p: e(p, size=(96, 72), vopts={"x264-params": "log-level=error:interlaced=1:tff=1"})
    yield "interlaced", "mpeg2 interlaced", lambda p: e(p, vcodec="mpeg2video", container="mpegts", acodec="mp2",
                                                        vopts={"flags": "+ildct+ilme", "top": "1"})
    yield "interlaced", "mpeg4 part 2 interlaced", lambda p: e(p, vcodec="mpeg4", container="avi", acodec="libmp3lame",
                                                               arate=22050, vopts={"flags": "+ildct+ilme"})
    tb = Fraction(1, 1000)
    rng = np.random.default_rng(seed)
    vfr = np.cumsum(rng.integers(10, 120, size=60)).tolist()
    yield "timestamps", "VFR 10-120 ms steps", lambda p: e(p, container="matroska", pts=[0] + vfr, time_base=tb)
    yield "timestamps", "negative start (-5 s)", lambda p: e(p, container="matroska", pts=[-5000 + 40 * k for k in range(80)],
                                                            time_base=tb, opts={"avoid_negative_ts": "disabled"})
    yield "timestamps", "huge gap (40 s pause)", lambda p: e(p, container="matroska",
                                                             pts=[40 * k for k in range(30)] + [40000 + 40 * k for k in range(30)],
                                                             time_base=tb)
    yield "timestamps", "start at 1e6 s", lambda p: e(p, container="matroska", pts=[10**9 + 40 * k for k in range(70)], time_base=tb)
    yield "timestamps", "repeated timestamps", lambda p: e(p, vcodec="mjpeg", pix_fmt="yuvj420p", container="matroska",
                                                           mux_pts=[40 * (k // 3) for k in range(75)], time_base=tb,
                                                           pts=[40 * k for k in range(75)], acodec="pcm_s16le")
    yield "frame_rate", "240 fps", lambda p: e(p, fps=240, seconds=2.2, size=(64, 48))
    yield "frame_rate", "1000 fps mjpeg", lambda p: e(p, vcodec="mjpeg", pix_fmt="yuvj420p", fps=1000, seconds=0.6, container="matroska",
                                                      acodec="pcm_s16le", size=(48, 32))
    yield "frame_rate", "0.2 fps (a frame every 5 s)", lambda p: e(p, fps=0.2, seconds=15, container="matroska", time_base=Fraction(1, 1),
                                                                   pts=[0, 5, 10])
    yield "frame_rate", "1 fps", lambda p: e(p, fps=1, seconds=4, container="matroska")
    yield "frame_rate", "ntsc 30000/1001", lambda p: e(p, fps=30000 / 1001, seconds=2.2)
    yield "frame_rate", "one frame only", lambda p: e(p, seconds=0.04, container="matroska")
    yield "streams", "12 audio streams", lambda p: e(p, container="matroska", acodec="pcm_s16le", audio_streams=12)
    yield "streams", "5 video streams", lambda p: e(p, container="matroska", video_streams=5, size=(64, 48))
    yield "streams", "video without audio", lambda p: e(p, acodec=None)
    yield "streams", "audio 20 s, video 2 s", lambda p: e(p, container="matroska", acodec="pcm_s16le", seconds=2.2,
                                                          pts=[40 * k for k in range(55)] + [20000], time_base=tb)
    yield "channels", "7.1 pcm", lambda p: e(p, container="matroska", acodec="pcm_s16le", alayout="7.1", arate=48000)
    yield "channels", "16 channels pcm", lambda p: e(p, container="matroska", acodec="pcm_s16le", alayout="hexadecagonal")
    yield "channels", "24 channels (22.2) pcm", lambda p: e(p, container="matroska", acodec="pcm_s16le", alayout="22.2")
    yield "channels", "5.1 aac", lambda p: e(p, alayout="5.1", arate=48000)
    yield "channels", "8 kHz mono", lambda p: e(p, container="matroska", acodec="pcm_s16le", arate=8000)
    yield "channels", "192 kHz stereo", lambda p: e(p, container="matroska", acodec="pcm_s16le", arate=192000, alayout="stereo")
    yield "channels", "opus 48 kHz 6 ch", lambda p: e(p, container="matroska", acodec="libopus", arate=48000, alayout="5.1")


def _quiet_svt() -> None:
    import os

    os.environ["SVT_LOG"] = "1"  # SVT-AV1 prints its whole configuration to stderr otherwise


# ---------------------------------------------------------------------------- the corpus


def _flip(data: bytes, rng, lo: int, hi: int, n: int) -> bytes:
    b = bytearray(data)
    hi = max(lo + 1, min(hi, len(b)))
    for off in rng.integers(lo, hi, size=n):
        b[int(off)] ^= int(rng.integers(1, 256))
    return bytes(b)


def _mdat_range(data: bytes) -> tuple[int, int]:
    for p, off, size in mp4_boxes(data):
        if p == (b"mdat",):
            return off + 8, off + size
    return len(data) // 4, len(data)


def _moov_range(data: bytes) -> tuple[int, int]:
    for p, off, size in mp4_boxes(data):
        if p == (b"moov",):
            return off, off + size
    return 0, min(len(data), 4096)


def build_corpus(folder: Path, size: int = 200, seed: int = 0, real: Optional[list[Path]] = None) -> Corpus:
    """Write at least ``size`` hostile inputs under ``folder/fuzz`` from the bases written under
    ``folder/aa_good`` (their URIs sort first, so a copy never wins over its original by name) and
    the ``real`` files. Families scale with ``size``; the same seed and size give the same bytes."""
    rng = np.random.default_rng(seed)
    good_dir, fuzz = folder / "aa_good", folder / "fuzz"
    fuzz.mkdir(parents=True, exist_ok=True)
    bases = make_bases(good_dir)
    good = list(bases.values())
    real = list(real or [])
    for r in real:
        dst = good_dir / r.name
        dst.write_bytes(r.read_bytes())
        good.append(dst)
    inputs: list[FuzzInput] = []

    def put(kind: str, detail: str, data: bytes, ext: str) -> None:
        p = fuzz / f"{len(inputs):04d}_{kind}{ext}"
        p.write_bytes(data)
        inputs.append(FuzzInput(p, kind, detail))

    def made(kind: str, detail: str, maker: Callable[[Path], Path], ext: str) -> None:
        p = fuzz / f"{len(inputs):04d}_{kind}{ext}"
        try:
            maker(p)
        except (av.FFmpegError, ValueError, TypeError, OSError) as err:  # this FFmpeg build cannot write it
            p.write_bytes(b"")
            detail = f"{detail} (could not be written: {type(err).__name__}; left empty)"
        inputs.append(FuzzInput(p, kind, detail))

    scale = max(1.0, size / 200.0)
    srcs = [(name, p.read_bytes(), p.suffix) for name, p in bases.items()]
    for name, data, ext in srcs:  # truncations: header-only, mid-file, tail
        cuts = [1, 8, 64, 512, 4096] + sorted({int(x) for x in rng.uniform(0.02, 0.999, size=int(18 * scale)) * len(data)})
        for c in cuts:
            put("truncate", f"{name} at byte {c} of {len(data)}", data[:c], ext)
    for r in real:  # a few mutations of each real file (they cost real decode time)
        data = r.read_bytes()
        for frac in (0.1, 0.5, 0.9):
            put("truncate", f"{r.name} at {frac:.0%}", data[:int(len(data) * frac)], r.suffix)
        lo, hi = _mdat_range(data)
        put("flip_payload", f"{r.name}: 32 payload bytes", _flip(data, rng, lo, hi, 32), r.suffix)
        lo, hi = _moov_range(data)
        put("flip_header", f"{r.name}: 4 header bytes", _flip(data, rng, lo, hi, 4), r.suffix)
    for name, data, ext in srcs:
        hlo, hhi = _moov_range(data) if ext == ".mp4" else (0, 4096)
        plo, phi = _mdat_range(data) if ext == ".mp4" else (4096, len(data))
        for k in range(int(10 * scale)):
            n = int(rng.integers(1, 17))
            put("flip_header", f"{name}: {n} random bytes of the header", _flip(data, rng, hlo, hhi, n), ext)
        for k in range(int(8 * scale)):
            n = int(rng.integers(1, 65))
            put("flip_payload", f"{name}: {n} random payload bytes", _flip(data, rng, plo, phi, n), ext)
        for k in range(int(3 * scale)):
            b = bytearray(data)
            off = int(rng.integers(0, max(1, len(b) - 512)))
            fill = b"\0" * 512 if k % 2 == 0 else rng.integers(0, 256, 512, dtype=np.uint8).tobytes()
            b[off:off + 512] = fill
            put("overwrite_block", f"{name}: 512 {'zero' if k % 2 == 0 else 'random'} bytes at {off}", bytes(b), ext)
    mp4 = bases["talk_mp4"].read_bytes()
    for what, data in mp4_edits(mp4):
        put("mp4_box", what, data, ".mp4")
    for k, header in enumerate(_Y4M_HEADERS):
        ext = (".mp4", ".avi", ".mkv", ".y4m.mov")[k % 4]  # y4m is never its real extension here
        put("y4m_header", header, y4m(header, seed=k), ext)
    put("y4m_header", "declared 64x48, frames 10 bytes short", y4m("W64 H48 F25:1 Ip C420jpeg", frame_bytes=64 * 48 * 3 // 2 - 10), ".mp4")
    put("y4m_header", "header only, no frame", y4m("W64 H48 F25:1 Ip C420jpeg", frames=0), ".mp4")
    for kind, detail, maker in _odd_encodes(fuzz, seed):
        made(kind, detail, maker, ".mkv" if "mkv" in detail else ".mp4" if kind != "streams" else ".mkv")
    # containers and non-videos under video names
    mkv = bases["talk_mkv"].read_bytes()
    wrong = [
        ("mkv named .mp4", mkv, ".mp4"), ("mp4 named .webm", mp4, ".webm"), ("mp4 named .avi", mp4, ".avi"),
        ("mp4 named .ts", mp4, ".ts"), ("gzip of an mp4", gzip.compress(mp4, mtime=0), ".mp4"),
        ("zip holding an mp4", _zip(mp4), ".mp4"), ("an HTML error page", b"<html><body><h1>404 Not Found</h1></body></html>\n", ".mp4"),
        ("a PNG image", _png(), ".mp4"), ("a WAV file", _wav(), ".mkv"), ("plain text", b"not a video\n" * 40, ".mov"),
        ("one byte", b"\0", ".mp4"), ("1 MB of zeros", b"\0" * (1 << 20), ".mp4"),
        ("random bytes", rng.integers(0, 256, 50000, dtype=np.uint8).tobytes(), ".mkv"),
        ("two mp4s back to back", mp4 + mp4, ".mp4"), ("garbage before the mp4", rng.integers(0, 256, 4096, dtype=np.uint8).tobytes() + mp4, ".mp4"),
        ("garbage after the mp4", mp4 + rng.integers(0, 256, 65536, dtype=np.uint8).tobytes(), ".mp4"),
        ("ftyp box only", mp4[:32], ".mp4"), ("empty file", b"", ".mov"),
    ]
    for detail, data, ext in wrong:
        put("wrong_container", detail, data, ext)
    k = 0
    while len(inputs) < size:  # top up with more flips of the bases
        name, data, ext = srcs[k % len(srcs)]
        put("flip_payload", f"{name}: 8 random bytes (top-up {k})", _flip(data, rng, len(data) // 8, len(data), 8), ext)
        k += 1
    return Corpus(good, inputs)


def _zip(data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(zipfile.ZipInfo("video.mp4", date_time=(2020, 1, 1, 0, 0, 0)), data)
    return buf.getvalue()


def _png() -> bytes:
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="image2pipe") as c:
        s = c.add_stream("png", rate=1)
        s.width, s.height, s.pix_fmt = 32, 24, "rgb24"
        fr = av.VideoFrame.from_ndarray(np.full((24, 32, 3), 128, np.uint8), format="rgb24")
        for pkt in s.encode(fr):
            c.mux(pkt)
        for pkt in s.encode(None):
            c.mux(pkt)
    return buf.getvalue()


def _wav() -> bytes:
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="wav") as c:
        a = c.add_stream("pcm_s16le", rate=16000)
        a.layout = "mono"
        _write_audio(c, a, 1.0, 16000, "mono", 0)
    return buf.getvalue()
