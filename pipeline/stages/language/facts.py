"""Measured facts of a clip (face tracks, shot size, speech, lip-sync, the speaking timeline) as
the language-model stages use them: to decide prominence without a model, to tell a model what
was measured, and to overwrite what a model must not guess (who speaks and when, shot size)."""
from __future__ import annotations

import json
import logging
from typing import Optional

from pipeline.stages.language.config import CaptionConfig, CharacterFilterConfig
from schemas.caption import Caption, Character, Turn, tag_number
from schemas.rows import FACE_SHOT_SIZES

log = logging.getLogger(__name__)

# Horizontal centre of each caption position, to match a model's characters to face tracks.
POSITION_X = {"left": 0.2, "center": 0.5, "right": 0.8}


def _num(v, default=None) -> Optional[float]:
    try:
        return default if v is None else float(v)
    except (TypeError, ValueError):
        return default


def parse_tracks(row: dict) -> list[dict]:
    """The face tracks of the visual stage (dominant/speaking first), normalised. When the row
    has no ``faces`` JSON but clip-level face columns, one track is built from those."""
    raw = row.get("faces")
    tracks: list = []
    if isinstance(raw, (str, bytes)) and raw:
        try:
            tracks = json.loads(raw)
        except json.JSONDecodeError:
            log.warning("clip %s: faces column is not JSON; ignoring it", row.get("clip_id"))
            tracks = []
    elif isinstance(raw, list):
        tracks = raw
    out = []
    for i, t in enumerate(tracks if isinstance(tracks, list) else []):
        if not isinstance(t, dict):
            continue
        center = t.get("center") or [0.5, 0.5]
        out.append({
            "track_id": t.get("track_id", i),
            "coverage": _num(t.get("coverage"), 0.0),
            "height_ratio": _num(t.get("height_ratio"), 0.0),
            "center": [_num(center[0], 0.5), _num(center[1], 0.5)] if len(center) >= 2 else [0.5, 0.5],
            "speaking": t.get("speaking"),
            "sync_conf": _num(t.get("sync_conf")),
        })
    if out or raw is not None:
        return out
    n = int(_num(row.get("num_faces"), 0) or 0)
    h = _num(row.get("face_height_ratio"), 0.0)
    if n >= 1 and h:
        # Clip-level facts only: the dominant face, present throughout by the face stage's count.
        return [{"track_id": 0, "coverage": 1.0, "height_ratio": h, "center": [0.5, 0.5],
                 "speaking": None, "sync_conf": _num(row.get("sync_conf"))}]
    return []


def parse_turns(row: dict) -> Optional[list[dict]]:
    """The speaking timeline of the speakers stage in time order; None when it was not
    measured (the stage did not run), [] when no on-screen face speaks."""
    raw = row.get("speaking_turns")
    if raw is None:
        return None
    if isinstance(raw, (str, bytes)):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            log.warning("clip %s: speaking_turns is not JSON; ignoring it", row.get("clip_id"))
            return None
    out = []
    for t in raw if isinstance(raw, (list, tuple)) else []:
        if not isinstance(t, dict) or _num(t.get("start_s")) is None or _num(t.get("end_s")) is None:
            continue
        out.append({"person": t.get("person"), "track": t.get("track"), "start_s": _num(t["start_s"]),
                    "end_s": _num(t["end_s"]), "score": _num(t.get("score")), "x": _num(t.get("x"))})
    return sorted(out, key=lambda t: (t["start_s"], t["end_s"]))


def character_tracks(tracks: list[dict], cfg: CharacterFilterConfig) -> list[dict]:
    """Tracks that count as characters: the dominant one plus others on screen long enough."""
    if not tracks:
        return []
    return [tracks[0]] + [t for t in tracks[1:] if t["coverage"] >= cfg.min_other_coverage]


def track_int(track: dict) -> Optional[int]:
    tid = track.get("track_id")
    return int(tid) if isinstance(tid, (int, float)) and not isinstance(tid, bool) else None


def position_of(track: dict) -> str:
    x = track["center"][0]
    return "left" if x < 0.4 else ("right" if x > 0.6 else "center")


def clip_speaks(row: dict, cfg: CaptionConfig) -> bool:
    """The clip's audio is speech uttered by its dominant face (VAD + lip-sync facts)."""
    ratio = _num(row.get("speech_ratio"), 0.0)
    if ratio < cfg.min_speech_ratio_speaking or row.get("has_audio") is False:
        return False
    conf = _num(row.get("sync_conf"))
    return conf is None or conf >= cfg.min_sync_conf_speaking


def track_speaks(track: Optional[dict], row: dict, cfg: CaptionConfig, dominant: bool) -> bool:
    """Speaking state of one character from the measurements, never from a model's guess: the
    speaking timeline when it was measured (the track has a turn), else the face stage's
    per-track verdict, else its sync confidence, else (for the dominant track only) the
    clip-level speech and sync facts."""
    turns = parse_turns(row)
    if turns is not None:
        tid = track_int(track) if track is not None else None
        return tid is not None and any(t["track"] == tid for t in turns)
    if not clip_speaks(row, cfg):
        return False
    if track is not None:
        if track.get("speaking") is not None:
            return bool(track["speaking"])
        if track.get("sync_conf") is not None:
            return track["sync_conf"] >= cfg.min_sync_conf_speaking
    return dominant


