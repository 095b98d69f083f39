"""Face detector backends behind one call: ``detect_batch(frames) -> [(N, 5) [x0, y0, x1, y1, score]]``.

Production: insightface SCRFD from an onnx file. Fallbacks needing no download of ours:
OpenCV's YuNet given its onnx file, or the Haar cascade that ships inside OpenCV. Every
backend reports a ``name`` that the stage writes into the row's ``backends``.

The two ONNX detectors run on onnxruntime, on the stage's device (CUDA when the worker has a
GPU and onnxruntime-gpu is installed, else CPU), a batch of frames per call. Their libraries
(insightface's ``SCRFD.detect``, OpenCV's ``FaceDetectorYN``) take one image at a time, so the
pre- and post-processing here restate theirs for a batch; tests check the boxes against the
libraries' own on real frames. The Haar cascade has no batch form: it loops.

Faces are found at the rate they change (:func:`detect_sampled`): on frames sampled at
``detect_fps``, with extra detections only between samples whose faces disagree; tracking
(``tracking.track_faces``) links the detections and interpolates one box per frame.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional, Sequence

import cv2
import numpy as np
from pydantic import Field

from common.threads import worker_threads
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
    # Detection rate in frames per second (null: every detect_every-th frame). A talking head
    # moves a few pixels in 200 ms, so boxes interpolated between 5 fps detections stay on the
    # face; where they may not (faces appear, leave or move fast between two samples) the
    # frames in between are detected too (refine_iou). On the real clips 5 fps gives the
    # per-frame shot sizes and lip-sync results (tests/pipeline/stages/visual/test_face_rate.py)
    # for a fifth to a quarter of the detections (benchmarks/bench_batching.py).
    detect_fps: Optional[float] = Field(5.0, gt=0)
    # Detect every Nth frame when detect_fps is null (also what detect_frames callers pass).
    detect_every: int = Field(2, ge=1)
    # Between two samples whose faces match below this IoU (or differ in number) the frames in
    # between are detected as well, halving the gap until they agree. 0.5 sits above the
    # tracker's own link threshold (iou_threshold), so a face is never interpolated across a
    # jump the tracker could not follow.
    refine_iou: float = Field(0.5, ge=0, lt=1)
    refine: bool = True  # false: the sampled frames only, interpolated in between
    # Full-frame scans per second (null: every sample is one). Between two scans, a detector
    # that can look locally (Haar) looks only around the faces of the sample before and of the
    # next scan, at scales near their size: a fraction of a full scan, whose small scales are
    # most of its cost. A face that comes or goes is present at one of the two scans, so it is
    # still found at the sample where it does (tests/pipeline/stages/visual/test_face_rate.py).
    scan_fps: Optional[float] = Field(1.0, gt=0)
    # Frames per detector call (onnx detectors; Haar loops) on a CPU worker: one 640 px frame
    # already fills the cores and bigger batches only lose cache (YuNet at batch 8 runs at
    # ~0.8x, at 32 at ~0.5x of batch 1: benchmarks/bench_batching.py).
    batch_size: int = Field(1, ge=1)
    # ... and on a GPU worker, where a batch is what fills the device.
    gpu_batch_size: int = Field(16, ge=1)
    # Faces smaller than this (px at the analysis size) are too small to learn lip motion from.
    min_face_px: int = Field(24, ge=4)
    iou_threshold: float = Field(0.3, gt=0, lt=1)  # same face in consecutive detections
    # A track survives this many missed detections (blinks of the detector, brief occlusion):
    # 1.2 s at 5 fps, fewer seconds where refinement detected densely (faces were changing).
    max_gap: int = Field(6, ge=0)
    # A track shorter than this many detections is a false positive, not a character (1 s at 5 fps).
    min_track_len: int = Field(5, ge=1)
    # A track counts as an on-screen character when present in this share of sampled frames.
    min_track_coverage: float = Field(0.3, gt=0, le=1)

    def detect_step(self, fps: float) -> int:
        """Frames between two sampled detections at a clip's frame rate."""
        if self.detect_fps is None:
            return self.detect_every
        return max(1, int(round(float(fps) / self.detect_fps)))

    def scan_every(self) -> int:
        """Samples between two full-frame scans (1: every sample is a full scan)."""
        if self.detect_fps is None or self.scan_fps is None:
            return 1
        return max(1, int(round(self.detect_fps / self.scan_fps)))


