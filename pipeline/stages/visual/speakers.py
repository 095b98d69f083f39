"""Who speaks when: per-frame speaking scores of every face track (LR-ASD), a speaking timeline
per clip, and the st2v admission that needs the speech to come from an on-screen face.

The visual stage hands over each character track's per-frame box (``face_tracks``). This stage
decodes the clip once more in gray at ``crop_max_side``, cuts the published LR-ASD face crop
from every frame of every track, scores all tracks of all clips of a batch in one batched run of
the published windowed evaluation (``model/lr_asd.py``) on the worker's device, and turns the
scores into turns: inside the VAD speech segments, each frame goes to the track that speaks
(smoothed score >= ``speaking_threshold``, the best one when several do) or to nobody on screen,
decoded as a whole with a penalty per change of speaker (Viterbi), so a turn does not flicker
when a score dips for a few frames.

What LR-ASD does and does not tell (measured on the real clips, benchmarks/bench_speakers.py):
a talking face is speaking in 86-95 % of its speech frames, a silent face, a still frame or a
face moving to music in 0-6 %, also under someone else's speech; but a face whose lips move
out of step with the speech (another take, another speaker's audio) scores as speaking too.
It decides *who on screen is talking*; whether the audio is *this* face's speech stays the lip-
sync scores' job (visual stage), so st2v needs both: the speech mostly attributed to an
on-screen face, and the dominant speaker's lip-sync passing where a sync backend ran.

Without LR-ASD weights the stage falls back to the sync facts (the visual stage's speaking
track holds every speech segment), labelled ``fallback: true``, and admits as before.
"""
from __future__ import annotations

import json
import logging
from typing import Optional, Sequence

import cv2
import numpy as np
from pydantic import Field
from scipy.ndimage import median_filter

from common import media
from common.media import AUDIO_RATE, VIDEO_FPS
from common.weights import ModelMissing, model_file
from pipeline.engine.stage import Stage, StageResult, backend_label
from pipeline.stages.visual.sync import mfcc
from schemas.base import Strict

log = logging.getLogger(__name__)

SPF = int(AUDIO_RATE / VIDEO_FPS)  # audio samples per video frame
# python_speech_features' last 25 ms window needs 15 ms past the last 10 ms step: with this
# much audio after a track's last frame the MFCC count is exactly four per frame.
_MFCC_TAIL = int(0.015 * AUDIO_RATE)
NOBODY = -1  # a speech frame no on-screen face utters
SILENCE = -2  # not a speech frame


class SpeakersConfig(Strict):
    enabled: bool = True
    # LR-ASD weights: a registry name (`mocha models fetch lr-asd`), a directory or a file.
    # Missing: the sync-facts fallback, labelled (a warning at the start of the run).
    checkpoint: Optional[str] = "lr-asd"
    # The file inside a registry directory. AVA (films, TV) tells a speaking face from a silent
    # or singing-along one; TalkSet calls every moving mouth speaking whatever the audio
    # (measured: MANIFEST of the test data), which would admit reaction shots.
    weights: str = "pretrain_AVA.model"
    # Published evaluation: consecutive windows of 1..6 s scored independently, then averaged.
    windows_s: list[int] = Field(default_factory=lambda: [1, 2, 3, 4, 5, 6], min_length=1)
    # Published crop (Columbia_test.py): box half-size and centre median-filtered over 13
    # frames, the box padded by 40 % of its size; the network sees the middle half (mouth).
    crop_scale: float = Field(0.40, ge=0, le=2)
    box_median_frames: int = Field(13, ge=1)
    # Longest side of the gray decode the crops are cut from. The crop is 1.4 box half-sizes
    # resized to 112 px; at 640 a wide shot's face (4 % of the frame height) is 25 px and
    # already upsampled. The real clips score the same at 640 and 1280 (0.02 logit apart).
    crop_max_side: int = Field(640, ge=128)
    # A clip's character tracks beyond this many (by dominance) are not scored.
    max_tracks: int = Field(4, ge=1)
    # Frames per forward pass (windows of equal length from all tracks of a batch of clips).
    batch_frames: int = Field(2000, ge=25)
    # Published evaluation smoothing: per-frame scores averaged over 5 frames before deciding.
    smooth_frames: int = Field(5, ge=1)
    # Score (the published lossAV logit) at which a face counts as speaking: 0 = probability 0.5,
    # the published decision. Talking faces score +1..+3, silent ones -2..-4.
    speaking_threshold: float = 0.0
    # Cost of changing the speaker inside a speech segment, in logit x frames: a dip of the
    # speaker's score to -1 for ten frames (0.4 s) does not end its turn, a new voice that a
    # face utters at +1 for ~0.3 s more than the old one does.
    switch_penalty: float = Field(8.0, ge=0)
    # A change of speaker is moved to where the scores of the shortest windows cross, searched
    # this far either side: the published mean includes 6 s windows whose bidirectional GRU
    # carries a speaker's state 0.3-0.5 s past the change (measured on two-person composites),
    # the 1 s windows change within a frame or two. 0 keeps the changes of the mean.
    refine_s: float = Field(0.6, ge=0)
    # Turns of one speaker separated by a pause shorter than this are one turn.
    merge_gap_s: float = Field(0.6, ge=0)
    # Shorter turns (a cough, a laugh, a VAD edge) are dropped from the timeline.
    min_turn_s: float = Field(0.2, ge=0)
    # st2v admission: the share of the clip's speech frames attributed to an on-screen speaking
    # face must reach this ("most of the speech"). Talkers measure 0.74-0.95 (demo2's first
    # 10 s, with pauses, is the lowest), reaction shots and narration over a silent face 0-0.06.
    min_attributed_speech: float = Field(0.5, ge=0, le=1)


