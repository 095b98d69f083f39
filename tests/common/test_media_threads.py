"""Decoder and encoder threads: a worker's media work uses the CPUs reserved for it, with the
same pictures whatever the thread count."""
from __future__ import annotations

import io

import av
import numpy as np
import pytest

from common import media
from pipeline.engine.config import load_config
from pipeline.source import clips, scenes
from pipeline.source.split import cut_segment, plan_source
from tests.helpers.long_source import make_long_source


def _noisy_clip(n: int = 40) -> bytes:
    rng = np.random.default_rng(3)
    base = rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)
    return media.encode_mp4((np.roll(base, 3 * k, axis=1) for k in range(n)), 25.0, threads=1)


def test_one_decoder_thread_gives_the_pictures_of_a_threaded_decode():
    data = _noisy_clip()
    one, t1 = media.decode_video(data, threads=1)
    many, t2 = media.decode_video(data, threads=0)
    assert len(one) == 40 and np.array_equal(one, many) and np.array_equal(t1, t2)


def test_decoder_threads_sets_the_stream_before_its_first_frame():
    with av.open(io.BytesIO(_noisy_clip())) as c:
        v = c.streams.video[0]
        media.decoder_threads(v, 1)
        assert v.thread_count == 1
        next(c.decode(v))
    with av.open(io.BytesIO(_noisy_clip())) as c:
        v = c.streams.video[0]
        media.decoder_threads(v, 3)
        assert (v.thread_count, v.thread_type) == (3, av.codec.context.ThreadType.AUTO)


def test_a_single_threaded_encode_is_reproducible():
    a, b = _noisy_clip(), _noisy_clip()
    assert a == b and media.probe(a).has_video


@pytest.mark.parametrize("cpus", [1, 2])
def test_the_scan_and_cut_of_a_split_task_use_the_cpus_it_reserves(tmp_path, monkeypatch, cpus):
    src = tmp_path / "src.mkv"
    make_long_source(src, 0.5, seed=2, audio=False)
    cfg = load_config(None, ["ingest.sandbox.enabled=false", f"resources.split.num_cpus={cpus}"])
    seen: dict[str, list[int]] = {"decode": [], "encode": []}
    real_decoder, real_writer = media.decoder_threads, clips.Mp4Writer.__init__

    def decoder(stream, threads=None):
        seen["decode"].append(media.media_threads(threads))
        return real_decoder(stream, threads)

    def writer(self, *a, threads=None, **k):
        seen["encode"].append(media.media_threads(threads))
        return real_writer(self, *a, threads=threads, **k)

    monkeypatch.setattr(media, "decoder_threads", decoder)
    monkeypatch.setattr(scenes, "decoder_threads", decoder)
    monkeypatch.setattr(clips.Mp4Writer, "__init__", writer)
    rows = [r for seg in plan_source({"source_uri": str(src)}, cfg) for r in cut_segment(seg, cfg).rows]
    assert any(r["video"] for r in rows)
    # the scan, then the cut of every segment; one encoder per encoded window
    assert len(seen["decode"]) >= 2 and set(seen["decode"]) == {cpus}
    assert seen["encode"] and set(seen["encode"]) == {cpus}