def _ort_session(model, device: str = "cpu"):
    """An onnxruntime session on ``device``: CUDA (the GPU Ray assigned, index from the
    device string) when onnxruntime offers it, else CPU.

    On the CPU it uses the worker's thread budget (``common.threads``: as many threads as CPUs
    Ray reserved for the worker), and its threads sleep rather than spin
    between ops: stage workers share a node's cores, and spinning threads steal them from their
    neighbours. Warnings about the declared output shapes of a re-shaped model are silenced
    (level 3: errors only)."""
    import onnxruntime as ort

    providers: list = ["CPUExecutionProvider"]
    if str(device).startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        idx = int(str(device).split(":")[1]) if ":" in str(device) else 0
        providers = [("CUDAExecutionProvider", {"device_id": idx}), "CPUExecutionProvider"]
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = worker_threads()
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model, opts, providers=providers)


class FaceDetector:
    name = "none"
    # the production detector is SCRFD; the OpenCV ones are the embedded defaults
    fallback = True
    batch_size = 1  # frames per detect_batch call that detect_frames makes

    def detect(self, rgb: np.ndarray) -> np.ndarray:
        return self.detect_batch(rgb[None])[0]

    def detect_batch(self, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
        """(N, 5) boxes per RGB frame; the same as :meth:`detect` on each frame."""
        return [self.detect(f) for f in frames]

    # whether detect_near looks only near the given boxes (cheaper than a full frame)
    local = False

    def detect_near(self, rgb: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Faces near ``boxes`` (N, >=4) of an earlier frame; a full detection unless the
        backend can look locally."""
        return self.detect(rgb)

    def info(self) -> dict:
        return {"backend": self.name, "fallback": self.fallback}


def _empty() -> np.ndarray:
    return np.zeros((0, 5), np.float32)


def _stack_rgb(frames: Sequence[np.ndarray]) -> np.ndarray:
    arr = np.asarray(frames)
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"expected RGB frames (B, H, W, 3), got {arr.shape}")
    return arr


def _require_file(path: Optional[str], what: str) -> Path:
    p = Path(path) if path else None
    if p is None or not p.is_file():
        raise FileNotFoundError(f"{what} not found at {path!r} (set visual.faces.{what} to an existing file)")
    return p


class ScrfdDetector(FaceDetector):
    """insightface SCRFD (``*_bnkps`` exports: 3 strides, 2 anchors per cell, scores, boxes and
    keypoints per stride, dynamic batch). Frames are letterboxed into ``input_size`` as
    insightface's ``SCRFD.detect`` does (resize keeping aspect, top-left, zero fill; then
    ``(rgb - 127.5) / 128``), decoded with its distance-to-box rule and NMS (IoU 0.4)."""

    name = "scrfd"
    fallback = False
    strides = (8, 16, 32)

    def __init__(self, onnx_path: str, score: float = 0.5, input_size: int = 640, device: str = "cpu",
                 batch_size: int = 1, nms: float = 0.4):
        self.path = _require_file(onnx_path, "scrfd_onnx")
        self.session = _ort_session(str(self.path), device)
        self.input_name = self.session.get_inputs()[0].name
        self.outputs = [o.name for o in self.session.get_outputs()]
        if len(self.outputs) not in (6, 9):
            raise ValueError(f"{self.path.name}: not a 3-stride SCRFD export ({len(self.outputs)} outputs)")
        self.score, self.size, self.nms, self.batch_size = score, int(input_size), nms, batch_size
        self._centres: dict[tuple, np.ndarray] = {}

    def _anchor_centres(self, h: int, w: int, stride: int, anchors: int) -> np.ndarray:
        key = (h, w, stride, anchors)
        if key not in self._centres:
            c = (np.stack(np.mgrid[:h, :w][::-1], axis=-1).astype(np.float32) * stride).reshape(-1, 2)
            self._centres[key] = np.repeat(c, anchors, axis=0)  # each cell's anchors side by side
        return self._centres[key]

    def detect_batch(self, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
        arr = _stack_rgb(frames)
        B, H, W = arr.shape[:3]
        if H / W > 1.0:  # the square input's side bounds the longer side
            nh, nw = self.size, int(self.size / (H / W))
        else:
            nw, nh = self.size, int(self.size * (H / W))
        scale = nh / H
        blob = np.zeros((B, self.size, self.size, 3), np.float32)
        for i, f in enumerate(arr):
            blob[i, :nh, :nw] = cv2.resize(f, (nw, nh))
        blob[:] -= 127.5
        blob *= np.float32(1.0 / 128.0)  # the zero fill becomes (0 - 127.5) / 128, as in insightface
        outs = self.session.run(self.outputs, {self.input_name: np.ascontiguousarray(blob.transpose(0, 3, 1, 2))})
        return [self._decode([o[b] for o in outs], scale) for b in range(B)]

    def _decode(self, outs: list[np.ndarray], scale: float) -> np.ndarray:
        dets = []
        for k, stride in enumerate(self.strides):
            scores, dist = outs[k][:, 0], outs[k + 3] * stride
            hw = (self.size // stride) * (self.size // stride)
            centres = self._anchor_centres(self.size // stride, self.size // stride, stride, len(scores) // hw)
            keep = np.where(scores >= self.score)[0]
            c, d = centres[keep], dist[keep]
            boxes = np.stack([c[:, 0] - d[:, 0], c[:, 1] - d[:, 1], c[:, 0] + d[:, 2], c[:, 1] + d[:, 3]], -1)
            dets.append(np.hstack([boxes / scale, scores[keep, None]]))
        det = np.vstack(dets).astype(np.float32)
        if not len(det):
            return _empty()
        det = det[np.argsort(-det[:, 4], kind="stable")]
        return det[_nms(det, self.nms)]

    def info(self) -> dict:
        return {"backend": self.name, "fallback": self.fallback, "model": self.path.name,
                "device": _provider_device(self.session)}


def _nms(det: np.ndarray, thresh: float) -> list[int]:
    """Greedy NMS over score-sorted (N, 5) boxes, insightface's variant (pixel-inclusive areas)."""
    x1, y1, x2, y2 = det[:, 0], det[:, 1], det[:, 2], det[:, 3]
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.arange(len(det))
    keep = []
    while order.size:
        i = order[0]
        keep.append(int(i))
        w = np.maximum(0.0, np.minimum(x2[i], x2[order[1:]]) - np.maximum(x1[i], x1[order[1:]]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[order[1:]]) - np.maximum(y1[i], y1[order[1:]]) + 1)
        inter = w * h
        order = order[1:][inter / (areas[i] + areas[order[1:]] - inter) <= thresh]
    return keep


def _provider_device(session) -> str:
    return "cuda" if session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"


def _dynamic_input(path: Path) -> bytes:
    """The YuNet graph with its fixed 1x3x640x640 input made (N, 3, H, W). Its heads flatten
    each stride to (1, N*H*W, k) in batch-major order, so a batch's rows split back per frame."""
    import onnx

    m = onnx.load(str(path))
    for d, name in zip(m.graph.input[0].type.tensor_type.shape.dim, ("N", None, "H", "W")):
        if name:
            d.ClearField("dim_value")
            d.dim_param = name
    for o in m.graph.output:
        o.type.tensor_type.ClearField("shape")
    del m.graph.value_info[:]
    return m.SerializeToString()


class YunetDetector(FaceDetector):
    """OpenCV zoo YuNet. As ``cv2.FaceDetectorYN``: the BGR frame zero-padded right and below
    to a multiple of 32, score = sqrt(cls * obj), boxes from the cell offsets, then OpenCV's NMS
    on integer boxes (``cv2.dnn.NMSBoxes``)."""

    name = "opencv-yunet"
    strides = (8, 16, 32)

    def __init__(self, onnx_path: str, score: float = 0.7, nms: float = 0.3, top_k: int = 50,
                 device: str = "cpu", batch_size: int = 1):
        self.path = _require_file(onnx_path, "yunet_onnx")
        self.session = _ort_session(_dynamic_input(self.path), device)
        self.input_name = self.session.get_inputs()[0].name
        names = {o.name for o in self.session.get_outputs()}
        self.outputs = [f"{k}_{s}" for k in ("cls", "obj", "bbox", "kps") for s in self.strides]
        if not set(self.outputs) <= names:
            raise ValueError(f"{self.path.name}: not a YuNet 2023 export (outputs {sorted(names)})")
        self.score, self.nms, self.top_k, self.batch_size = score, nms, top_k, batch_size

    def detect_batch(self, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
        arr = _stack_rgb(frames)
        B, H, W = arr.shape[:3]
        ph, pw = (H - 1) // 32 * 32 + 32, (W - 1) // 32 * 32 + 32
        blob = np.zeros((B, 3, ph, pw), np.float32)
        blob[:, :, :H, :W] = arr[..., ::-1].transpose(0, 3, 1, 2)  # RGB -> BGR planes
        outs = dict(zip(self.outputs, self.session.run(self.outputs, {self.input_name: blob})))
        per = {k: v.reshape(B, -1, v.shape[-1]) for k, v in outs.items()}
        return [self._decode({k: v[b] for k, v in per.items()}, ph, pw) for b in range(B)]

    def _decode(self, out: dict, ph: int, pw: int) -> np.ndarray:
        faces = []
        for s in self.strides:
            cols = pw // s
            cls = np.clip(out[f"cls_{s}"][:, 0], 0, 1)
            obj = np.clip(out[f"obj_{s}"][:, 0], 0, 1)
            score = np.sqrt(cls * obj)
            idx = np.where(score >= self.score)[0]
            r, c = (idx // cols).astype(np.float32), (idx % cols).astype(np.float32)
            bb = out[f"bbox_{s}"][idx]
            cx, cy = (c + bb[:, 0]) * s, (r + bb[:, 1]) * s
            w, h = np.exp(bb[:, 2]) * s, np.exp(bb[:, 3]) * s
            faces.append(np.stack([cx - w / 2, cy - h / 2, w, h, score[idx]], 1))
        f = np.vstack(faces).astype(np.float32)
        if len(f) > 1:
            keep = cv2.dnn.NMSBoxes(np.trunc(f[:, :4]).astype(int).tolist(), f[:, 4].tolist(),
                                    self.score, self.nms, 1.0, self.top_k)
            f = f[np.asarray(keep, int).reshape(-1)]
        if not len(f):
            return _empty()
        return np.stack([f[:, 0], f[:, 1], f[:, 0] + f[:, 2], f[:, 1] + f[:, 3], f[:, 4]], 1).astype(np.float32)

    def info(self) -> dict:
        return {"backend": self.name, "fallback": self.fallback, "model": self.path.name,
                "device": _provider_device(self.session)}


class HaarDetector(FaceDetector):
    name = "opencv-haar"

    def __init__(self, min_neighbors: int = 6, min_size: int = 24):
        path = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"
        self.model = cv2.CascadeClassifier(str(path))
        if self.model.empty():
            raise RuntimeError(f"OpenCV Haar cascade missing at {path}")
        self.min_neighbors = min_neighbors
        self.min_size = min_size

    local = True
    # around a known face: a crop this many face sizes beyond each side, scales within these
    # factors of its height (a talking head moves and turns by much less between two samples)
    near_margin = 1.0
    near_scales = (0.7, 1.45)

    def detect(self, rgb: np.ndarray) -> np.ndarray:
        return self._cascade(self._gray(rgb), self.min_size)

    def detect_near(self, rgb: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """The cascade on a crop around each box (the frame's own histogram equalisation, so
        the pixels are those a full scan sees), at the scales near the box's size."""
        gray = self._gray(rgb)
        H, W = gray.shape
        found = []
        for x0, y0, x1, y1 in np.asarray(boxes, np.float64)[:, :4]:
            w, h = x1 - x0, y1 - y0
            cx0, cy0 = int(max(0, x0 - self.near_margin * w)), int(max(0, y0 - self.near_margin * h))
            cx1, cy1 = int(min(W, x1 + self.near_margin * w)), int(min(H, y1 + self.near_margin * h))
            lo, hi = max(self.min_size, int(self.near_scales[0] * h)), int(self.near_scales[1] * h) + 1
            if cx1 - cx0 < lo or cy1 - cy0 < lo:
                continue
            d = self._cascade(gray[cy0:cy1, cx0:cx1], lo, hi)
            if len(d):
                d[:, [0, 2]] += cx0
                d[:, [1, 3]] += cy0
                found.append(d)
        out = _empty()
        for d in found:  # neighbouring crops can both hold a face: keep it once
            out = _union(out, d)
        return out

    @staticmethod
    def _gray(rgb: np.ndarray) -> np.ndarray:
        return cv2.equalizeHist(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))

    def _cascade(self, gray: np.ndarray, min_px: int, max_px: int = 0) -> np.ndarray:
        boxes = self.model.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=self.min_neighbors,
                                            minSize=(min_px, min_px), maxSize=(max_px, max_px))
        if len(boxes) == 0:
            return _empty()
        b = np.asarray(boxes, np.float32)
        # The cascade has no score; 1.0 marks "accepted by all stages".
        return np.c_[b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3], np.ones(len(b), np.float32)]

    def info(self) -> dict:
        return {"backend": self.name, "fallback": True, "model": "haarcascade_frontalface_default.xml"}


def make_detector(cfg: FacesConfig, device: str = "cpu") -> FaceDetector:
    """The configured backend on ``device``; ``auto`` prefers SCRFD, then YuNet, then the
    built-in Haar cascade (CPU only: OpenCV's cascade has no GPU path in the pip wheels)."""
    backend = cfg.backend
    if backend == "auto":
        backend = "scrfd" if cfg.scrfd_onnx else "yunet" if cfg.yunet_onnx else "haar"
    batch = cfg.gpu_batch_size if str(device).startswith("cuda") else cfg.batch_size
    if backend == "scrfd":
        return ScrfdDetector(cfg.scrfd_onnx, cfg.scrfd_score, device=device, batch_size=batch)
    if backend == "yunet":
        return YunetDetector(cfg.yunet_onnx, cfg.yunet_score, device=device, batch_size=batch)
    return HaarDetector(cfg.haar_min_neighbors, cfg.min_face_px)


def detect_at(det: FaceDetector, frames: np.ndarray, indices: Sequence[int], min_px: int,
              batch_size: Optional[int] = None) -> dict[int, np.ndarray]:
    """Detections on the given frames, ``batch_size`` (default: the detector's) per call:
    {frame index: (N, 5)}, faces under ``min_px`` tall dropped."""
    step = max(1, batch_size or det.batch_size)
    idx = list(indices)
    out: dict[int, np.ndarray] = {}
    for b in range(0, len(idx), step):
        part = idx[b:b + step]
        for i, d in zip(part, det.detect_batch(frames[part])):
            out[i] = _tall_enough(d, min_px)
    return out


def detect_frames(det: FaceDetector, frames: np.ndarray, every: int, min_px: int,
                  batch_size: Optional[int] = None) -> dict[int, np.ndarray]:
    """Detections on every ``every``-th frame: {frame index: (N, 5)}, faces under ``min_px`` dropped."""
    return detect_at(det, frames, range(0, len(frames), max(1, every)), min_px, batch_size)


def sample_indices(num_frames: int, step: int) -> list[int]:
    """Every ``step``-th frame and the last one, so interpolated boxes reach the clip's end."""
    idx = list(range(0, num_frames, max(1, step)))
    if idx and idx[-1] != num_frames - 1:
        idx.append(num_frames - 1)
    return idx


def _iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = lambda d: (d[:, 2] - d[:, 0]) * (d[:, 3] - d[:, 1])  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


def faces_agree(a: np.ndarray, b: np.ndarray, min_iou: float) -> bool:
    """Two frames show the same faces in about the same places: as many boxes, each with a
    partner of IoU >= ``min_iou`` in the other frame."""
    if len(a) != len(b):
        return False
    if not len(a):
        return True
    m = _iou_matrix(a, b)
    return bool((m.max(axis=1) >= min_iou).all() and (m.max(axis=0) >= min_iou).all())


def detect_sampled(det: FaceDetector, frames: np.ndarray, fps: float, cfg: FacesConfig) -> dict[int, np.ndarray]:
    """Faces at the rate they change: detections on frames sampled every
    ``cfg.detect_step(fps)`` frames (and the last), plus, between two samples whose faces do
    not agree (:func:`faces_agree` at ``cfg.refine_iou``), the frame halfway, recursively,
    until neighbours agree or are adjacent. Each round's new frames go to the detector as one
    batch. A detector that can look locally (``det.local``) scans whole frames only at
    ``cfg.scan_fps`` (see :func:`_scan_and_follow`) and refines near the faces of both
    neighbours. Returns {frame index: (N, 5)} in frame order, like :func:`detect_frames`."""
    samples = sample_indices(len(frames), cfg.detect_step(fps))
    local = det.local and cfg.scan_every() > 1
    if local:
        dets = _scan_and_follow(det, frames, samples, cfg.scan_every(), cfg.min_face_px)
    else:
        dets = detect_at(det, frames, samples, cfg.min_face_px)
    keys = sorted(dets)
    pending = list(zip(keys, keys[1:])) if cfg.refine else []
    while pending:
        pending = [(a, b) for a, b in pending if b - a > 1 and not faces_agree(dets[a], dets[b], cfg.refine_iou)]
        mids = [(a + b) // 2 for a, b in pending]
        if local:
            # a face that differs between a and b is, at the frame halfway, near where one of them has it
            dets.update({m: _near(det, frames[m], _union(dets[a], dets[b]), cfg.min_face_px)
                         for (a, b), m in zip(pending, mids)})
        else:
            dets.update(detect_at(det, frames, mids, cfg.min_face_px))
        pending = [p for (a, b), m in zip(pending, mids) for p in ((a, m), (m, b))]
    return dict(sorted(dets.items()))


def _scan_and_follow(det: FaceDetector, frames: np.ndarray, samples: list[int], every: int,
                     min_px: int) -> dict[int, np.ndarray]:
    """Full scans on every ``every``-th sample (and the last); each sample between two scans
    looks near the faces of the sample before it and of the next scan, so a face that stays is
    followed and one that comes or goes is found where it is at either end. Nothing is looked
    for between two scans without faces: a face present for less than a scan interval is
    shorter than a track's minimum."""
    if not samples:
        return {}
    scans = samples[::every]
    if scans[-1] != samples[-1]:
        scans.append(samples[-1])
    dets = detect_at(det, frames, scans, min_px)
    for a, b in zip(scans, scans[1:]):
        prev = dets[a]
        for s in (s for s in samples if a < s < b):
            refs = _union(prev, dets[b])
            dets[s] = prev = _near(det, frames[s], refs, min_px) if len(refs) else _empty()
    return dets


def _near(det: FaceDetector, frame: np.ndarray, refs: np.ndarray, min_px: int) -> np.ndarray:
    return _tall_enough(det.detect_near(frame, refs), min_px)


def _tall_enough(d: np.ndarray, min_px: int) -> np.ndarray:
    return d[(d[:, 3] - d[:, 1]) >= min_px] if len(d) else d


def _union(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The boxes of ``a`` and those of ``b`` that overlap none of them by half."""
    if not len(a) or not len(b):
        return a if len(a) else b
    return np.vstack([a, b[_iou_matrix(b, a).max(axis=1) < 0.5]])
