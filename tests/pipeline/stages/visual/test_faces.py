"""Face detection backends, IoU tracking and shot size."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.stages.visual.faces import (FaceDetector, FacesConfig, HaarDetector, ScrfdDetector, YunetDetector,
                                          detect_frames, detect_sampled, faces_agree, make_detector, sample_indices)
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


# --- sampled detection -------------------------------------------------------------------------

class ScriptedDetector(FaceDetector):
    """Boxes from a function of the frame index (frames are their own index), counting calls."""

    def __init__(self, boxes_at, batch_size=4):
        self.boxes_at, self.batch_size = boxes_at, batch_size
        self.seen: list[int] = []
        self.calls = 0

    def detect_batch(self, frames):
        self.calls += 1
        idx = [int(f[0, 0, 0]) for f in frames]
        self.seen += idx
        return [np.asarray(self.boxes_at(i), np.float32).reshape(-1, 5) for i in idx]


def _index_frames(n):
    return np.arange(n, dtype=np.uint8)[:, None, None, None].repeat(3, axis=3)


def test_detect_step_follows_the_clip_rate():
    cfg = FacesConfig(detect_fps=5.0)
    assert [cfg.detect_step(f) for f in (25.0, 30.0, 50.0, 4.0)] == [5, 6, 10, 1]
    assert FacesConfig(detect_fps=None, detect_every=3).detect_step(25.0) == 3
    assert sample_indices(12, 5) == [0, 5, 10, 11] and sample_indices(11, 5) == [0, 5, 10]


def test_detect_frames_keeps_its_contract():
    det = ScriptedDetector(lambda i: [_box(10, 10, s=20 if i % 2 else 40)], batch_size=3)
    d = detect_frames(det, _index_frames(10), 2, 30)
    assert sorted(d) == [0, 2, 4, 6, 8] and all(len(v) == 1 for v in d.values())
    assert det.calls == 2  # five frames in batches of three
    assert [len(v) for v in detect_frames(det, _index_frames(4), 1, 30).values()] == [1, 0, 1, 0]  # small faces dropped


def test_steady_faces_are_detected_at_the_sampled_rate_only():
    det = ScriptedDetector(lambda i: [_box(100 + i, 50, s=60)])  # a face drifting 1 px per frame
    d = detect_sampled(det, _index_frames(50), 25.0, FacesConfig(detect_fps=5.0))
    assert sorted(d) == [0, 5, 10, 15, 20, 25, 30, 35, 40, 45, 49]
    assert sorted(det.seen) == sorted(d)  # nothing detected twice, nothing in between


def test_changes_between_samples_are_refined_down_to_the_frame():
    def boxes(i):
        out = [_box(100, 50, s=60)]
        if i >= 13:  # a second face enters at frame 13
            out.append(_box(300, 60, s=50))
        if i >= 31:  # the first face jumps (a fast head turn) at frame 31
            out[0] = _box(140, 50, s=60)
        return out

    det = ScriptedDetector(boxes)
    cfg = FacesConfig(detect_fps=5.0)
    d = detect_sampled(det, _index_frames(50), 25.0, cfg)
    # bisection found the exact frame of each change: 12 and 13 (30 and 31) both detected
    assert {12, 13, 30, 31} <= set(d)
    assert len(d) < 25  # still about half the frames of per-frame detection
    tracks = track_faces(d, cfg.iou_threshold, cfg.max_gap)
    first_seen = sorted(t.frames[0] for t in tracks)
    assert 13 in first_seen  # the new face starts where it entered, not at the next sample
    # with no refinement the second face would appear only at the next sample (15)
    plain = detect_sampled(ScriptedDetector(boxes), _index_frames(50), 25.0, FacesConfig(detect_fps=5.0, refine=False))
    assert 13 not in plain and min(t.frames[0] for t in track_faces(plain) if t.frames[0] > 0) == 15


class LocalScriptedDetector(ScriptedDetector):
    """A scripted detector that can look locally: near a box it sees only the scripted faces
    that overlap the box grown by a face size on each side (as the Haar crop does)."""

    local = True

    def __init__(self, boxes_at):
        super().__init__(boxes_at, batch_size=1)
        self.near_seen: list[int] = []

    def detect_near(self, rgb, boxes):
        i = int(rgb[0, 0, 0])
        self.near_seen.append(i)
        grown = [np.array([x0 - (x1 - x0), y0 - (y1 - y0), x1 + (x1 - x0), y1 + (y1 - y0)]) for x0, y0, x1, y1 in boxes[:, :4]]
        found = [b for b in np.asarray(self.boxes_at(i), np.float32).reshape(-1, 5)
                 if any(b[0] < g[2] and b[2] > g[0] and b[1] < g[3] and b[3] > g[1] for g in grown)]
        return np.asarray(found, np.float32).reshape(-1, 5)


def test_a_local_detector_scans_whole_frames_at_the_scan_rate_only():
    det = LocalScriptedDetector(lambda i: [_box(100 + i, 50, s=60)])
    d = detect_sampled(det, _index_frames(50), 25.0, FacesConfig(detect_fps=5.0, scan_fps=1.0))
    assert sorted(d) == [0, 5, 10, 15, 20, 25, 30, 35, 40, 45, 49]
    assert det.seen == [0, 25, 49]  # full scans: one a second and the last frame
    assert sorted(det.near_seen) == [5, 10, 15, 20, 30, 35, 40, 45]
    assert all(len(v) == 1 and v[0, 0] == 100 + i for i, v in d.items())
    # without scan_fps every sample is a full scan, refinement included
    full = LocalScriptedDetector(lambda i: [_box(100, 50, s=60)] + ([_box(300, 60, s=50)] if i >= 13 else []))
    d = detect_sampled(full, _index_frames(50), 25.0, FacesConfig(detect_fps=5.0, scan_fps=None))
    assert full.near_seen == [] and {12, 13} <= set(full.seen)
    # a detector that cannot look locally keeps full detections on every sample
    plain = ScriptedDetector(lambda i: [_box(100 + i, 50, s=60)])
    detect_sampled(plain, _index_frames(50), 25.0, FacesConfig(detect_fps=5.0, scan_fps=1.0))
    assert sorted(plain.seen) == [0, 5, 10, 15, 20, 25, 30, 35, 40, 45, 49]


def test_a_face_entering_between_scans_is_found_where_it_enters():
    def boxes(i):
        return [_box(100, 50, s=60)] + ([_box(300, 60, s=50)] if i >= 13 else [])

    det = LocalScriptedDetector(boxes)
    cfg = FacesConfig(detect_fps=5.0, scan_fps=1.0)
    d = detect_sampled(det, _index_frames(50), 25.0, cfg)
    assert len(d[12]) == 1 and len(d[13]) == 2  # refined near the face the next scan has
    assert 13 in [t.frames[0] for t in track_faces(d, cfg.iou_threshold, cfg.max_gap)]
    assert det.seen == [0, 25, 49]


def test_nothing_is_looked_for_between_two_scans_without_faces():
    det = LocalScriptedDetector(lambda i: [_box(100, 50, s=60)] if 30 <= i <= 34 else [])
    d = detect_sampled(det, _index_frames(50), 25.0, FacesConfig(detect_fps=5.0, scan_fps=1.0))
    assert det.seen == [0, 25, 49] and det.near_seen == []
    assert all(len(v) == 0 for v in d.values())  # a 0.2 s face between empty scans: below a track's minimum


def test_faces_agree():
    a = np.stack([_box(0, 0), _box(200, 0)])
    assert faces_agree(a, a[::-1], 0.5)
    assert not faces_agree(a, a[:1], 0.5)
    assert not faces_agree(a, np.stack([_box(0, 0), _box(230, 0)]), 0.5)  # IoU 0.25
    assert faces_agree(np.zeros((0, 5)), np.zeros((0, 5)), 0.5)


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


def _yunet_path(weights_dir):
    return str(weights_dir / "face_detection_yunet_2023mar.onnx")


@pytest.mark.realdata
@pytest.mark.parametrize("name", ["closeup_talk_hdtf_katiehill.mp4", "medium_talk_latentsync_demo1.mp4",
                                  "cuts_nature_noperson_noaudio.mp4"])
def test_yunet_on_onnxruntime_matches_opencv_face_detector_yn(real_dir, weights_dir, name):
    """The batched YuNet restates cv2.FaceDetectorYN's pre/post-processing: same faces, boxes
    within rounding of OpenCV's own on real frames."""
    import cv2

    frames = frames_25(real(real_dir, name), 1.0)
    h, w = frames.shape[1:3]
    ref = cv2.FaceDetectorYN.create(_yunet_path(weights_dir), "", (w, h), 0.7, 0.3, 50)
    ours = YunetDetector(_yunet_path(weights_dir), 0.7).detect_batch(frames)
    for f, d in zip(frames, ours):
        r = ref.detect(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))[1]
        r = np.zeros((0, 15), np.float32) if r is None else r
        assert len(d) == len(r)
        if len(r):
            expect = np.c_[r[:, 0], r[:, 1], r[:, 0] + r[:, 2], r[:, 1] + r[:, 3], r[:, 14]]
            np.testing.assert_allclose(d, expect, atol=1e-2)


