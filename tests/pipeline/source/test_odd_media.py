"""Inputs the fuzz corpus found mishandled, each kept as a small case: a video whose container
metadata is not UTF-8 (a Latin-1 title, a flipped byte) is probed, scanned for scenes and
decoded like any other, instead of being refused whole."""
from __future__ import annotations

from common.media import decode_audio, iter_frames, probe
from pipeline.source.scenes import ScenesConfig, detect_scenes
from tests.helpers.fuzz_corpus import encode


def _latin1_tag(tmp_path):
    good = encode(tmp_path / "good.mp4", seed=3, size=(96, 72), seconds=2.4)
    data = bytearray(good.read_bytes())
    at = data.find(b"Lavf")  # the muxer's `encoder` tag
    assert at > 0
    data[at + 1] = 0xE9  # Latin-1 "e acute": not valid UTF-8 on its own
    bad = tmp_path / "latin1_tag.mp4"
    bad.write_bytes(bytes(data))
    return good, bad


def test_a_tag_that_is_not_utf8_does_not_hide_the_video(tmp_path):
    good, bad = _latin1_tag(tmp_path)
    info, ref = probe(str(bad)), probe(str(good))
    assert info.has_video and info.has_audio and (info.width, info.height) == (ref.width, ref.height)
    assert [t for t, _ in iter_frames(str(bad))] == [t for t, _ in iter_frames(str(good))]
    assert decode_audio(str(bad)).shape == decode_audio(str(good)).shape
    with open(bad, "rb") as f, open(good, "rb") as g:
        scan, ref_scan = detect_scenes(f, ScenesConfig()), detect_scenes(g, ScenesConfig())
    assert scan.scenes == ref_scan.scenes and len(scan.frame_times) == len(ref_scan.frame_times) > 0