# --- crops -------------------------------------------------------------------------------------

def crop_boxes(boxes: np.ndarray, median_frames: int = 13) -> np.ndarray:
    """(T, 3) published crop parameters per frame: centre x, centre y and half-size (half the
    longer box side), each median-filtered over ``median_frames`` (odd) frames."""
    b = np.asarray(boxes, np.float64)[:, :4]
    k = median_frames if median_frames % 2 else median_frames + 1
    k = min(k, len(b) if len(b) % 2 else max(1, len(b) - 1))
    s = np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]) / 2
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    # zero-padded ends, as the reference's scipy.signal.medfilt (whose module costs every worker
    # process a second of imports)
    return np.stack([median_filter(v, size=k, mode="constant", cval=0.0) if k > 1 else v for v in (cx, cy, s)], 1)


def face_crop(gray: np.ndarray, cx: float, cy: float, bs: float, crop_scale: float = 0.40) -> np.ndarray:
    """The published 112 x 112 LR-ASD input: the region from ``bs`` above the box centre to
    ``bs (1 + 2 crop_scale)`` below it, ``bs (1 + crop_scale)`` either side, resized to 224 (grey
    110 outside the frame), of which the middle 112 x 112 is kept. One affine warp."""
    bs = max(float(bs), 1.0)
    k = 224.0 / (2 * bs * (1 + crop_scale))
    x0, y0 = cx - bs * (1 + crop_scale), cy - bs
    # pixel-centre convention of cv2.resize, then the 56 px offset of the centre crop
    m = np.array([[k, 0, k * (0.5 - x0) - 56.5], [0, k, k * (0.5 - y0) - 56.5]], np.float32)
    return cv2.warpAffine(gray, m, (112, 112), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=110)


def track_audio(pcm: np.ndarray, first: int, last: int) -> np.ndarray:
    """The audio of frames first..last (inclusive) plus the MFCC tail, zero-padded past the end."""
    a, b = first * SPF, (last + 1) * SPF + _MFCC_TAIL
    seg = np.asarray(pcm[a:b], np.float32)
    return np.pad(seg, (0, max(0, (b - a) - len(seg))))


def smooth(scores: np.ndarray, frames: int) -> np.ndarray:
    """Centred moving mean over ``frames``, truncated at the ends (the published 5-frame mean)."""
    if frames <= 1 or len(scores) == 0:
        return np.asarray(scores, np.float64)
    k = np.ones(frames)
    num = np.convolve(scores, k, "same")
    den = np.convolve(np.ones(len(scores)), k, "same")
    return num / den


# --- timeline ----------------------------------------------------------------------------------

