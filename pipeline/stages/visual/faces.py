"""Face detector backends behind one call: ``detect(frame_rgb) -> (N, 5) [x0, y0, x1, y1, score]``.

Production: insightface SCRFD from an onnx file (onnxruntime). Fallbacks needing no download
of ours: OpenCV's YuNet given its onnx file, or the Haar cascade that ships inside OpenCV.
Every backend reports a ``name`` that the stage writes into the row's ``backends``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import cv2
import numpy as np
from pydantic import Field

from schemas.base import Strict


class FacesConfig(Strict):
    # auto: SCRFD when scrfd_onnx is set, else YuNet when yunet_onnx is set, else the Haar
    # cascade that ships inside OpenCV (no download; labelled "opencv-haar" in backends).
    backend: Literal["auto", "scrfd", "yunet", "haar"] = "auto"
    scrfd_onnx: Optional[str] = None  # insightface SCRFD export (research licence: user-supplied)
    yunet_onnx: Optional[str] = None  # OpenCV zoo YuNet (face_detection_yunet_2023mar.onnx)
    # SCRFD-500M scores real faces 0.7-0.9 and background below 0.2; 0.5 is insightface's default.
    scrfd_score: float = Field(0.5, gt=0, lt=1)
    # YuNet below ~0.6 reports occasional false second faces on real clips; 0.7 keeps true ones (>0.9).
    yunet_score: float = Field(0.7, gt=0, lt=1)
    # Haar has no score; more neighbours = fewer false positives on texture (leaves, gratings).
    haar_min_neighbors: int = Field(6, ge=1)
    # One shared decode at this longest side feeds faces, mouth crops and motion: a face of a
    # full-body portrait shot is still ~80 px tall at 640, enough for detection and mouth motion.
    analysis_max_side: int = Field(640, ge=128)
    # Detect every Nth frame (boxes interpolated between): faces move little in 80 ms at 25 fps.
    detect_every: int = Field(2, ge=1)
    # Faces smaller than this (px at the analysis size) are too small to learn lip motion from.
    min_face_px: int = Field(24, ge=4)
    iou_threshold: float = Field(0.3, gt=0, lt=1)  # same face in consecutive detections
    # A track survives this many missed detections (blinks of the detector, brief occlusion).
    max_gap: int = Field(6, ge=0)
    # A track shorter than this many detections is a false positive, not a character.
    min_track_len: int = Field(5, ge=1)
    # A track counts as an on-screen character when present in this share of sampled frames.
    min_track_coverage: float = Field(0.3, gt=0, le=1)


class FaceDetector:
    name = "none"

    def detect(self, rgb: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    # the production detector is SCRFD; the OpenCV ones are the embedded defaults
    fallback = True

    def info(self) -> dict:
        return {"backend": self.name, "fallback": self.fallback}


def _require_file(path: Optional[str], what: str) -> Path:
    p = Path(path) if path else None
    if p is None or not p.is_file():
        raise FileNotFoundError(f"{what} not found at {path!r} (set visual.faces.{what} to an existing file)")
    return p


class ScrfdDetector(FaceDetector):
    name = "scrfd"
    fallback = False

    def __init__(self, onnx_path: str, score: float = 0.5, input_size: int = 640):
        # installed --no-deps; heavy, so lazy
        from insightface.model_zoo.scrfd import SCRFD

        self.path = _require_file(onnx_path, "scrfd_onnx")
        self.model = SCRFD(model_file=str(self.path))
        self.model.prepare(ctx_id=-1, input_size=(input_size, input_size), det_thresh=score)
        self.score = score

    def detect(self, rgb: np.ndarray) -> np.ndarray:
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)  # insightface swaps BGR->RGB itself
        det, _ = self.model.detect(bgr)
        if det is None or len(det) == 0:
            return np.zeros((0, 5), np.float32)
        return np.asarray(det[:, :5], np.float32)

    def info(self) -> dict:
        return {"backend": self.name, "fallback": self.fallback, "model": self.path.name}


class YunetDetector(FaceDetector):
    name = "opencv-yunet"

    def __init__(self, onnx_path: str, score: float = 0.7, nms: float = 0.3, top_k: int = 50):
        self.path = _require_file(onnx_path, "yunet_onnx")
        self.model = cv2.FaceDetectorYN.create(str(self.path), "", (320, 320), score, nms, top_k)
        self._size = (320, 320)

    def detect(self, rgb: np.ndarray) -> np.ndarray:
        h, w = rgb.shape[:2]
        if (w, h) != self._size:
            self.model.setInputSize((w, h))
            self._size = (w, h)
        _, faces = self.model.detect(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        if faces is None or len(faces) == 0:
            return np.zeros((0, 5), np.float32)
        x, y, bw, bh, score = faces[:, 0], faces[:, 1], faces[:, 2], faces[:, 3], faces[:, 14]
        return np.stack([x, y, x + bw, y + bh, score], 1).astype(np.float32)

    def info(self) -> dict:
        return {"backend": self.name, "fallback": self.fallback, "model": self.path.name}


class HaarDetector(FaceDetector):
    name = "opencv-haar"

    def __init__(self, min_neighbors: int = 6, min_size: int = 24):
        path = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"
        self.model = cv2.CascadeClassifier(str(path))
        if self.model.empty():
            raise RuntimeError(f"OpenCV Haar cascade missing at {path}")
        self.min_neighbors = min_neighbors
        self.min_size = min_size

    def detect(self, rgb: np.ndarray) -> np.ndarray:
        gray = cv2.equalizeHist(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
        boxes = self.model.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=self.min_neighbors,
                                            minSize=(self.min_size, self.min_size))
        if len(boxes) == 0:
            return np.zeros((0, 5), np.float32)
        b = np.asarray(boxes, np.float32)
        # The cascade has no score; 1.0 marks "accepted by all stages".
        return np.c_[b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3], np.ones(len(b), np.float32)]

    def info(self) -> dict:
        return {"backend": self.name, "fallback": True, "model": "haarcascade_frontalface_default.xml"}


def make_detector(cfg: FacesConfig) -> FaceDetector:
    """The configured backend; ``auto`` prefers SCRFD, then YuNet, then the built-in Haar cascade."""
    backend = cfg.backend
    if backend == "auto":
        backend = "scrfd" if cfg.scrfd_onnx else "yunet" if cfg.yunet_onnx else "haar"
    if backend == "scrfd":
        return ScrfdDetector(cfg.scrfd_onnx, cfg.scrfd_score)
    if backend == "yunet":
        return YunetDetector(cfg.yunet_onnx, cfg.yunet_score)
    return HaarDetector(cfg.haar_min_neighbors, cfg.min_face_px)


def detect_frames(det: FaceDetector, frames: np.ndarray, every: int, min_px: int) -> dict[int, np.ndarray]:
    """Detections on every ``every``-th frame: {frame index: (N, 5)}, faces under ``min_px`` dropped."""
    out: dict[int, np.ndarray] = {}
    for i in range(0, len(frames), max(1, every)):
        d = det.detect(frames[i])
        if len(d):
            d = d[(d[:, 3] - d[:, 1]) >= min_px]
        out[i] = d
    return out