def speaker_score(track: Optional[dict]) -> float:
    """How strongly the sync scores say this track is the one speaking (for turn-taking)."""
    if track is None:
        return float("-inf")
    conf = track.get("sync_conf")
    base = conf if conf is not None else 0.0
    return base + (1000.0 if track.get("speaking") else 0.0)


def facts_text(row: dict) -> str:
    """The measured facts, in plain lines, for a model prompt."""
    dur = _num(row.get("end_s"), 0.0) - _num(row.get("start_s"), 0.0)
    lines = [f"Duration: {dur:.1f} s; frame {row.get('width')}x{row.get('height')}."]
    tracks = parse_tracks(row)
    lines.append(f"Face tracks: {len(tracks)}; measured shot size: {row.get('shot_size') or 'unknown'}.")
    for i, t in enumerate(tracks):
        lines.append(
            f"  track {i + 1}: {position_of(t)} of frame, on screen {t['coverage']:.0%} of the clip, "
            f"face height {t['height_ratio']:.0%} of the frame")
    sr = _num(row.get("speech_ratio"))
    lines.append("Speech: " + ("no audio" if row.get("has_audio") is False else
                               ("unknown" if sr is None else f"{sr:.0%} of the clip")) + ".")
    turns = parse_turns(row)
    if turns is not None:
        number = {t["track_id"]: i + 1 for i, t in enumerate(tracks)}
        said = [f"track {number[t['track']]} {t['start_s']:.1f}-{t['end_s']:.1f} s" for t in turns if t["track"] in number]
        lines.append("Speaking turns (measured, in order): " + ("; ".join(said) if said else "no face on screen speaks")
                     + ".")
    if row.get("motion_class"):
        lines.append(f"Motion: {row['motion_class']}.")
    return "\n".join(lines)


def _pair(chars: list[Character], tracks: list[dict]) -> dict[str, dict]:
    """Match characters to tracks: by left-to-right order when the counts agree, else each
    character (in tag order) to the nearest free track by its stated position."""
    if not chars or not tracks:
        return {}
    if len(chars) == len(tracks):
        by_x = sorted(tracks, key=lambda t: t["center"][0])
        ranked = sorted(chars, key=lambda c: (POSITION_X.get(c.position or "", 0.5), tag_number(c.tag)))
        if len({c.position for c in chars}) == len(chars):
            return {c.tag: t for c, t in zip(ranked, by_x)}
        # positions missing or tied: trust the tag order (Person1 = dominant track)
        return {c.tag: t for c, t in zip(sorted(chars, key=lambda c: tag_number(c.tag)), tracks)}
    free = list(tracks)
    pairs = {}
    for c in sorted(chars, key=lambda c: tag_number(c.tag)):
        if not free:
            break
        x = POSITION_X.get(c.position or "", None)
        best = free[0] if x is None else min(free, key=lambda t: abs(t["center"][0] - x))
        pairs[c.tag] = best
        free.remove(best)
    return pairs


def apply_facts(caption: Caption, row: dict, character: CharacterFilterConfig, cfg: CaptionConfig) -> Caption:
    """Overwrite what must come from measurements: each character's face track and speaking
    state, the turns of the speaking timeline (by the tags of the characters matched to their
    tracks), and the camera shot size (the row's ``shot_size`` column, so both always agree)."""
    tracks = character_tracks(parse_tracks(row), character)
    pairs = _pair(caption.characters, tracks)
    dominant_id = tracks[0]["track_id"] if tracks else None
    chars = []
    for c in caption.characters:
        t = pairs.get(c.tag)
        is_dom = (t is not None and t["track_id"] == dominant_id) or (not tracks and tag_number(c.tag) == 1)
        chars.append(c.model_copy(update={
            "track_id": None if t is None else track_int(t),
            "speaking": track_speaks(t, row, cfg, is_dom),
            "position": c.position or (position_of(t) if t else None),
        }))
    camera = caption.camera
    if row.get("shot_size") in FACE_SHOT_SIZES:
        camera = camera.model_copy(update={"shot_size": row["shot_size"]})
    tag_of = {c.track_id: c.tag for c in chars if c.track_id is not None}
    turns = [Turn(tag=tag_of[t["track"]], start_s=max(0.0, t["start_s"]), end_s=max(0.0, t["end_s"]))
             for t in parse_turns(row) or [] if t["track"] in tag_of]
    return Caption.model_validate({**caption.model_dump(), "characters": [c.model_dump() for c in chars],
                                   "camera": camera.model_dump(), "turns": [t.model_dump() for t in turns]})


def retag_turns(row: dict, caption: Caption) -> Optional[list[dict]]:
    """The row's speaking turns with ``person`` set to the caption's tag of each turn's track
    (None for a track no character was matched to); None when no timeline was measured."""
    turns = parse_turns(row)
    if turns is None:
        return None
    tag_of = {c.track_id: c.tag for c in caption.characters if c.track_id is not None}
    return [{**t, "person": tag_of.get(t["track"])} for t in turns]