@pytest.mark.realdata
def test_scrfd_batch_matches_insightface(real_dir, weights_dir):
    import cv2
    from insightface.model_zoo.scrfd import SCRFD

    path = str(weights_dir / "scrfd_500m_bnkps.onnx")
    ref = SCRFD(model_file=path)
    ref.prepare(ctx_id=-1, input_size=(640, 640), det_thresh=0.5)
    frames = np.concatenate([frames_25(real(real_dir, "medium_talk_latentsync_demo2.mp4"), 0.4),
                             frames_25(real(real_dir, "medium_talk_latentsync_demo1.mp4"), 0.4)])
    ours = ScrfdDetector(path, 0.5).detect_batch(frames)
    assert sum(len(d) for d in ours) >= len(frames)  # a face in every frame
    for f, d in zip(frames, ours):
        np.testing.assert_allclose(d, ref.detect(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))[0], atol=1e-2)


@pytest.mark.realdata
@pytest.mark.parametrize("backend", ["scrfd", "yunet", "haar"])
def test_batched_detection_equals_one_at_a_time(real_dir, weights_dir, backend):
    cfg = FacesConfig(backend=backend, scrfd_onnx=str(weights_dir / "scrfd_500m_bnkps.onnx"),
                      yunet_onnx=_yunet_path(weights_dir), batch_size=8)
    det = make_detector(cfg)
    # one batch of two clips' frames: the close-up (512 x 512) and the top of a portrait clip
    # padded to the same size
    portrait = frames_25(real(real_dir, "medium_talk_latentsync_demo2.mp4"), 0.4)[:, :512]
    frames = np.concatenate([frames_25(real(real_dir, "closeup_talk_hdtf_katiehill.mp4"), 0.4),
                             np.pad(portrait, ((0, 0), (0, 0), (0, 512 - portrait.shape[2]), (0, 0)))])
    alone = [det.detect(f) for f in frames]
    together = det.detect_batch(frames)
    assert sum(len(a) for a in alone) >= len(frames) - 2
    for a, t in zip(alone, together):
        assert t.shape == a.shape
        np.testing.assert_allclose(t, a, atol=1e-3)
    assert det.info()["device"] == "cpu" if backend != "haar" else "device" not in det.info()


