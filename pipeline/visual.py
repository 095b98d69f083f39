"""The visual stage: one shared decode per clip feeding faces -> shot size -> lip-sync -> motion.

Rejections name their sub-stage in the ledger (``faces``/``motion``); a lip-sync below the
acceptance threshold does not reject, it only blocks st2v (the clip can still be t2v).
"""
from __future__ import annotations

import json
import logging
from typing import Optional

import numpy as np

from pipeline import media
from pipeline.config import VisualConfig
from pipeline.faces import FaceDetector, detect_frames, make_detector
from pipeline.motion import analyse_motion, backend_name as motion_backend
from pipeline.shot import shot_size
from pipeline.stage import ClipStage
from pipeline.sync import SyncResult, SyncScorer, shift_audio
from pipeline.tracking import character_tracks, count_faces, track_faces

log = logging.getLogger(__name__)

# Sync is scored for at most this many character tracks (the speaking one is chosen among them).
MAX_SYNC_TRACKS = 4


class VisualStage(ClipStage):
    name = "visual"
    columns = {
        "num_faces": None, "shot_size": None, "face_height_ratio": None, "faces": None,
        "sync_offset": None, "sync_conf": None, "sync_dist": None, "sync_shift_frames": None,
        "motion_score": None, "motion_class": None,
    }

    def __init__(self, cfg: Optional[VisualConfig] = None):
        super().__init__(cfg or VisualConfig())
        self.detector: Optional[FaceDetector] = None
        self.sync: Optional[SyncScorer] = None
        self.decode_passes = 0  # for benchmarks: decodes of clip video done by this stage

    def setup(self) -> None:
        self.detector = make_detector(self.cfg.faces)
        self.sync = SyncScorer(self.cfg.sync)

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
        frames, _ = media.decode_video(row["video"], width=aw, height=ah)
        return frames

    def process(self, row: dict) -> dict:
        if not row.get("video"):
            return self.reject_at("faces", "no_video_bytes")
        frames = self.decode(row)
        fps = float(row.get("fps") or 25.0)
        T, H, W = frames.shape[:3]
        fc = self.cfg.faces

        dets = detect_frames(self.detector, frames, fc.detect_every, fc.min_face_px)
        tracks = track_faces(dets, fc.iou_threshold, fc.max_gap)
        chars = character_tracks(tracks, len(dets), W, H, fc.min_track_len, fc.min_track_coverage)
        num_faces = count_faces(dets, chars)
        motion_score, motion_cls = analyse_motion(frames, self.cfg.motion)
        out = {"num_faces": num_faces, "motion_score": round(motion_score, 4), "motion_class": motion_cls,
               "_backend": self.backend()}

        if not chars:
            out.update(shot_size="no_face", face_height_ratio=0.0, faces="[]")
            return self.reject_at("faces", "no_face", **out)

        # Lip-sync per character track; the speaking track is the best-scoring one.
        results: dict[int, SyncResult] = {}
        pcm = row.get("audio_pcm")
        run_sync = (row.get("st2v_block") is None and row.get("has_audio", True)
                    and pcm is not None and len(pcm) > 0 and motion_cls == "normal")
        if run_sync:
            if abs(fps - 25.0) > 0.01:
                log.warning("visual: clip %s at %.3f fps; sync offsets assume 25 fps", row.get("clip_id"), fps)
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
            faces.append(d)
        out.update(shot_size=shot_size(primary.height_ratio, self.cfg.shot),
                   face_height_ratio=round(primary.height_ratio, 4), faces=json.dumps(faces))

        if motion_cls != "normal":
            return self.reject_at("motion", motion_cls, **out)
        if not results:
            return out  # no speech to sync (the speech stage already blocked st2v)

        best = results[speaking_id] if speaking_id is not None else max(results.values(), key=lambda r: r.conf)
        out.update(sync_offset=int(best.offset), sync_conf=round(best.conf, 4), sync_dist=round(best.dist, 4),
                   sync_shift_frames=0)
        if best.conf < self.sync.min_conf:
            return self.block_st2v(f"low_sync_conf {best.conf:.3f} < {self.sync.min_conf}", **out)
        if abs(best.offset) > self.cfg.sync.max_realign_offset:
            return self.block_st2v(f"sync_offset_out_of_range {best.offset}", **out)
        if abs(best.offset) > self.sync.realign_deadband:
            out.update(sync_shift_frames=int(best.offset), audio_pcm=shift_audio(pcm, best.offset, fps=25.0))
        return out
