"""Multi-clip samples: consecutive shots of one source with the same characters.

MoCha trains multi-character, turn-based dialogue from several consecutive shots described by
one prompt: the characters are defined once ("Characters: Person1 ..., Person2 ...") and each
clip line says who talks. :func:`group_clips` runs once per source on all its kept clips (the
writer calls it) and sets ``group_id``, ``group_index``, ``group_size`` and ``group_prompt``.

Two consecutive clips join one group when they follow each other within ``max_gap_s``, go to
the same track (st2v/t2v), show the same number of characters and there is evidence that they
are the same people: the same scene (windows of one continuous shot), or, across a cut,
appearance descriptions from a VLM that agree character by character. Rules-backend captions
carry no appearance ("a person"), so they never link clips across a cut. Tags follow the first
clip of the group; the characters of later clips are mapped to them by left-to-right order.
The speakers of each clip are those of its measured turns (the speaking timeline), mapped to
the group's tags; without a timeline, the one character whose face track the lip-sync scores
pick.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
from typing import Any, Optional

from pipeline.stages.language.config import CaptionConfig
from pipeline.stages.language.facts import POSITION_X, clip_speaks, parse_tracks, speaker_score
from schemas.caption import Caption, Character, tag_number
from schemas.prompt import render_prompt

log = logging.getLogger(__name__)

GROUP_COLUMNS = ("group_id", "group_index", "group_size", "group_prompt")
# Placeholder appearance of captions made without seeing the frames (rules backend).
NO_APPEARANCE = {"a person", "person", "unknown", ""}
_STOP = {"a", "an", "the", "with", "and", "in", "of", "wearing", "has", "is", "on", "her", "his", "their"}


def _words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z]+", (text or "").lower()) if w not in _STOP}


def appearance_match(a: str, b: str, min_overlap: float = 0.5) -> bool:
    if (a or "").strip().lower() in NO_APPEARANCE or (b or "").strip().lower() in NO_APPEARANCE:
        return False
    wa, wb = _words(a), _words(b)
    if not wa or not wb:
        return False
    return len(wa & wb) / len(wa | wb) >= min_overlap


def _ordered(chars: list[Character]) -> list[Character]:
    """Left to right by stated position; tag order where positions are missing or tied."""
    return sorted(chars, key=lambda c: (POSITION_X.get(c.position or "", 0.5), tag_number(c.tag)))


def _caption(row: dict) -> Optional[Caption]:
    raw = row.get("caption")
    if not raw:
        return None
    try:
        return Caption.model_validate(json.loads(raw) if isinstance(raw, str) else raw)
    except Exception:
        return None


def same_characters(a_row: dict, a: Caption, b_row: dict, b: Caption,
                    min_overlap: float = 0.5) -> Optional[dict[str, str]]:
    """Map of b's tags to a's tags when both clips show the same characters, else None."""
    if not a.characters or len(a.characters) != len(b.characters):
        return None
    pa, pb = _ordered(a.characters), _ordered(b.characters)
    same_shot = a_row.get("scene_index") is not None and a_row.get("scene_index") == b_row.get("scene_index")
    if not same_shot and not all(appearance_match(x.appearance, y.appearance, min_overlap)
                             for x, y in zip(pa, pb)):
        return None
    return {y.tag: x.tag for x, y in zip(pa, pb)}


def pick_speaker(caption: Caption, row: dict, cfg: CaptionConfig) -> Optional[str]:
    """Tag of the one character speaking in this clip (turn-based dialogue), from the sync
    scores of the face tracks; None when the clip has no speech from an on-screen face."""
    if not clip_speaks(row, cfg) or not any(c.speaking for c in caption.characters):
        return None
    by_id = {t["track_id"]: t for t in parse_tracks(row)}
    scored = [(speaker_score(by_id.get(c.track_id)), c.speaking, -tag_number(c.tag), c.tag) for c in caption.characters]
    best = max(scored)
    if best[0] == float("-inf"):  # no track facts: keep the caption's (fact-derived) speaker
        return next(c.tag for c in sorted(caption.characters, key=lambda c: tag_number(c.tag)) if c.speaking)
    return best[3]


def _relabel(caption: Caption, mapping: dict[str, str], speaker: Optional[str]) -> Caption:
    """Caption with group tags: the speakers of its turns when it has a timeline, else exactly
    one speaker. Built without re-validation: a clip of a group may show Person2 only, which
    is not a valid stand-alone caption."""
    turns = [t.model_copy(update={"tag": mapping[t.tag]}) for t in caption.turns if t.tag in mapping]
    speakers = {t.tag for t in turns} if turns else {mapping.get(speaker)} if speaker else set()
    chars = [c.model_copy(update={"tag": mapping[c.tag], "speaking": mapping[c.tag] in speakers})
             for c in caption.characters]
    chars.sort(key=lambda c: tag_number(c.tag))
    return caption.model_copy(update={"characters": chars, "turns": turns})


def _group_id(clip_ids: list[str]) -> str:
    return "g" + hashlib.sha1("|".join(clip_ids).encode()).hexdigest()[:16]


def group_clips(rows: list[dict], max_clips: int, tokenizer: Any = None, budget: Optional[int] = None,
                max_gap_s: Optional[float] = None, cfg: Optional[CaptionConfig] = None) -> list[dict]:
    """Set the group columns on every row of one source (in place; returns ``rows``).

    ``budget`` and ``max_gap_s`` default to ``cfg`` (``caption:`` of the run config). Rows that
    are rejected or have no valid caption stay singletons (``group_id`` None, like every clip
    that joins no group; its other group columns are None too)."""
    cfg = cfg or CaptionConfig()
    budget = cfg.token_budget if budget is None else budget
    max_gap_s = cfg.max_group_gap_s if max_gap_s is None else max_gap_s
    for r in rows:
        for col in GROUP_COLUMNS:
            r[col] = None
    if max_clips < 2:
        return rows
    live = [(r, _caption(r)) for r in rows if r.get("reject_stage") is None]
    live = [(r, c) for r, c in live if c is not None and c.characters]
    live.sort(key=lambda rc: (float(rc[0].get("start_s") or 0.0), str(rc[0].get("clip_id"))))

    groups: list[list[tuple[dict, Caption]]] = []  # members with group-tagged captions
    current: list[tuple[dict, Caption]] = []
    prev: Optional[tuple[dict, Caption, dict]] = None  # row, own caption, own tag -> group tag
    for row, cap in live:
        joined = False
        if current and prev is not None and len(current) < max_clips:
            p_row, p_cap, p_map = prev
            gap = float(row.get("start_s") or 0.0) - float(p_row.get("end_s") or 0.0)
            if -1e-3 <= gap <= max_gap_s and row.get("track") == p_row.get("track"):
                m = same_characters(p_row, p_cap, row, cap, cfg.min_appearance_overlap)
                if m is not None:
                    mapping = {own: p_map[prev_tag] for own, prev_tag in m.items()}
                    tagged = _relabel(cap, mapping, pick_speaker(cap, row, cfg))
                    if render_prompt([c for _, c in current] + [tagged], tokenizer, budget).fits:
                        current.append((row, tagged))
                        prev = (row, cap, mapping)
                        joined = True
        if not joined:
            if len(current) > 1:
                groups.append(current)
            identity = {c.tag: c.tag for c in cap.characters}
            current = [(row, _relabel(cap, identity, pick_speaker(cap, row, cfg)))]
            prev = (row, cap, identity)
    if len(current) > 1:
        groups.append(current)

    for members in groups:
        gid = _group_id([str(r.get("clip_id")) for r, _ in members])
        prompt = render_prompt([c for _, c in members], tokenizer, budget).text
        for i, (r, _) in enumerate(members):
            r.update(group_id=gid, group_index=i, group_size=len(members), group_prompt=prompt)
    return rows