def speech_mask(segments: Sequence[Sequence[float]], num_frames: int, fps: float = VIDEO_FPS) -> np.ndarray:
    """(T,) True for frames that overlap a speech segment (clip seconds)."""
    m = np.zeros(num_frames, bool)
    for s, e in segments or []:
        a, b = int(np.floor(float(s) * fps)), int(np.ceil(float(e) * fps))
        m[max(0, a):max(0, min(num_frames, b))] = True
    return m


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) runs of True."""
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(d == 1), np.flatnonzero(d == -1)))


def viterbi_speakers(scores: np.ndarray, threshold: float, penalty: float) -> np.ndarray:
    """Best label sequence over one speech segment. ``scores`` (K, T), NaN where a track is not
    on screen; labels 0..K-1 (that track speaks) or NOBODY. A frame's gain is its score minus
    the threshold for a track and 0 for nobody; every change of label costs ``penalty``."""
    K, T = scores.shape
    gain = np.vstack([np.where(np.isnan(scores), -1e6, scores - threshold), np.zeros((1, T))])
    S = K + 1
    best = gain[:, 0].copy()
    back = np.zeros((S, T), np.int64)
    for t in range(1, T):
        stay = best
        j = int(np.argmax(best))
        switch = best[j] - penalty
        back[:, t] = np.where(stay >= switch, np.arange(S), j)
        best = np.maximum(stay, switch) + gain[:, t]
    labels = np.empty(T, np.int64)
    labels[-1] = int(np.argmax(best))
    for t in range(T - 1, 0, -1):
        labels[t - 1] = back[labels[t], t]
    return np.where(labels == K, NOBODY, labels)


def frame_labels(scores: np.ndarray, speech: np.ndarray, cfg: SpeakersConfig) -> np.ndarray:
    """(T,) per clip frame: the speaking track index, NOBODY, or SILENCE outside speech."""
    labels = np.full(scores.shape[1], SILENCE, np.int64)
    for a, b in _runs(speech):
        labels[a:b] = viterbi_speakers(scores[:, a:b], cfg.speaking_threshold, cfg.switch_penalty)
    return labels


def refine_changes(labels: np.ndarray, short: np.ndarray, threshold: float, reach: int) -> np.ndarray:
    """Move every change between two speakers (or a speaker and nobody) inside a speech run to
    the best single change point of the short-window scores ``short`` (K, T) within ``reach``
    frames: where the summed advantage of the old label before and the new one after is
    largest. Changes are refined one at a time, never past a neighbouring change."""
    labels = labels.copy()
    gain = np.vstack([np.where(np.isnan(short), -1e6, short - threshold), np.zeros((1, short.shape[1]))])

    def row(k: int) -> np.ndarray:
        return gain[-1] if k == NOBODY else gain[k]

    changes = [c for c in range(1, len(labels)) if labels[c] != labels[c - 1]
               and labels[c] != SILENCE and labels[c - 1] != SILENCE]
    bounds = [c for c in range(1, len(labels)) if labels[c] != labels[c - 1]]
    for c in changes:
        a, b = labels[c - 1], labels[c]
        prev = max([x for x in bounds if x < c], default=0)
        nxt = min([x for x in bounds if x > c], default=len(labels))
        lo, hi = max(prev, c - reach), min(nxt, c + reach)
        if hi - lo < 2:
            continue
        d = (row(a) - row(b))[lo:hi]  # > 0 where the old label fits better
        # total for a change at f: sum(d[:f - lo]) - sum(d[f - lo:])
        cum = np.concatenate([[0.0], np.cumsum(d)])
        f = lo + 1 + int(np.argmax(2 * cum[1:-1] - cum[-1]))
        labels[lo:f], labels[f:hi] = a, b
        bounds = [f if x == c else x for x in bounds]
    return labels


def _merge_runs(runs: list[list[int]], gap: float) -> list[list[int]]:
    """Consecutive runs of one speaker at most ``gap`` frames apart joined into one."""
    out: list[list[int]] = []
    for r in runs:
        if out and out[-1][0] == r[0] and r[1] - out[-1][2] <= gap:
            out[-1][2] = r[2]
        else:
            out.append(list(r))
    return out


def turns_from_labels(labels: np.ndarray, cfg: SpeakersConfig, fps: float = VIDEO_FPS) -> list[tuple[int, int, int]]:
    """(track index, start frame, end frame) turns in time order: runs of one speaker, merged
    across pauses (silence or nobody) shorter than ``merge_gap_s``, short ones dropped."""
    runs: list[list[int]] = []
    for k in sorted(set(labels[labels >= 0].tolist())):
        for a, b in _runs(labels == k):
            runs.append([k, int(a), int(b)])
    runs.sort(key=lambda r: r[1])
    gap = cfg.merge_gap_s * fps
    keep = [r for r in _merge_runs(runs, gap) if (r[2] - r[1]) >= cfg.min_turn_s * fps]
    # dropping a short turn may leave two turns of one speaker next to each other
    return [tuple(r) for r in _merge_runs(keep, gap)]


# --- scoring -----------------------------------------------------------------------------------

def decode_crops(video, tracks: list[dict], num_frames: int, cfg: SpeakersConfig) -> list[np.ndarray]:
    """Crops (n_i, 112, 112) uint8 of each track over its span, from one streaming gray decode
    (only the crops are kept, not the frames)."""
    info = media.probe(video)
    w, h = media.fit_size(info.width, info.height, cfg.crop_max_side)
    params = []
    for t in tracks:
        b = np.asarray(t["boxes"], np.float64) * np.array([w, h, w, h])
        params.append(crop_boxes(b, cfg.box_median_frames))
    out = [np.zeros((t["last"] - t["first"] + 1, 112, 112), np.uint8) for t in tracks]
    seen = 0
    for i, (_, gray) in enumerate(media.iter_frames(video, "gray", w, h)):
        if i >= num_frames:
            break
        seen = i + 1
        for t, p, o in zip(tracks, params, out):
            if t["first"] <= i <= t["last"]:
                o[i - t["first"]] = face_crop(gray, *p[i], cfg.crop_scale)
    for t, o in zip(tracks, out):  # a decode shorter than the row's frame count: hold the last crop
        n = seen - t["first"]
        if 0 < n < len(o):
            o[n:] = o[n - 1]
    return out


class SpeakerScorer:
    """The loaded network (once per worker) and the per-frame scores of face tracks."""

    def __init__(self, cfg: SpeakersConfig, device: str = "cpu", checkpoint: Optional[str] = None):
        from model.lr_asd import load_lr_asd

        self.cfg = cfg
        self.checkpoint = checkpoint
        self.net = load_lr_asd(checkpoint, device)

    def scores(self, crops: list[np.ndarray], audios: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Per-frame scores of tracks (crops + their own span's audio): the published mean over
        the window durations, and the scores of the shortest windows alone."""
        from model.lr_asd import windowed_scores

        feats = [mfcc(a) for a in audios]
        means, per = windowed_scores(self.net, crops, feats, self.cfg.windows_s, self.cfg.batch_frames, per_window=True)
        return means, per[min(per)]


