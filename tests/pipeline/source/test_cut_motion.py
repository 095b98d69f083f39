"""The cut measures each window's motion on the pictures it encodes: a still window is a ledger
row, never encoded; a moving one is encoded exactly as without the measurement."""
import json

import cv2
import numpy as np
import pytest

from common import media
from pipeline.source import clips
from pipeline.source.clips import ClipsConfig, cut_windows
from pipeline.source.scenes import Window
from pipeline.stages.visual.motion import MotionConfig, analyse_motion

SOURCE = {"source_uri": "synthetic", "source_sha256": "s" * 64, "has_audio": False}


@pytest.fixture(scope="module")
def still_then_moving(tmp_path_factory):
    """3 s of one textured picture, then 3 s of the texture drifting 1 px per frame."""
    rng = np.random.default_rng(0)
    tex = cv2.GaussianBlur(rng.integers(0, 256, (96, 320, 3), np.uint8), (0, 0), 3)
    tex = cv2.normalize(tex, None, 0, 255, cv2.NORM_MINMAX)
    frames = [tex[:, :128]] * 75 + [tex[:, k:k + 128] for k in range(75)]
    p = tmp_path_factory.mktemp("motion") / "still_then_moving.mp4"
    p.write_bytes(media.encode_mp4(iter(frames), 25.0, crf=18))
    return str(p)


def _cut(src, motion):
    return cut_windows(src, SOURCE, [Window(0, 0, 0.0, 3.0), Window(1, 0, 3.0, 6.0)], None, ClipsConfig(), 128, 96,
                       motion=motion)


def test_a_still_window_is_rejected_unencoded_and_a_moving_one_encoded_as_without_motion(still_then_moving):
    still, moving = _cut(still_then_moving, MotionConfig())
    assert (still["status"], still["reject_stage"], still["reject_reason"]) == ("rejected", "motion", "static")
    assert still["video"] == b"" and still["motion_class"] == "static" and still["motion_score"] < 0.03
    assert moving["status"] is None and moving["motion_class"] == "normal" and moving["num_frames"] == 75
    assert json.loads(moving["backends"])["motion"]["backend"] == "opencv-dis"
    # the pictures held back until the window could not be still reach the encoder unchanged
    plain = _cut(still_then_moving, None)
    assert plain[1]["video"] == moving["video"] and plain[0]["video"] and "motion_class" not in plain[0]
    # the cut's measure is the visual stage's on the decoded clip (1 px/frame drift)
    frames, _ = media.decode_video(moving["video"])
    score, cls = analyse_motion(frames, MotionConfig())
    assert cls == "normal" and moving["motion_score"] == pytest.approx(score, rel=0.05) and 0.7 < score < 1.3


def test_a_window_held_past_the_memory_bound_is_encoded_and_still_judged(still_then_moving, monkeypatch):
    monkeypatch.setattr(clips, "HOLD_BYTES", 128 * 96 * 3 // 2 * 10)  # ten pictures
    still, moving = _cut(still_then_moving, MotionConfig())
    assert (still["reject_stage"], still["reject_reason"], still["video"]) == ("motion", "static", b"")
    assert moving["video"] == _cut(still_then_moving, None)[1]["video"]


def test_the_visual_stage_takes_the_cuts_measure_and_measures_rows_made_elsewhere(still_then_moving):
    from pipeline.stages.visual.stage import VisualStage

    _still, moving = _cut(still_then_moving, MotionConfig())
    stage = VisualStage()
    told = dict(moving, motion_score=0.5, motion_class="normal")
    (row,) = stage.run([told])
    assert row["motion_score"] == 0.5  # not measured again
    bare = {k: v for k, v in moving.items() if k not in ("motion_score", "motion_class")}
    (row,) = stage.run([bare])
    assert row["motion_score"] == pytest.approx(moving["motion_score"], rel=0.05)


@pytest.mark.realdata
def test_real_clips_talking_is_measured_as_on_the_decoded_clip_and_a_still_landscape_is_never_encoded(real_dir):
    from pipeline.engine.config import load_config
    from pipeline.source import split

    cfg = load_config(None, ["ingest.sandbox.enabled=false"])
    for name in ("closeup_talk_hdtf_katiehill.mp4", "cuts_nature_noperson_noaudio.mp4"):
        rows = [r for seg in split.plan_source({"source_uri": str(real_dir / name)}, cfg)
                for r in split.cut_segment(seg, cfg).rows if r["reject_stage"] != "scenes"]
        assert rows
        for r in rows:
            if name.startswith("cuts_nature"):
                assert (r["reject_stage"], r["reject_reason"], r["video"]) == ("motion", "static", b""), r["motion_score"]
                continue
            aw, ah = media.fit_size(r["width"], r["height"], 640)
            frames, _ = media.decode_video(r["video"], width=aw, height=ah)
            score, cls = analyse_motion(frames, cfg.visual.motion)
            assert r["motion_class"] == cls == "normal" and r["motion_score"] == pytest.approx(score, rel=0.02)


def test_a_segment_ending_in_a_still_window_stops_decoding_at_its_end(still_then_moving, monkeypatch):
    """A later segment's frames are not decoded for this one, whether its last window was
    encoded or judged still."""
    decoded = []
    real = media.iter_pictures

    def counting(*a, **k):
        for t, f in real(*a, **k):
            decoded.append(t)
            yield t, f

    monkeypatch.setattr(clips, "iter_pictures", counting)
    (still,) = cut_windows(still_then_moving, SOURCE, [Window(0, 0, 0.0, 2.0)], None, ClipsConfig(), 128, 96,
                           final=False, motion=MotionConfig())
    assert still["reject_reason"] == "static"
    assert 2.0 <= max(decoded) < 2.2  # one frame past the window, not the 6 s source
