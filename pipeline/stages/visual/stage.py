"""The visual stage: one shared decode per clip feeding motion -> faces -> shot size -> lip-sync
(motion comes measured by the clip cut, which already rejected still and chaotic windows).

Rejections name their sub-stage in the ledger (``faces``/``motion``); a lip-sync below the
acceptance threshold does not reject, it only blocks st2v (the clip can still be t2v).
"""
from __future__ import annotations

import json
import logging
from typing import Optional

import numpy as np

from common import media
from common.weights import model_file
from pipeline.engine.stage import Stage, StageResult
from pipeline.stages.visual.faces import FaceDetector, FacesConfig, detect_sampled, make_detector
from pipeline.stages.visual.motion import MotionConfig, analyse_motion
from pipeline.stages.visual.motion import backend_label as motion_backend
from pipeline.stages.visual.shot import ShotConfig, shot_size
from pipeline.stages.visual.sync import SyncConfig, SyncResult, SyncScorer, shift_audio
from pipeline.stages.visual.tracking import character_tracks, count_faces, track_faces
from schemas.base import Strict


class VisualConfig(Strict):
    faces: FacesConfig = FacesConfig()
    shot: ShotConfig = ShotConfig()
    sync: SyncConfig = SyncConfig()
    motion: MotionConfig = MotionConfig()


log = logging.getLogger(__name__)

# Sync is scored for at most this many character tracks (the speaking one is chosen among them).
MAX_SYNC_TRACKS = 4


def resolve_models(cfg: VisualConfig, models_dir: Optional[str] = None) -> VisualConfig:
    """The config with its model fields (paths or registry names) resolved to files. Raises
    ModelMissing naming the fix when a configured one is absent."""
    v = cfg.model_copy(deep=True)
    if v.faces.scrfd_onnx:
        # a fetched insightface pack holds the detector (det_*.onnx) beside recognition models
        v.faces.scrfd_onnx = model_file(v.faces.scrfd_onnx, "det_*.onnx", models_dir)
    if v.faces.yunet_onnx:
        v.faces.yunet_onnx = model_file(v.faces.yunet_onnx, "*.onnx", models_dir)
    if v.sync.syncnet_checkpoint:
        v.sync.syncnet_checkpoint = model_file(v.sync.syncnet_checkpoint, "*.model", models_dir)
    return v