def test_onnx_sessions_follow_the_stage_device(monkeypatch):
    """A GPU worker's detector asks onnxruntime for CUDA on the GPU it was given; without the
    CUDA provider (the CPU wheel) or on a CPU worker it stays on the CPU."""
    import onnxruntime as ort

    from pipeline.stages.visual import faces

    seen = []
    monkeypatch.setattr(ort, "InferenceSession", lambda model, opts, providers: seen.append(providers))
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    faces._ort_session(b"model", "cuda:1")
    faces._ort_session(b"model", "cpu")
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    faces._ort_session(b"model", "cuda")
    assert seen == [[("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"],
                    ["CPUExecutionProvider"], ["CPUExecutionProvider"]]


@pytest.mark.realdata
@pytest.mark.parametrize("name", ["closeup_talk_hdtf_katiehill.mp4", "medium_talk_latentsync_demo2.mp4"])
def test_haar_near_a_known_face_finds_what_a_full_scan_finds(real_dir, name):
    frames = frames_25(real(real_dir, name), 4.0)  # at the analysis size
    det = HaarDetector()
    pairs = 0
    for k in range(0, len(frames) - 5, 10):
        before, full = det.detect(frames[k]), det.detect(frames[k + 5])
        if len(before) != 1 or len(full) != 1:
            continue  # a miss or a false second face: what refinement is for
        near = det.detect_near(frames[k + 5], before)
        assert len(near) == 1 and iou(near[0], full[0]) >= 0.8, (k, near, full)
        pairs += 1
    assert pairs >= 5
