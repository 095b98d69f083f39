"""The visual stage on rows built from the real clips: one decode, faces -> shot ->
sync -> motion, ledger sub-stages, st2v blocking and audio re-alignment."""
from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.stages.visual.faces import FacesConfig
from pipeline.stages.visual.stage import VisualConfig, VisualStage
from pipeline.stages.visual.sync import SyncConfig, shift_audio
from tests.helpers.visual_clips import frames_25, make_row, pcm_for, real, side_by_side

KATIE = "closeup_talk_hdtf_katiehill.mp4"


@pytest.fixture(scope="module")
def yunet_cfg(weights_dir) -> VisualConfig:
    return VisualConfig(faces=FacesConfig(yunet_onnx=str(weights_dir / "face_detection_yunet_2023mar.onnx")))


@pytest.fixture(scope="module")
def stage(yunet_cfg) -> VisualStage:
    return VisualStage(yunet_cfg)


@pytest.fixture(scope="module")
def katie(real_dir):
    name = real(real_dir, KATIE)
    frames = frames_25(name, 8.0)
    return frames, pcm_for(name, len(frames))


@pytest.fixture(scope="module")
def katie_row(stage, katie):
    frames, pcm = katie
    row = make_row(frames, pcm.copy())
    before = stage.decode_passes
    stage.run([row])
    row["_decodes"] = stage.decode_passes - before
    row["_pcm_in"] = pcm
    return row


@pytest.mark.realdata
def test_talking_close_up(katie_row):
    row = katie_row
    assert row["reject_stage"] is None and row["st2v_block"] is None, row.get("reject_reason")
    assert row["num_faces"] == 1 and row["shot_size"] == "close_up"
    assert row["motion_class"] == "normal" and row["motion_score"] > 0.03
    assert row["_decodes"] == 1  # faces, sync and motion share one decode
    faces = json.loads(row["faces"])
    assert len(faces) == 1 and faces[0]["speaking"] and faces[0]["sync_conf"] == row["sync_conf"]
    assert set(faces[0]) >= {"track_id", "coverage", "height_ratio", "center", "bbox_mean", "speaking", "sync_conf"}
    assert faces[0]["coverage"] > 0.9 and 0.3 < faces[0]["center"][0] < 0.7
    backends = json.loads(row["backends"])["visual"]
    assert backends["faces"]["backend"] == "opencv-yunet"
    assert backends["sync"]["backend"] == "av-correlation" and backends["motion"]["backend"] == "opencv-dis"
    assert backends["faces"]["fallback"] and backends["sync"]["fallback"] and not backends["motion"]["fallback"]


@pytest.mark.realdata
def test_offset_inside_the_weight_free_error_is_recorded_not_applied(katie_row):
    # The aligned close-up measures a small offset (-2) that its lip releases show is bias.
    row = katie_row
    deadband = SyncConfig().avcorr_realign_deadband
    assert row["sync_conf"] >= SyncConfig().avcorr_min_conf
    assert row["sync_offset"] != 0 and abs(row["sync_offset"]) <= deadband
    assert row["sync_shift_frames"] == 0
    assert np.array_equal(row["audio_pcm"], row["_pcm_in"])


@pytest.mark.realdata
def test_audio_is_realigned_by_an_offset_beyond_the_error(stage, katie):
    frames, pcm = katie
    late = shift_audio(pcm, 8)  # the audio arrives 8 frames late
    row = make_row(frames, late.copy())
    stage.run([row])
    assert row["st2v_block"] is None, row["st2v_block"]
    assert -11 <= row["sync_offset"] <= -7  # -8, plus the clip's own bias of about -2
    assert row["sync_shift_frames"] == row["sync_offset"]
    assert len(row["audio_pcm"]) == len(late)
    assert np.array_equal(row["audio_pcm"], shift_audio(late, row["sync_offset"]))
    # Speech moved back towards the picture: the re-aligned audio is the original, advanced
    # by the residual bias, wherever the shift did not run off the end.
    residual = row["sync_offset"] + 8
    assert np.array_equal(row["audio_pcm"][: len(pcm) - 11 * 640], shift_audio(pcm, residual)[: len(pcm) - 11 * 640])


