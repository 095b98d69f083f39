"""Fingerprints and the duplicate decisions: copies re-encoded, rescaled and trimmed match with
the right offset, other content and other speech under the same pictures do not, and the winner
of a group is the same whatever order the inputs come in."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.source.dedup import (Candidate, NearDuplicateConfig, compare, exact_duplicates, near_duplicates)
from pipeline.source.fingerprint import Fingerprint, FingerprintConfig, fingerprint
from tests.helpers.fuzz_corpus import encode
from tests.helpers.reencode import reencode

FP = FingerprintConfig()
CFG = NearDuplicateConfig()


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("dedup")
    a = encode(d / "a.mp4", seed=11, size=(160, 120), seconds=6.0)
    return {
        "a": a,
        "a_small": reencode(a, d / "a_small.mp4", scale=0.5, crf=34, audio_rate=22050),
        "a_trim": reencode(a, d / "a_trim.mkv", scale=0.75, trim_start_s=1.1, trim_end_s=0.5, fps=30, container="matroska"),
        "b": encode(d / "b.mp4", seed=12, size=(160, 120), seconds=6.0, face=False),
        # the pictures of a under other speech (a dub)
        "a_dub": _with_other_audio(a, d / "a_dub.mkv"),
    }


def _with_other_audio(src: Path, dst: Path) -> Path:
    import av

    with av.open(str(src)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    from tests.helpers import fuzz_corpus

    with av.open(str(dst), mode="w", format="matroska") as out:
        v = out.add_stream("libx264", rate=25)
        v.width, v.height, v.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        v.options = {"x264-params": "log-level=error"}
        a = out.add_stream("pcm_s16le", rate=16000)
        a.layout = "mono"
        for k, img in enumerate(frames):
            fr = av.VideoFrame.from_ndarray(img, format="rgb24")
            fr.pts = k
            for pkt in v.encode(fr):
                out.mux(pkt)
        for pkt in v.encode(None):
            out.mux(pkt)
        fuzz_corpus._write_audio(out, a, len(frames) / 25, 16000, "mono", seed=999)
    return dst


@pytest.fixture(scope="module")
def fps(clips) -> dict[str, Fingerprint]:
    return {k: fingerprint(str(p), True, FP) for k, p in clips.items()}


def test_fingerprint_is_compact_and_round_trips_through_json(fps):
    fp = fps["a"]
    assert len(fp.video) == 24 and fp.usable_video == 24 and fp.usable_audio > 40 and fp.clean
    back = Fingerprint.from_json(fp.to_json())
    assert np.array_equal(back.video, fp.video) and np.array_equal(back.audio_ok, fp.audio_ok) and back.clean
    assert len(str(fp.to_json())) < 2000


@pytest.mark.parametrize("copy,offset", [("a_small", 0.0), ("a_trim", -1.1)])
def test_a_rescaled_reencoded_or_trimmed_copy_matches(fps, copy, offset):
    m = compare(fps["a"], fps[copy], CFG)
    assert m is not None, copy
    assert m.video_match >= 0.9 and m.audio_ber is not None and m.audio_ber < 0.1
    assert abs(m.offset_s - offset) <= FP.video_step_s / 2 + 1e-9


def test_other_content_does_not_match(fps):
    assert compare(fps["a"], fps["b"], CFG) is None


def test_the_same_pictures_under_other_speech_are_not_a_copy_unless_asked(fps):
    assert compare(fps["a"], fps["a_dub"], CFG) is None
    m = compare(fps["a"], fps["a_dub"], NearDuplicateConfig(require_audio_match=False))
    assert m is not None and m.video_match >= 0.9 and m.audio_ber > 0.3


def _cand(uri, sha="x", committed=False, pixels=100, fp=None):
    return Candidate(uri, sha, committed, pixels=pixels, fingerprint=fp)


def test_exact_copies_keep_the_committed_source_else_the_smallest_uri():
    got = exact_duplicates([_cand("/b", "h1"), _cand("/a", "h1"), _cand("/c", "h1"), _cand("/z", "h2")])
    assert {u: d.of for u, d in got.items()} == {"/b": "/a", "/c": "/a"}
    assert got["/b"].reason() == "duplicate_of /a"
    got = exact_duplicates([_cand("/b", "h1"), _cand("/a", "h1"), _cand("/c", "h1", committed=True)])
    assert {u: d.of for u, d in got.items()} == {"/a": "/c", "/b": "/c"}


def test_near_copies_keep_the_best_copy_whatever_the_input_order(fps):
    cands = [_cand("/2_small", "s1", pixels=80 * 60, fp=fps["a_small"]), _cand("/3_orig", "s2", pixels=160 * 120, fp=fps["a"]),
             _cand("/1_trim", "s3", pixels=120 * 90, fp=fps["a_trim"]), _cand("/4_other", "s4", pixels=160 * 120, fp=fps["b"])]
    for order in (cands, cands[::-1], cands[1:] + cands[:1]):
        got = near_duplicates(order, CFG)
        assert {u: d.of for u, d in got.items()} == {"/2_small": "/3_orig", "/1_trim": "/3_orig"}
    assert got["/1_trim"].reason().startswith("near_duplicate_of /3_orig (")


def test_a_committed_copy_wins_and_is_never_dropped(fps):
    cands = [_cand("/orig", "s1", pixels=160 * 120, fp=fps["a"]), _cand("/small", "s2", committed=True, pixels=80 * 60, fp=fps["a_small"])]
    assert {u: d.of for u, d in near_duplicates(cands, CFG).items()} == {"/orig": "/small"}
    both = [_cand("/orig", "s1", True, fp=fps["a"]), _cand("/small", "s2", True, fp=fps["a_small"])]
    assert near_duplicates(both, CFG) == {}