def resolve_checkpoint(cfg: SpeakersConfig, models_dir: Optional[str] = None) -> Optional[str]:
    """The LR-ASD weights file, or None when they are not available (the labelled fallback)."""
    if not cfg.checkpoint:
        return None
    try:
        return model_file(cfg.checkpoint, cfg.weights, models_dir)
    except ModelMissing as e:
        log.info("speakers: %s; falling back to the sync facts", e)
        return None


# --- the stage ---------------------------------------------------------------------------------

def _faces(row: dict) -> list[dict]:
    try:
        f = json.loads(row.get("faces") or "[]")
        return f if isinstance(f, list) else []
    except (TypeError, json.JSONDecodeError):
        return []


def _segments(row: dict) -> list:
    raw = row.get("speech_segments")
    try:
        seg = json.loads(raw) if isinstance(raw, (str, bytes)) else (raw or [])
    except json.JSONDecodeError:
        return []
    return [s for s in seg if isinstance(s, (list, tuple)) and len(s) == 2]


def _turn(person: Optional[str], track_id: int, a: int, b: int, score: float, x: float) -> dict:
    return {"person": person, "track": int(track_id), "start_s": round(a / VIDEO_FPS, 3),
            "end_s": round(b / VIDEO_FPS, 3), "score": round(float(score), 4), "x": round(float(x), 4)}


def _person_tags(faces: list[dict]) -> dict[int, str]:
    """Provisional tags in the faces order (the rules captions' tags); the caption stage maps
    them to its characters."""
    return {int(f["track_id"]): f"Person{i + 1}" for i, f in enumerate(faces) if "track_id" in f}


