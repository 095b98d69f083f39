"""Inputs the fuzz corpus found mishandled, each kept as a small case: a video whose container
metadata is not UTF-8 (a Latin-1 title, a flipped byte) is probed, scanned for scenes and
decoded like any other, instead of being refused whole; a file FFmpeg cannot open is refused
with FFmpeg's own explanation, not only its return code; a named pipe or a broken link found in
a directory is named for what it is, not taken for an empty file."""
from __future__ import annotations

import os

import av.logging
import pytest

from common.media import MediaError, decode_audio, iter_frames, probe
from pipeline.source.ingest import NOT_REGULAR, IngestConfig, check_source, expand_inputs
from pipeline.source.scenes import ScenesConfig, detect_scenes
from tests.helpers.fuzz_corpus import encode, y4m


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


@pytest.mark.parametrize("header,why", [("W0 H0 F25:1 Ip C420jpeg", "Picture size 0x0 is invalid"),
                                        ("W64 H48 F25:1 Ip Cbogus", "unknown pixel format")])
def test_a_refused_open_says_what_ffmpeg_found(tmp_path, header, why):
    p = tmp_path / "hostile.mp4"
    p.write_bytes(y4m(header))
    level = av.logging.get_level()
    with open(p, "rb") as f:
        for src in (str(p), p.read_bytes(), f):
            with pytest.raises(MediaError, match=why):
                probe(src)
    assert av.logging.get_level() == level  # FFmpeg's log is on only while it explains the failure


def test_pipes_and_broken_links_in_a_directory_are_not_regular_files(tmp_path):
    good = encode(tmp_path / "good.mp4", seconds=0.4)
    os.mkfifo(tmp_path / "pipe.mp4")
    (tmp_path / "link.mp4").symlink_to(tmp_path / "nowhere.mp4")
    (tmp_path / "to_good.mp4").symlink_to(good)
    cfg = IngestConfig()
    items = {os.path.basename(i["source_uri"]): i for i in expand_inputs([str(tmp_path)], cfg)}
    assert items["pipe.mp4"]["error"] == items["link.mp4"]["error"] == NOT_REGULAR
    assert "error" not in items["good.mp4"] and "error" not in items["to_good.mp4"]
    # and checking the item does not open the pipe (it would wait for a writer)
    assert check_source(items["pipe.mp4"], cfg)["error"] == NOT_REGULAR