@pytest.mark.realdata
def test_low_sync_blocks_st2v_without_rejecting(yunet_cfg, katie):
    frames, pcm = katie
    cfg = yunet_cfg.model_copy(deep=True)
    cfg.sync.avcorr_min_conf = 99.0  # above any z-score this backend can give
    row = make_row(frames[:100], pcm[: 100 * 640].copy())
    VisualStage(cfg).run([row])
    assert row["reject_stage"] is None
    assert row["st2v_block"].startswith("visual: low_sync_conf")
    assert row["sync_conf"] is not None and np.array_equal(row["audio_pcm"], pcm[: 100 * 640])
    assert row["sync_shift_frames"] == 0


@pytest.mark.realdata
def test_no_speech_skips_sync(stage, katie):
    frames, _ = katie
    row = make_row(frames[:75], None)  # no audio stream: the speech stage blocked st2v already
    stage.run([row])
    assert row["reject_stage"] is None and row["st2v_block"] == "no_audio_stream"
    assert row["sync_offset"] is None and row["sync_conf"] is None and row["sync_dist"] is None
    assert row["shot_size"] == "close_up" and json.loads(row["faces"])[0]["sync_conf"] is None


@pytest.mark.realdata
def test_still_frame_with_speech_is_rejected_as_static(stage, katie):
    frames, pcm = katie
    still = np.repeat(frames[60:61], 100, axis=0)
    row = make_row(still, pcm[: 100 * 640].copy())
    stage.run([row])
    assert (row["reject_stage"], row["reject_reason"]) == ("motion", "static")
    assert row["motion_score"] < 0.03
    assert row["num_faces"] is None and row["shot_size"] is None  # rejected before any face detection


@pytest.mark.realdata
def test_no_person_is_rejected_at_faces(real_dir):
    frames = frames_25(real(real_dir, "cuts_nature_noperson_noaudio.mp4"), 3.0)
    row = make_row(frames, None)
    VisualStage().run([row])  # embedded default: OpenCV Haar, labelled
    assert (row["reject_stage"], row["reject_reason"]) == ("faces", "no_face")
    assert row["num_faces"] == 0 and row["shot_size"] == "no_face"
    assert json.loads(row["backends"])["visual"]["faces"]["backend"] == "opencv-haar"


@pytest.mark.realdata
def test_two_faces_speaking_track_chosen_by_sync(yunet_cfg, katie):
    frames, pcm = katie
    # left: the speaker whose audio we use; right: the same person 4 s out of step (the clip
    # rolled by 100 frames), mirrored. The whole 8 s: the weight-free sync backend needs several
    # seconds of speech to rise above chance (its confidence is a z-score against far shifts).
    # Boxes from every frame: with 5 fps detection the weight-free scores of the two faces tie
    # (2.92 / 2.94) on this clip; in the pipeline the speakers stage (LR-ASD) names who speaks
    # (tests/pipeline/stages/visual/test_speaker_composites.py), this tests the sync choice.
    cfg = yunet_cfg.model_copy(update={"faces": yunet_cfg.faces.model_copy(update={"detect_fps": None, "detect_every": 1})})
    both = side_by_side(frames, np.concatenate([frames[100:], frames[:100]])[:, :, ::-1])
    row = make_row(both, pcm.copy())
    VisualStage(cfg).run([row])
    assert row["reject_stage"] is None and row["num_faces"] == 2
    faces = json.loads(row["faces"])
    assert len(faces) == 2
    assert faces[0]["speaking"] and not faces[1]["speaking"]
    assert faces[0]["sync_conf"] > faces[1]["sync_conf"]
    assert faces[0]["center"][0] < 0.5 < faces[1]["center"][0]  # the left face is the speaker
    assert row["sync_conf"] == faces[0]["sync_conf"]


def test_undecodable_video_becomes_an_error_row():
    row = {"clip_id": "bad", "video": b"not an mp4", "fps": 25.0, "width": 64, "height": 64,
           "audio_pcm": np.zeros(0, np.float32), "has_audio": False, "st2v_block": "no_audio_stream",
           "reject_stage": None, "backends": "{}"}
    VisualStage().run([row])
    assert row["status"] == "error" and row["reject_stage"] == "visual"
    assert "MediaError" in row["reject_reason"]