class SpeakersStage(Stage):
    name = "speakers"
    columns = {"speaking_turns": None, "speech_attribution": None}

    def __init__(self, cfg: Optional[SpeakersConfig] = None, device: str = "cpu", models_dir: Optional[str] = None):
        super().__init__(cfg or SpeakersConfig(), device, models_dir)
        self.scorer: Optional[SpeakerScorer] = None
        self.decode_passes = 0  # for benchmarks

    def setup(self) -> None:
        if not self.cfg.enabled:
            return
        path = resolve_checkpoint(self.cfg, self.models_dir)
        if path is not None:
            self.scorer = SpeakerScorer(self.cfg, self.device, path)

    def backend(self) -> dict:
        if not self.cfg.enabled:
            return {}
        if self.scorer is None:
            return backend_label("sync-facts", True, model=None)
        return backend_label("lr-asd", False, model=str(self.scorer.checkpoint).rsplit("/", 1)[-1],
                             device=self.device, threshold=self.cfg.speaking_threshold)

    # -- per batch ---------------------------------------------------------------------------
    def process_batch(self, rows: list[dict]) -> list[StageResult]:
        if not self.cfg.enabled:
            return [StageResult.kept() for _ in rows]
        results: list[Optional[StageResult]] = [None] * len(rows)
        jobs = []  # (row index, tracks, crops, audios)
        for i, row in enumerate(rows):
            tracks = (row.get("face_tracks") or [])[: self.cfg.max_tracks]
            pcm = row.get("audio_pcm")
            segments = _segments(row)
            if not tracks or pcm is None or len(pcm) == 0 or not row.get("has_audio", True) or not segments:
                results[i] = StageResult.kept(speaking_turns=[], speech_attribution=None)
                continue
            if self.scorer is None:
                results[i] = self._fallback(row, segments)
                continue
            try:
                self.decode_passes += 1
                crops = decode_crops(row["video"], tracks, len(tracks[0]["boxes"]), self.cfg)
                audios = [track_audio(pcm, t["first"], t["last"]) for t in tracks]
                jobs.append((i, tracks, crops, audios))
            except Exception as e:  # an undecodable clip is that clip's error
                results[i] = StageResult.error(e)
        if jobs:
            flat_c = [c for _, _, cs, _ in jobs for c in cs]
            flat_a = [a for _, _, _, aus in jobs for a in aus]
            flat_s, flat_short = self.scorer.scores(flat_c, flat_a)
            k = 0
            for i, tracks, crops, _ in jobs:
                scores, short = flat_s[k:k + len(tracks)], flat_short[k:k + len(tracks)]
                k += len(tracks)
                try:
                    results[i] = self._decide(rows[i], tracks, scores, short)
                except Exception as e:
                    results[i] = StageResult.error(e)
        return results  # type: ignore[return-value]

    # -- per clip ----------------------------------------------------------------------------
    def _decide(self, row: dict, tracks: list[dict], scores: list[np.ndarray], short: list[np.ndarray]) -> StageResult:
        cfg = self.cfg
        T = len(tracks[0]["boxes"])  # frames of the visual stage's decode, which the boxes follow
        raw, sm = self._on_clip(tracks, scores, T)
        _, sm_short = self._on_clip(tracks, short, T)
        speech = speech_mask(_segments(row), T)
        labels = frame_labels(sm, speech, cfg)
        if cfg.refine_s > 0:
            labels = refine_changes(labels, sm_short, cfg.speaking_threshold, int(round(cfg.refine_s * VIDEO_FPS)))
        turns_idx = turns_from_labels(labels, cfg)
        n_speech = int(speech.sum())
        attributed = float((labels >= 0).sum() / n_speech) if n_speech else None

        faces = _faces(row)
        by_id = {int(f["track_id"]): f for f in faces if "track_id" in f}
        share = {}
        for j, t in enumerate(tracks):
            f = by_id.get(int(t["track_id"]))
            if f is None:
                continue
            own = speech & ~np.isnan(sm[j])
            share[j] = float((labels == j).sum() / n_speech) if n_speech else 0.0
            f["speaking"] = any(k == j for k, _, _ in turns_idx)
            f["asd_score"] = round(float(np.nanmean(raw[j][own])) if own.any() else float(np.nanmean(raw[j])), 4)
            f["speaking_frac"] = round(float((sm[j][own] >= cfg.speaking_threshold).mean()) if own.any() else 0.0, 4)
            f["speech_share"] = round(share[j], 4)
        dominant = max(share, key=lambda j: (share[j], -j)) if share and max(share.values()) > 0 else None
        if dominant is not None:  # dominant speaker first: Person1 of the captions
            dom_id = int(tracks[dominant]["track_id"])
            faces.sort(key=lambda f: f.get("track_id") != dom_id)
        tags = _person_tags(faces)
        turns = []
        for j, a, b in turns_idx:
            t = tracks[j]
            x = np.asarray(t["boxes"], np.float64)[a:b]
            turns.append(_turn(tags.get(int(t["track_id"])), t["track_id"], a, b,
                               np.nanmean(raw[j, a:b]), float(((x[:, 0] + x[:, 2]) / 2).mean())))
        out = {"speaking_turns": turns, "speech_attribution": None if attributed is None else round(attributed, 4),
               "faces": json.dumps(faces)}
        reason = self._admission(row, attributed, by_id.get(int(tracks[dominant]["track_id"])) if dominant is not None else None)
        if reason is not None:
            out["speakers_block"] = f"{self.name}: {reason}"
            return StageResult.st2v_blocked(reason, **out)
        return StageResult.kept(**out)

    def _on_clip(self, tracks: list[dict], scores: list[np.ndarray], T: int) -> tuple[np.ndarray, np.ndarray]:
        """(K, T) scores on the clip's frames (NaN outside each track's span), raw and smoothed."""
        raw = np.full((len(tracks), T), np.nan)
        for j, (t, s) in enumerate(zip(tracks, scores)):
            n = min(len(s), T - t["first"])
            raw[j, t["first"]:t["first"] + n] = s[:n]
        sm = np.full_like(raw, np.nan)
        for j, t in enumerate(tracks):
            seg = raw[j, t["first"]:t["last"] + 1]
            ok = ~np.isnan(seg)
            if ok.any():
                vals = smooth(seg[ok], self.cfg.smooth_frames)
                sm[j, t["first"]:t["first"] + len(vals)] = vals
        return raw, sm

    def _admission(self, row: dict, attributed: Optional[float], dominant: Optional[dict]) -> Optional[str]:
        """Why the clip's speech cannot train st2v (None: it can)."""
        cfg = self.cfg
        if attributed is None:
            return None  # no speech: the speech stage has blocked st2v already
        if attributed < cfg.min_attributed_speech:
            return (f"speech_not_on_screen {attributed:.2f} < {cfg.min_attributed_speech:.2f} of the speech from an "
                    f"on-screen speaking face (reaction shot or off-screen voice)")
        # a dominant speaker other than the visual stage's sync choice must pass lip-sync too
        # (when the sync choice failed, the visual stage has blocked st2v already)
        if dominant is not None and dominant.get("sync_pass") is False and row.get("st2v_block") is None:
            return f"speaker_sync_low {dominant.get('sync_conf')}: the dominant speaker's lip-sync fails"
        return None

    def _fallback(self, row: dict, segments: list) -> StageResult:
        """The sync facts as a timeline: every speech run of the clip (pauses under
        ``merge_gap_s`` bridged) goes to the visual stage's speaking track, if it chose one."""
        faces = _faces(row)
        speaker = next((f for f in faces if f.get("speaking")), None)
        if speaker is None:
            return StageResult.kept(speaking_turns=[], speech_attribution=None)
        T = int(row.get("num_frames") or 0) or int(np.ceil(max(e for _, e in segments) * VIDEO_FPS))
        speech = speech_mask(segments, T)
        labels = np.where(speech, 0, SILENCE)
        cx = (speaker.get("center") or [0.5, 0.5])[0]
        tags = _person_tags(faces)
        turns = [_turn(tags.get(int(speaker["track_id"])), speaker["track_id"], a, b, speaker.get("sync_conf") or 0.0, cx)
                 for _, a, b in turns_from_labels(labels, self.cfg)]
        return StageResult.kept(speaking_turns=turns, speech_attribution=None)
