import numpy as np
import pytest

from common import media
from pipeline.source.clips import ClipsConfig, clip_id_for, cut_windows
from pipeline.source.scenes import ScenesConfig, Window, detect_scenes, frame_span


def _frames(n, w=64, h=48):
    for k in range(n):
        f = np.zeros((h, w, 3), np.uint8)
        f[..., 0] = k  # frame number in the red channel
        yield f


def test_mp4_round_trip_keeps_count_size_and_rate():
    data = media.encode_mp4(_frames(30), 25.0)
    info = media.probe(data)
    assert (info.width, info.height, info.fps) == (64, 48, 25.0) and info.has_video and not info.has_audio
    frames, times = media.decode_video(data)
    assert len(frames) == 30 and times[1] == pytest.approx(0.04)


def test_audio_round_trip_flac_and_wav():
    pcm = (0.3 * np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)).astype(np.float32)
    for fmt in ("flac", "wav"):
        back = media.decode_audio_bytes(media.encode_audio(pcm, fmt=fmt))
        assert len(back) == len(pcm) and np.abs(back - pcm).max() < 1e-3


def test_fit_size_keeps_aspect_and_even_sizes():
    assert media.fit_size(1080, 1920, 1280) == (720, 1280)
    assert media.fit_size(641, 361, 1280) == (640, 360)


def test_corrupt_bytes_raise_media_error():
    with pytest.raises(media.MediaError):
        media.probe(b"\x00" * 100)


def _vfr_source(tmp_path):
    """A source whose frames alternate 40 ms / 80 ms apart (VFR), grey level = 4 * index."""
    from fractions import Fraction

    import av

    p = tmp_path / "vfr.mp4"
    with av.open(str(p), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        s.codec_context.time_base = Fraction(1, 1000)
        t = 0
        for k in range(60):
            f = np.full((48, 64, 3), 4 * k, np.uint8)
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            vf.pts = t
            vf.time_base = Fraction(1, 1000)
            for pkt in s.encode(vf):
                c.mux(pkt)
            t += 40 if k % 2 == 0 else 80
        for pkt in s.encode(None):
            c.mux(pkt)
    return p, t / 1000.0


def test_cut_resamples_vfr_by_time_with_exact_spans(tmp_path):
    src, dur = _vfr_source(tmp_path)
    source = {"source_uri": str(src), "source_sha256": "x" * 64, "has_audio": True}
    w = Window(0, 0, 0.6, 2.6)
    # the spans in source frames come from the scene scan's frame times
    w.start_frame, w.end_frame = frame_span(detect_scenes(str(src), ScenesConfig()).frame_times, w.start_s, w.end_s)
    audio = np.arange(int(dur * 16000), dtype=np.float32) / 1e6
    rows = cut_windows(str(src), source, [w], [audio[int(0.6 * 16000):int(2.6 * 16000)]], ClipsConfig(), 64, 48)
    (r,) = rows
    assert r["num_frames"] == 50 and r["fps"] == 25.0
    frames, times = media.decode_video(r["video"])
    assert len(frames) == 50
    # source frame k is shown from t_k = 120 ms * (k // 2) + 40 ms * (k % 2); the clip frame at
    # time t must show the latest source frame with t_k <= t (within codec error on the index)
    src_times = np.array([0.12 * (k // 2) + 0.04 * (k % 2) for k in range(60)])
    for i in (0, 10, 25, 49):
        t = 0.6 + i / 25
        k = int(np.searchsorted(src_times, t + 1e-6) - 1)
        assert abs(float(frames[i].mean()) - 4 * k) <= 1.5, (i, k)
    # source frame indices (end exclusive) and audio sliced to the exact span
    assert r["start_frame"] == int(np.searchsorted(src_times, 0.6 - 1e-6))
    assert r["end_frame"] == int(np.searchsorted(src_times, 2.6 - 1e-6))
    assert len(r["audio_pcm"]) == 32000 and r["audio_pcm"][0] == pytest.approx(audio[int(0.6 * 16000)])
    assert r["clip_id"] == clip_id_for("x" * 64, 0.6, 2.6)
