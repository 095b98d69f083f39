"""Media I/O with PyAV only (it bundles FFmpeg; no shell, no ffmpeg CLI).

Everything that opens, decodes or encodes audio/video in the project goes through here, so that
odd containers and codecs fail in one place with one kind of error (:class:`MediaError`).
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import BinaryIO, Iterator, Optional, Union

import av
import numpy as np

from common.threads import worker_threads

Source = Union[str, bytes, BinaryIO]

# The project's two media constants. Clips store 16 kHz mono audio because Silero VAD, Wav2Vec2,
# SyncNet and LR-ASD all take it; video is normalised to 25 fps because SyncNet's and LR-ASD's
# published models see 25 fps windows, sync offsets are counted in 25 fps frames, and the
# trainer's speech-video window mask assumes four audio-feature steps per video frame.
AUDIO_RATE = 16000
VIDEO_FPS = 25.0


class MediaError(RuntimeError):
    """A file that cannot be opened, probed, decoded or encoded."""


def _open(src: Source, **kw):
    # A tag that is not UTF-8 (old encoders write Latin-1 titles; a flipped byte does the same)
    # would otherwise make PyAV refuse the whole container, pictures and sound intact.
    kw.setdefault("metadata_errors", "replace")
    try:
        return _av_open(src, **kw)
    except (av.FFmpegError, OSError, ValueError) as e:
        raise MediaError(f"cannot open media: {e}{_ffmpeg_says(src, kw)}") from e


def _av_open(src: Source, **kw):
    if isinstance(src, (bytes, bytearray, memoryview)):
        return av.open(io.BytesIO(bytes(src)), **kw)
    return av.open(src, **kw)


def _ffmpeg_says(src: Source, kw: dict) -> str:
    """FFmpeg's own words for a failed open, as " (component: message)", or "".

    PyAV keeps FFmpeg's log off (it costs time on every frame), so its error carries only the
    return code, which can mislead: a YUV4MPEG header declaring 0x0 pictures reads "Device or
    resource busy". Only on this failure path, the open is tried again with the log captured;
    the level is restored at once."""
    if not isinstance(src, (str, bytes, bytearray, memoryview)):
        try:  # a file object: from its start again, if it can seek
            src.seek(0)
        except (AttributeError, OSError, ValueError):
            return ""
    level, skip = av.logging.get_level(), av.logging.get_skip_repeated()
    try:
        av.logging.set_level(av.logging.ERROR)
        av.logging.set_skip_repeated(False)  # else the same fault in the next file says nothing
        with av.logging.Capture() as logs:
            try:
                _av_open(src, **kw).close()
            except (av.FFmpegError, OSError, ValueError):
                pass  # the same failure again, now with its log
    finally:
        av.logging.set_level(level)
        av.logging.set_skip_repeated(skip)
    lines = [(name, msg.strip()) for _lvl, name, msg in logs if msg and msg.strip()]
    if not lines:
        return ""
    name, msg = lines[-1]
    return f" ({name or 'ffmpeg'}: {msg})"


@dataclass
class ProbeInfo:
    duration_s: float
    has_video: bool
    has_audio: bool
    width: int = 0
    height: int = 0
    fps: float = 0.0  # average frame rate (VFR sources: the mean)
    video_codec: str = ""
    audio_codec: str = ""
    audio_rate: int = 0
    audio_channels: int = 0
    num_frames: int = 0  # container's count; 0 when unknown


def _video_stream(container):
    for s in container.streams.video:
        # cover art in audio files is a one-frame "video" stream with the attached_pic disposition
        disp = getattr(s, "disposition", None)
        if disp is not None and bool(disp & av.stream.Disposition.attached_pic):
            continue
        return s
    return None


def probe(src: Source) -> ProbeInfo:
    with _open(src) as c:
        v = _video_stream(c)
        a = c.streams.audio[0] if c.streams.audio else None
        # a stream whose codec FFmpeg does not know (a corrupt header) has no codec context
        if v is not None and v.codec_context is None:
            raise MediaError("the video stream's codec is unknown (corrupt or unsupported header)")
        if a is not None and a.codec_context is None:
            a = None
        dur = 0.0
        if c.duration is not None:
            dur = c.duration / av.time_base
        for s in (v, a):
            if s is not None and s.duration is not None and s.time_base is not None:
                dur = max(dur, float(s.duration * s.time_base))
        info = ProbeInfo(duration_s=float(dur), has_video=v is not None, has_audio=a is not None)
        if v is not None:
            cc = v.codec_context
            info.width, info.height = int(cc.width or 0), int(cc.height or 0)
            rate = v.average_rate or v.guessed_rate or v.base_rate
            info.fps = float(rate) if rate else 0.0
            info.video_codec = cc.name or ""
            info.num_frames = int(v.frames or 0)
        if a is not None:
            info.audio_codec = a.codec_context.name or ""
            info.audio_rate = int(a.codec_context.sample_rate or 0)
            info.audio_channels = int(a.codec_context.channels or 0)
        return info


def decode_audio(src: Source, rate: int = AUDIO_RATE) -> Optional[np.ndarray]:
    """Whole audio stream as float32 mono at ``rate``; None when there is no audio stream.

    The array starts at time 0 of the container: if the stream starts later, the gap is padded
    with zeros so that sample ``i`` is at ``i / rate`` seconds on the video's clock.
    """
    with _open(src) as c:
        if not c.streams.audio:
            return None
        chunks = list(_audio_chunks(c, rate))
        return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)


def audio_slices(src: Source, spans: list[tuple[float, float]], rate: int = AUDIO_RATE) -> Iterator[np.ndarray]:
    """The samples of each (start_s, end_s) span, in order (spans sorted, not overlapping), from
    one sequential decode: each slice equals the same slice of :func:`decode_audio`, zero-padded
    past the end of the stream, while memory holds one span at a time. Raises MediaError."""
    bounds = [(int(round(a * rate)), int(round(b * rate))) for a, b in spans]
    with _open(src) as c:
        if not c.streams.audio:
            raise MediaError("no audio stream")
        pos, buf, k = 0, [], 0  # samples seen so far; pieces of span k
        for chunk in _audio_chunks(c, rate):
            end = pos + len(chunk)
            while k < len(bounds) and chunk is not None:
                a, b = bounds[k]
                lo, hi = max(a, pos), min(b, end)
                if hi > lo:
                    buf.append(chunk[lo - pos:hi - pos])
                if b <= end:
                    yield _fill(buf, b - a)
                    buf, k = [], k + 1
                else:
                    break
            pos = end
            if k >= len(bounds):
                return
        for a, b in bounds[k:]:
            yield _fill(buf, b - a)
            buf = []


def _fill(parts: list[np.ndarray], n: int) -> np.ndarray:
    x = np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)
    return np.pad(x, (0, n - len(x))) if len(x) < n else x[:n]


def _audio_chunks(c, rate: int) -> Iterator[np.ndarray]:
    """Resampled mono chunks of the first audio stream, the first one preceded by the zeros that
    put sample ``i`` at ``i / rate`` seconds on the container clock."""
    s = c.streams.audio[0]
    resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
    start = c.start_time / av.time_base if c.start_time is not None else 0.0
    first = True
    emitted = False
    try:
        for frame in c.decode(s):
            if first:
                first = False
                if frame.pts is not None and frame.time_base is not None:
                    offset = float(frame.pts * frame.time_base) - float(start)
                    if offset > 1.0 / rate:
                        yield np.zeros(int(round(offset * rate)), np.float32)
            for out in resampler.resample(frame):
                emitted = True
                yield out.to_ndarray().reshape(-1)
        for out in resampler.resample(None):
            yield out.to_ndarray().reshape(-1)
    except av.FFmpegError as e:
        if not emitted:
            raise MediaError(f"audio decode failed: {e}") from e
        # a truncated tail: keep what decoded


def iter_frames(
    src: Source,
    fmt: str = "rgb24",
    width: Optional[int] = None,
    height: Optional[int] = None,
    start_s: Optional[float] = None,
    interpolation: Optional[str] = None,
    skip_nonref: bool = False,
    threads: Optional[int] = None,
) -> Iterator[tuple[float, np.ndarray]]:
    """Yield ``(time_s, frame)`` for every decoded video frame, times relative to the
    container start (VFR-safe: times come from timestamps, not frame counts). With ``start_s``
    decoding starts at the last keyframe at or before that time (a seek, for long sources).
    ``interpolation`` names the scaler (e.g. ``"AREA"``: a large reduction that averages every
    source pixel instead of sampling a few, so rescaled copies shrink to the same image).
    ``skip_nonref``: the decoder drops frames no other frame refers to (most B-frames): about
    half the frames at well under half the cost, for analyses that only sample the pictures.
    ``threads``: decoder threads (see :func:`decoder_threads`)."""
    for t, frame in _decoded(src, start_s, skip_nonref, threads):
        if width or height:
            yield t, frame.to_ndarray(format=fmt, width=width or frame.width, height=height or frame.height,
                                      interpolation=interpolation)
        else:
            yield t, frame.to_ndarray(format=fmt)


def iter_pictures(src: Source, width: int, height: int, start_s: Optional[float] = None,
                  threads: Optional[int] = None) -> Iterator[tuple[float, av.VideoFrame]]:
    """As :func:`iter_frames`, but each frame stays a YUV 4:2:0 picture at ``width`` x
    ``height``, which is what the H.264 encoder takes: a re-encode then skips the round trip
    through RGB, which costs more than the encode itself (``Mp4Writer.write`` takes either)."""
    for t, frame in _decoded(src, start_s, False, threads):
        yield t, frame.reformat(width=width, height=height, format="yuv420p")


def media_threads(threads: Optional[int] = None) -> int:
    """Threads one decoder or encoder may use: ``threads``, else the worker's budget (as many as
    CPUs Ray reserved for it, ``common.threads``); 0 leaves the choice to FFmpeg (every core)."""
    return worker_threads() if threads is None else max(0, int(threads))


def decoder_threads(stream, threads: Optional[int] = None) -> None:
    """Set a video stream's decoder threads (before its first packet). On one thread the
    decoder runs alone: frame threading costs a third more CPU on a 640 x 360 H.264 source (an
    eighth more at 1280 x 544) for the same wall time on a busy core, which a worker of one CPU
    always has."""
    n = media_threads(threads)
    if n == 1:
        stream.thread_count = 1
    else:
        stream.thread_type = "AUTO"
        stream.thread_count = n


def _decoded(src: Source, start_s: Optional[float], skip_nonref: bool,
             threads: Optional[int] = None) -> Iterator[tuple[float, av.VideoFrame]]:
    with _open(src) as c:
        v = _video_stream(c)
        if v is None:
            raise MediaError("no video stream")
        decoder_threads(v, threads)
        if skip_nonref:
            v.codec_context.skip_frame = "NONREF"
        start = c.start_time / av.time_base if c.start_time is not None else 0.0
        if start_s is not None and start_s > 0:
            _seek_before(c, v, start_s + start)
        last_t = -1.0
        try:
            for frame in c.decode(v):
                if frame.pts is None:
                    t = last_t + (1.0 / float(v.average_rate or 25))
                else:
                    t = float(frame.pts * frame.time_base) - float(start)
                last_t = t
                yield t, frame
        except av.FFmpegError as e:
            raise MediaError(f"video decode failed after t={last_t:.3f}s: {e}") from e


def _seek_before(c, stream, t_abs: float) -> None:
    """Seek so that decoding starts at a keyframe at or before ``t_abs`` (container time)."""
    try:
        c.seek(int(t_abs / stream.time_base), stream=stream, backward=True, any_frame=False)
    except av.FFmpegError as e:
        raise MediaError(f"cannot seek to {t_abs:.3f}s: {e}") from e


def decode_video(
    src: Source,
    fmt: str = "rgb24",
    width: Optional[int] = None,
    height: Optional[int] = None,
    max_frames: Optional[int] = None,
    expected_frames: Optional[int] = None,
    threads: Optional[int] = None,
) -> tuple[np.ndarray, np.ndarray]:
    """All frames as one array (T, H, W, C) plus their times (T,). For short clips.
    ``expected_frames`` (a clip's known length) sizes the array up front, which saves stacking
    the frames into it at the end (one copy of every frame fewer)."""
    out: Optional[np.ndarray] = None
    times: list[float] = []
    for t, img in iter_frames(src, fmt, width, height, threads=threads):
        if out is None:
            out = np.empty((max(1, expected_frames or 64), *img.shape), img.dtype)
        elif len(times) == len(out):
            out = np.concatenate([out, np.empty_like(out)])  # longer than expected: grow by doubling
        out[len(times)] = img
        times.append(t)
        if max_frames is not None and len(times) >= max_frames:
            break
    if out is None:
        raise MediaError("no decodable video frames")
    return out[: len(times)], np.asarray(times, dtype=np.float64)


def fit_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """Scale (w, h) so the longest side is at most ``max_side``; even sizes for H.264 4:2:0."""
    scale = min(1.0, max_side / max(width, height))
    w = max(2, int(round(width * scale / 2)) * 2)
    h = max(2, int(round(height * scale / 2)) * 2)
    return w, h


class Mp4Writer:
    """Incremental H.264 mp4 encoder into memory; optional 16 kHz mono audio track (AAC)."""

    def __init__(self, width: int, height: int, fps: float, crf: int = 20, preset: str = "veryfast",
                 audio: Optional[np.ndarray] = None, audio_rate: int = AUDIO_RATE, threads: Optional[int] = None):
        self.buf = io.BytesIO()
        self.c = av.open(self.buf, mode="w", format="mp4")
        rate = Fraction(fps).limit_denominator(1001)
        self.v = self.c.add_stream("libx264", rate=rate)
        self.time_base = 1 / rate  # the encoder's, one tick per frame
        self.v.width, self.v.height = width, height
        self.v.pix_fmt = "yuv420p"
        # x264 logs through its own callback when FFmpeg's default logger is active. mbtree off:
        # x264's macroblock-tree rate control reads lookahead memory it never initialised, so in a
        # long-running worker the same frames encoded twice gave different bytes (3 of 73 clips);
        # without it every encode is reproducible, at ~4 % more bytes on a real close-up.
        # threads: the worker's budget (media_threads); on one, x264 spends a fifth less CPU
        # than with its own frame threads, for the same bytes within 2 %. x264's output depends
        # on its thread count, so a count fixed by the reservation (not by the machine's cores)
        # also gives the same clip bytes on every machine.
        params = f"log-level=error:no-mbtree=1:threads={media_threads(threads)}"
        self.v.options = {"crf": str(crf), "preset": preset, "x264-params": params}
        self.audio = audio
        self.a = None
        if audio is not None:
            self.a = self.c.add_stream("aac", rate=audio_rate)
            self.a.layout = "mono"
            self.audio_rate = audio_rate
        self.n = 0

    def write(self, picture: Union[np.ndarray, av.VideoFrame]) -> None:
        """One frame: an RGB array (H, W, 3) or a decoded picture (see :func:`iter_pictures`)."""
        if isinstance(picture, av.VideoFrame):
            frame = picture
            # a decoded picture keeps its source's frame type, which x264 would obey as a
            # forced I/P/B decision; the encoder chooses here. Its time base is ours, below.
            frame.pict_type = av.video.frame.PictureType.NONE
            frame.time_base = self.time_base
        else:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(picture), format="rgb24")
        if frame.width != self.v.width or frame.height != self.v.height:
            frame = frame.reformat(width=self.v.width, height=self.v.height)
        frame.pts = self.n
        self.n += 1
        for pkt in self.v.encode(frame):
            self.c.mux(pkt)

    def close(self) -> bytes:
        for pkt in self.v.encode(None):
            self.c.mux(pkt)
        if self.a is not None and self.audio is not None and len(self.audio):
            pcm = np.asarray(self.audio, dtype=np.float32).reshape(1, -1)
            step = 1024
            for i in range(0, pcm.shape[1], step):
                fr = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm[:, i:i + step]), format="flt", layout="mono")
                fr.sample_rate = self.audio_rate
                fr.pts = i
                for pkt in self.a.encode(fr):
                    self.c.mux(pkt)
            for pkt in self.a.encode(None):
                self.c.mux(pkt)
        self.c.close()
        return self.buf.getvalue()


def encode_mp4(frames, fps: float, crf: int = 20, preset: str = "veryfast",
               audio: Optional[np.ndarray] = None, audio_rate: int = AUDIO_RATE,
               threads: Optional[int] = None) -> bytes:
    """Encode an iterable of RGB frames (H, W, 3 uint8) to mp4 bytes."""
    w = None
    for f in frames:
        if w is None:
            h, w = f.shape[:2]
            w2, h2 = w - w % 2, h - h % 2
            w = Mp4Writer(w2, h2, fps, crf, preset, audio, audio_rate, threads)
        w.write(f)
    if w is None:
        raise MediaError("no frames to encode")
    return w.close()


def encode_audio(pcm: np.ndarray, rate: int = AUDIO_RATE, fmt: str = "flac") -> bytes:
    """Mono float32 PCM -> FLAC or WAV bytes (16-bit)."""
    pcm16 = (np.clip(np.asarray(pcm, dtype=np.float32), -1.0, 1.0) * 32767.0).astype(np.int16)
    buf = io.BytesIO()
    with av.open(buf, mode="w", format=fmt) as c:
        s = c.add_stream("flac" if fmt == "flac" else "pcm_s16le", rate=rate)
        s.layout = "mono"
        step = 4096
        for i in range(0, len(pcm16), step):
            fr = av.AudioFrame.from_ndarray(pcm16[None, i:i + step].copy(), format="s16", layout="mono")
            fr.sample_rate = rate
            fr.pts = i
            for pkt in s.encode(fr):
                c.mux(pkt)
        for pkt in s.encode(None):
            c.mux(pkt)
    return buf.getvalue()


def decode_audio_bytes(data: bytes, rate: int = AUDIO_RATE) -> np.ndarray:
    pcm = decode_audio(data, rate)
    if pcm is None:
        raise MediaError("no audio stream in the audio bytes")
    return pcm


def resample_times(times: np.ndarray, start_s: float, end_s: float, fps: float) -> np.ndarray:
    """Indices into ``times`` (sorted frame timestamps) for a constant-rate timeline at ``fps``
    over [start_s, end_s): for each output tick the latest frame shown at that time."""
    n = max(0, int(math.floor((end_s - start_s) * fps + 1e-6)))
    ticks = start_s + np.arange(n) / fps + 1e-6
    idx = np.searchsorted(times, ticks, side="right") - 1
    return np.clip(idx, 0, len(times) - 1)
