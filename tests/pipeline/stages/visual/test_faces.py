"""Face detection backends, IoU tracking and shot size."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.stages.visual.faces import FacesConfig, HaarDetector, detect_frames, make_detector
from pipeline.stages.visual.shot import ShotConfig, shot_size
from pipeline.stages.visual.tracking import character_tracks, count_faces, iou, track_faces
from tests.helpers.visual_clips import frames_25, real

# --- tracking and shot logic -------------------------------------------------------------------

def _box(x, y, s=50, score=0.9):
    return np.array([x, y, x + s, y + s, score], np.float32)


def test_iou():
    assert iou(_box(0, 0), _box(0, 0)) == pytest.approx(1.0)
    assert iou(_box(0, 0), _box(100, 100)) == 0.0
    assert iou(_box(0, 0), _box(25, 0)) == pytest.approx(1 / 3)


def test_tracking_bridges_gaps_and_separates_faces():
    dets = {}
    for i in range(0, 40, 2):
        d = [_box(10 + i * 0.5, 20)]  # a slowly moving face
        if i not in (10, 12, 14):  # the second face is missed three times in a row
            d.append(_box(300, 40))
        dets[i] = np.stack(d)
    tracks = track_faces(dets, iou_threshold=0.3, max_gap=6)
    assert len(tracks) == 2
    chars = character_tracks(tracks, len(dets), 400, 200, min_len=5, min_coverage=0.3)
    assert len(chars) == 2
    covs = sorted(round(s.coverage, 2) for _, s in chars)
    assert covs == [0.85, 1.0]
    assert count_faces(dets, chars) == 2
    # with no gap tolerance the missed detections split the second face into two tracks
    assert len(track_faces(dets, iou_threshold=0.3, max_gap=0)) == 3


def test_short_tracks_are_not_characters():
    dets = {i: np.zeros((0, 5), np.float32) for i in range(0, 40, 2)}
    dets[4] = _box(10, 10)[None]  # one-off false positive
    dets[6] = _box(11, 10)[None]
    tracks = track_faces(dets)
    assert character_tracks(tracks, len(dets), 400, 200, min_len=5, min_coverage=0.3) == []
    assert count_faces(dets, []) == 0


def test_track_boxes_interpolate_between_detections():
    dets = {0: _box(0, 0)[None], 4: _box(10, 0)[None]}
    (t,) = track_faces(dets)
    b = t.boxes_per_frame(6)
    assert b[2, 0] == pytest.approx(5.0)
    assert b[5, 0] == pytest.approx(10.0)  # held after the last detection


def test_shot_thresholds():
    cfg = ShotConfig()
    assert [shot_size(r, cfg) for r in (0.7, 0.3, 0.18, 0.1, 0.0, None)] == \
        ["close_up", "medium_close_up", "medium", "wide", "no_face", "no_face"]
    with pytest.raises(ValueError):
        ShotConfig(close_up=0.2, medium_close_up=0.3)


def test_missing_model_file_names_the_setting(tmp_path):
    with pytest.raises(FileNotFoundError, match="yunet_onnx"):
        make_detector(FacesConfig(backend="yunet", yunet_onnx=str(tmp_path / "nope.onnx")))
    assert isinstance(make_detector(FacesConfig()), HaarDetector)  # embedded default


# --- real clips -------------------------------------------------------------------------------

CLIPS = {
    "closeup_talk_hdtf_katiehill.mp4": "close_up",
    "medium_talk_latentsync_demo1.mp4": None,  # a wider class than close_up
    "medium_talk_latentsync_demo2.mp4": None,
    "cuts_nature_noperson_noaudio.mp4": "no_face",
}
WIDER = {"medium_close_up", "medium", "wide"}


def _classify(det, frames, cfg: FacesConfig):
    dets = detect_frames(det, frames, cfg.detect_every, cfg.min_face_px)
    chars = character_tracks(track_faces(dets, cfg.iou_threshold, cfg.max_gap), len(dets),
                             frames.shape[2], frames.shape[1], cfg.min_track_len, cfg.min_track_coverage)
    ratio = chars[0][1].height_ratio if chars else None
    return shot_size(ratio, ShotConfig()), count_faces(dets, chars)


@pytest.fixture(scope="module")
def shot_table(real_dir, weights_dir):
    table = {}
    for backend in ("scrfd", "yunet", "haar"):
        cfg = FacesConfig(backend=backend, scrfd_onnx=str(weights_dir / "scrfd_500m_bnkps.onnx"),
                          yunet_onnx=str(weights_dir / "face_detection_yunet_2023mar.onnx"))
        det = make_detector(cfg)
        for name in CLIPS:
            table[backend, name] = _classify(det, frames_25(real(real_dir, name), 3.0), cfg)
    return table


@pytest.mark.realdata
@pytest.mark.parametrize("backend", ["scrfd", "yunet", "haar"])
def test_shot_size_of_real_clips(shot_table, backend):
    for name, expected in CLIPS.items():
        shot, n = shot_table[backend, name]
        if expected is None:
            assert shot in WIDER, (backend, name, shot)
        else:
            assert shot == expected, (backend, name, shot)
        assert n == (0 if expected == "no_face" else 1), (backend, name, n)


@pytest.mark.realdata
def test_face_backends_agree_on_shot_class(shot_table):
    for name in CLIPS:
        classes = {shot_table[b, name][0] for b in ("scrfd", "yunet", "haar")}
        assert len(classes) == 1, (name, {b: shot_table[b, name] for b in ("scrfd", "yunet", "haar")})