class VisualStage(Stage):
    name = "visual"
    columns = {
        "num_faces": None, "shot_size": None, "face_height_ratio": None, "faces": None,
        "sync_offset": None, "sync_conf": None, "sync_dist": None, "sync_shift_frames": None,
        "motion_score": None, "motion_class": None, "face_tracks": None,
    }

    def __init__(self, cfg: Optional[VisualConfig] = None, device: str = "cpu", models_dir: Optional[str] = None):
        super().__init__(cfg or VisualConfig(), device, models_dir)
        self.detector: Optional[FaceDetector] = None
        self.sync: Optional[SyncScorer] = None
        self.decode_passes = 0  # for benchmarks: decodes of clip video done by this stage

    @classmethod
    def from_config(cls, cfg, device: str = "cpu") -> "VisualStage":
        return cls(resolve_models(cfg.visual, cfg.run.models_dir), device, cfg.run.models_dir)

    def setup(self) -> None:
        self.detector = make_detector(self.cfg.faces, self.device)
        self.sync = SyncScorer(self.cfg.sync, self.device)

    def backend(self) -> dict:
        return {"faces": self.detector.info() if self.detector else None,
                "sync": self.sync.info() if self.sync else None,
                "motion": motion_backend(self.cfg.motion)}

    def decode(self, row: dict) -> np.ndarray:
        w, h = int(row.get("width") or 0), int(row.get("height") or 0)
        if not w or not h:
            info = media.probe(row["video"])
            w, h = info.width, info.height
        aw, ah = media.fit_size(w, h, self.cfg.faces.analysis_max_side)
        self.decode_passes += 1
        frames, _ = media.decode_video(row["video"], width=aw, height=ah, expected_frames=row.get("num_frames"))
        return frames

    def process(self, row: dict) -> StageResult:
        if not row.get("video"):
            return StageResult.rejected("no_video_bytes", substage="faces")
        frames = self.decode(row)
        T, H, W = frames.shape[:3]
        fc = self.cfg.faces

        # motion first: a still or chaotic clip is rejected whatever its faces, and flow on the
        # small gray frames costs a fraction of face detection. The cut measures it on the
        # pictures it encodes (and rejects stills unencoded); a row made elsewhere is measured here.
        if row.get("motion_class") is not None:
            motion_score, motion_cls = float(row["motion_score"]), str(row["motion_class"])
        else:
            motion_score, motion_cls = analyse_motion(frames, self.cfg.motion)
        out = {"motion_score": round(motion_score, 4), "motion_class": motion_cls}
        if motion_cls != "normal":
            return StageResult.rejected(motion_cls, substage="motion", **out)

        dets = detect_sampled(self.detector, frames, float(row.get("fps") or media.VIDEO_FPS), fc)
        tracks = track_faces(dets, fc.iou_threshold, fc.max_gap)
        chars = character_tracks(tracks, len(dets), W, H, fc.min_track_len, fc.min_track_coverage)
        out["num_faces"] = count_faces(dets, chars)

        if not chars:
            out.update(shot_size="no_face", face_height_ratio=0.0, faces="[]")
            return StageResult.rejected("no_face", substage="faces", **out)

        # Lip-sync per character track; the speaking track is the best-scoring one.
        results: dict[int, SyncResult] = {}
        pcm = row.get("audio_pcm")
        run_sync = row.get("st2v_block") is None and row.get("has_audio", True) and pcm is not None and len(pcm) > 0
        if run_sync:
            for t, _ in chars[:MAX_SYNC_TRACKS]:
                results[t.track_id] = self.sync.score(frames, t.boxes_per_frame(T), np.asarray(pcm, np.float32))

        speaking_id = None
        if results:
            speaking_id = max(results, key=lambda k: results[k].conf)
            if results[speaking_id].conf < self.sync.min_conf:
                speaking_id = None
        # Speaking track first, then the rest by dominance. Shot size stays with the dominant
        # (largest, longest) track: a weak sync score must not let a small false face set it.
        order = sorted(chars, key=lambda ts: ts[0].track_id != speaking_id)
        primary = chars[0][1]
        faces = []
        for t, s in order:
            d = s.to_json()
            r = results.get(t.track_id)
            d["speaking"] = t.track_id == speaking_id
            d["sync_conf"] = round(r.conf, 4) if r is not None else None
            d["sync_pass"] = None if r is None else bool(r.conf >= self.sync.min_conf
                                                         and abs(r.offset) <= self.cfg.sync.max_realign_offset)
            faces.append(d)
        out.update(shot_size=shot_size(primary.height_ratio, self.cfg.shot),
                   face_height_ratio=round(primary.height_ratio, 4), faces=json.dumps(faces),
                   face_tracks=[t.handover(T, W, H, fc.detect_every) for t, _ in chars])

        if not results:
            return StageResult.kept(**out)  # no speech to sync (the speech stage already blocked st2v)

        best = results[speaking_id] if speaking_id is not None else max(results.values(), key=lambda r: r.conf)
        out.update(sync_offset=int(best.offset), sync_conf=round(best.conf, 4), sync_dist=round(best.dist, 4),
                   sync_shift_frames=0)
        if best.conf < self.sync.min_conf:
            return StageResult.st2v_blocked(f"low_sync_conf {best.conf:.3f} < {self.sync.min_conf}", **out)
        if abs(best.offset) > self.cfg.sync.max_realign_offset:
            return StageResult.st2v_blocked(f"sync_offset_out_of_range {best.offset}", **out)
        if abs(best.offset) > self.sync.realign_deadband:
            out.update(sync_shift_frames=int(best.offset), audio_pcm=shift_audio(pcm, best.offset))
        return StageResult.kept(**out)
