"""Faces at the rate they change: the visual stage with detection at ``detect_fps`` (5 fps,
refined where faces change) against detection on every frame, on the real clips.

What must not change: shot size, face count, rejections, whether the clip can be st2v (the
lip-sync verdict) and, where it can, the lip-sync offset. The confidence itself moves by the
scorer's own spread (per-frame boxes jitter, interpolated ones do not; every-frame vs
every-second-frame detection moves it as much), well inside the margin that decides.
"""
from __future__ import annotations

import pytest

from pipeline.stages.visual.faces import FacesConfig
from pipeline.stages.visual.stage import VisualConfig, VisualStage
from tests.helpers.visual_clips import frames_25, make_row, pcm_for, real

TALKING = ["closeup_talk_hdtf_katiehill.mp4", "medium_talk_latentsync_demo1.mp4", "medium_talk_latentsync_demo2.mp4"]
OTHERS = ["face_music_only_lp_d14.mp4", "cuts_nature_noperson_noaudio.mp4"]
# |conf(sampled) - conf(per frame)| seen on the talking clips: <= 0.22 (YuNet and Haar; the
# largest on medium_talk_latentsync_demo2, whose verdict is the same either way)
CONF_SPREAD = 0.3


class CountingDetector:
    """Counts full-frame detections (``frames``) and local looks near known faces (``near``)."""

    def __init__(self, det):
        self.det, self.batch_size, self.name, self.local = det, det.batch_size, det.name, det.local
        self.frames = self.near = 0

    def detect_batch(self, frames):
        self.frames += len(frames)
        return self.det.detect_batch(frames)

    def detect_near(self, frame, boxes):
        self.near += 1
        return self.det.detect_near(frame, boxes)

    def info(self):
        return self.det.info()


def _run(faces: FacesConfig, rows: list[dict]) -> tuple[list[dict], int]:
    st = VisualStage(VisualConfig(faces=faces))
    st.setup()
    st._ready = True
    st.detector = CountingDetector(st.detector)
    out = [st.run([dict(r)])[0] for r in rows]
    return out, st.detector.frames


@pytest.fixture(scope="module")
def rows(real_dir):
    out = {}
    for name in TALKING + OTHERS:
        frames = frames_25(real(real_dir, name), 8.0)
        pcm = None if "noaudio" in name else pcm_for(real(real_dir, name), len(frames))
        out[name] = make_row(frames, None if pcm is None else pcm.copy(), clip_id=name)
    return out


def _compare(faces: FacesConfig, rows: dict, names: list[str], max_share: float):
    picked = [rows[n] for n in names]
    every, n_every = _run(faces.model_copy(update={"detect_fps": None, "detect_every": 1}), picked)
    sampled, n_sampled = _run(faces.model_copy(update={"detect_fps": 5.0}), picked)
    for name, a, b in zip(names, every, sampled):
        for col in ("shot_size", "num_faces", "reject_stage", "reject_reason"):
            assert a[col] == b[col], (name, col, a[col], b[col])
        assert (a["st2v_block"] is None) == (b["st2v_block"] is None), (name, a["st2v_block"], b["st2v_block"])
        if a["st2v_block"] is None and a["sync_conf"] is not None:  # sync decided in favour: offset and shift kept
            assert (a["sync_offset"], a["sync_shift_frames"]) == (b["sync_offset"], b["sync_shift_frames"]), name
            assert abs(a["sync_conf"] - b["sync_conf"]) <= CONF_SPREAD, (name, a["sync_conf"], b["sync_conf"])
    # 5 of 25 frames, and what refinement adds where the detector's answer changes
    assert n_sampled <= max_share * n_every, (n_sampled, n_every)
    return every, sampled


@pytest.mark.realdata
def test_sampled_detection_gives_per_frame_results_yunet(rows, weights_dir):
    faces = FacesConfig(yunet_onnx=str(weights_dir / "face_detection_yunet_2023mar.onnx"))
    every, _ = _compare(faces, rows, TALKING + OTHERS, 0.25)
    # the comparison is about real outcomes: the clear talkers pass lip-sync, the others do not.
    # demo1's 8 s sit at the weight-free backend's threshold (2.45-2.55 against 2.5 as the test
    # clip's encode varies with the encoder's threads): only that both modes agree is asserted
    # (in _compare); the speakers stage is what judges such clips
    verdicts = [r["st2v_block"] is None for r in every]
    assert verdicts[:1] + verdicts[2:] == [True, True, False, False]
    assert [r["shot_size"] for r in every][-1] == "no_face"


@pytest.mark.realdata
@pytest.mark.slow
def test_sampled_detection_gives_per_frame_results_haar(rows):
    # the embedded default; its per-frame run is slow (10-20 fps), so talking clips only. The
    # cascade misses a face in a frame now and then, and each miss is refined around. Whole
    # frames are scanned once a second; the samples between look near known faces.
    every, _ = _compare(FacesConfig(backend="haar"), rows, TALKING, 0.1)
    verdicts = [r["st2v_block"] is None for r in every]
    assert verdicts[0] and verdicts[2]  # demo1 (index 1): see the YuNet case
