"""The MoCha structured prompt: one renderer for curation, training and ``mocha generate``.

Layout (MoCha, section on multi-character conversation prompts)::

    Two video clips.
    Characters:
    Person1: a woman with long brown hair, a blue blouse.
    Person2: a bearded man, a black sweater.
    First clip: Medium shot, eye-level, static camera. Setting: a kitchen. Person1 (left of frame) talks.
    Second clip: Close-up shot. Person2 (facing the camera) stays silent.

A clip where several characters take turns says in which order they speak, from the measured
timeline: ``Person1 (left of frame) talks. Person2 (right of frame) talks. Person1 speaks
first, then Person2.``

Each tag is defined once under "Characters:" with its visual attributes; the clip lines use the
tags only. To fit a token budget the renderer drops the least important attributes first (body
language, extra actions, camera angle ...) and never a tag: every character keeps its
definition line and its mention in each clip where it appears, with its speaking state.

The tokenizer is any object with ``encode(text)`` (a transformers tokenizer or a
``tokenizers.Tokenizer``) or ``__call__(text)`` returning ``input_ids``; with none, a
conservative word-piece estimate is used (see :func:`count_tokens`).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

from schemas.caption import Camera, Caption, Character, Environment, Turn, tag_number

DEFAULT_TOKEN_BUDGET = 256

_NUMBER_WORDS = ["Zero", "One", "Two", "Three", "Four", "Five", "Six", "Seven", "Eight", "Nine", "Ten"]
_ORDINALS = ["First", "Second", "Third", "Fourth", "Fifth", "Sixth", "Seventh", "Eighth", "Ninth", "Tenth"]
_SHOT = {
    "extreme_close_up": "extreme close-up shot",
    "close_up": "close-up shot",
    "medium_close_up": "medium close-up shot",
    "medium": "medium shot",
    "wide": "wide shot",
}
_ANGLE = {"eye_level": "eye-level", "high": "high angle", "low": "low angle", "overhead": "overhead", "dutch": "dutch angle"}
_MOVEMENT = {
    "static": "static camera",
    "pan": "panning camera",
    "tilt": "tilting camera",
    "zoom": "zooming camera",
    "dolly": "dolly camera",
    "tracking": "tracking camera",
    "handheld": "handheld camera",
}
_POSITION = {"left": "left of frame", "center": "center of frame", "right": "right of frame"}
_FACING = {
    "camera": "facing the camera",
    "left": "facing left",
    "right": "facing right",
    "away": "facing away",
    "down": "looking down",
    "up": "looking up",
}

# Importance of each droppable attribute: the lowest goes first when over budget. Speaking
# state and the first appearance phrase carry the identity/turn-taking signal MoCha trains on,
# so they go last; stylistic extras (body language, lighting, free summary) go first.
PRIORITY = {
    "summary": 10,
    "lighting": 12,
    "body_language": 15,
    "angle": 20,
    "action_extra": 25,
    "movement": 30,
    "facing": 35,
    "appearance_extra": 40,
    "emotion": 45,
    "position": 50,
    "action_first": 55,
    "setting": 60,
    "shot_size": 70,
    "appearance_first": 85,
    "turns": 90,
    "speaking": 95,
}


def count_tokens(text: str, tokenizer: Any = None) -> int:
    """Number of tokens of ``text`` as the trainer's tokenizer counts them (special tokens
    included). Without a tokenizer: an estimate where every word piece of up to 4 characters
    and every punctuation mark is one token, meant to be at or above T5's count on common
    English; pass the tokenizer for an exact budget."""
    if tokenizer is None:
        n = 0
        for piece in re.findall(r"[A-Za-z]+|[0-9]|[^\sA-Za-z0-9]", text):
            n += math.ceil(len(piece) / 4) if piece[0].isalpha() else 1
        return n + 1  # end-of-sequence token
    if hasattr(tokenizer, "encode"):
        out = tokenizer.encode(text)
        ids = getattr(out, "ids", out)  # tokenizers.Encoding or list of ids
        return len(ids)
    if callable(tokenizer):
        out = tokenizer(text)
        ids = out["input_ids"] if isinstance(out, dict) or hasattr(out, "keys") else out
        if ids and isinstance(ids[0], (list, tuple)):
            ids = ids[0]
        return len(ids)
    raise TypeError(f"tokenizer {type(tokenizer).__name__} has neither encode() nor __call__()")


def count_word(n: int) -> str:
    return _NUMBER_WORDS[n] if n < len(_NUMBER_WORDS) else str(n)


def ordinal(i: int) -> str:
    return f"{_ORDINALS[i]} clip" if i < len(_ORDINALS) else f"Clip {i + 1}"


def _split_phrases(text: str) -> list[str]:
    parts = [p.strip() for p in re.split(r"[;,]", text or "")]
    return [p.rstrip(".") for p in parts if p.strip(" .")]


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _sentence(s: str) -> str:
    s = s.strip()
    return s if s.endswith((".", "!", "?")) else s + "."


@dataclass
class RenderedPrompt:
    text: str
    num_tokens: int
    budget: int
    fits: bool
    dropped: list[str] = field(default_factory=list)  # slot keys removed to fit, in order


@dataclass(frozen=True)
class _Slot:
    key: tuple  # (kind, clip index or -1, tag or "", item index)
    priority: int
    order: int  # position of first appearance in the text; later goes first among equals


class _Renderer:
    def __init__(self, captions: Sequence[Caption]):
        self.captions = list(captions)
        self.definitions: dict[str, Character] = {}
        for cap in self.captions:
            for ch in cap.characters:
                self.definitions.setdefault(ch.tag, ch)
        self.tags = sorted(self.definitions, key=tag_number)
        self.slots: list[_Slot] = []
        self._collect()

    def _add(self, kind: str, clip: int, tag: str = "", item: int = 0, prio_key: Optional[str] = None) -> None:
        self.slots.append(_Slot((kind, clip, tag, item), PRIORITY[prio_key or kind], len(self.slots)))

    def _collect(self) -> None:
        for tag in self.tags:
            for j, _ in enumerate(_split_phrases(self.definitions[tag].appearance)):
                self._add("appearance", -1, tag, j, "appearance_first" if j == 0 else "appearance_extra")
        for i, cap in enumerate(self.captions):
            if cap.camera.shot_size:
                self._add("shot_size", i)
            if cap.camera.angle:
                self._add("angle", i)
            if cap.camera.movement:
                self._add("movement", i)
            if cap.environment.setting:
                self._add("setting", i)
            if cap.environment.lighting:
                self._add("lighting", i)
            for ch in cap.characters:
                if ch.position:
                    self._add("position", i, ch.tag)
                if ch.facing:
                    self._add("facing", i, ch.tag)
                if ch.emotion:
                    self._add("emotion", i, ch.tag)
                self._add("speaking", i, ch.tag)
                for j, _ in enumerate(ch.actions):
                    self._add("action", i, ch.tag, j, "action_first" if j == 0 else "action_extra")
                if ch.body_language:
                    self._add("body_language", i, ch.tag)
            if len(_order(cap)) > 1:
                self._add("turns", i)
            if cap.summary:
                self._add("summary", i)

    def render(self, dropped: set) -> str:
        def on(kind, clip, tag="", item=0):
            return (kind, clip, tag, item) not in dropped

        lines = [f"{count_word(len(self.captions))} video clip{'s' if len(self.captions) != 1 else ''}."]
        if self.tags:
            lines.append("Characters:")
            for tag in self.tags:
                phrases = [p for j, p in enumerate(_split_phrases(self.definitions[tag].appearance))
                           if on("appearance", -1, tag, j)]
                lines.append(f"{tag}: {', '.join(phrases)}." if phrases else f"{tag}: a person.")
        for i, cap in enumerate(self.captions):
            parts = []
            cam = []
            if cap.camera.shot_size and on("shot_size", i):
                cam.append(_SHOT[cap.camera.shot_size])
            if cap.camera.angle and on("angle", i):
                cam.append(_ANGLE[cap.camera.angle])
            if cap.camera.movement and on("movement", i):
                cam.append(_MOVEMENT[cap.camera.movement])
            if cam:
                parts.append(_cap(", ".join(cam)) + ".")
            env = []
            if cap.environment.setting and on("setting", i):
                env.append(cap.environment.setting.strip().rstrip("."))
            if cap.environment.lighting and on("lighting", i):
                env.append(cap.environment.lighting.strip().rstrip("."))
            if env:
                parts.append("Setting: " + ", ".join(env) + ".")
            someone_speaks = any(c.speaking for c in cap.characters)
            for ch in sorted(cap.characters, key=lambda c: tag_number(c.tag)):
                parts.append(self._character(i, ch, someone_speaks, on))
            order = _order(cap)
            if len(order) > 1 and on("turns", i):
                parts.append(f"{order[0]} speaks first, " + ", ".join(f"then {t}" for t in order[1:]) + ".")
            if cap.summary and on("summary", i):
                parts.append(_sentence(cap.summary))
            lines.append(f"{ordinal(i)}: " + " ".join(parts) if parts else f"{ordinal(i)}: no characters.")
        return "\n".join(lines)

    @staticmethod
    def _character(i: int, ch: Character, someone_speaks: bool, on: Callable) -> str:
        attrs = []
        if ch.position and on("position", i, ch.tag):
            attrs.append(_POSITION[ch.position])
        if ch.facing and on("facing", i, ch.tag):
            attrs.append(_FACING[ch.facing])
        if ch.emotion and on("emotion", i, ch.tag):
            attrs.append(ch.emotion.strip().rstrip("."))
        text = ch.tag + (f" ({', '.join(attrs)})" if attrs else "")
        verbs = []
        if on("speaking", i, ch.tag):
            verbs.append("talks" if ch.speaking else ("listens" if someone_speaks else "stays silent"))
        verbs += [a.rstrip(".") for j, a in enumerate(ch.actions) if on("action", i, ch.tag, j)]
        if verbs:
            text += " " + ", ".join(verbs)
        if ch.body_language and on("body_language", i, ch.tag):
            text += "; " + ch.body_language.strip().rstrip(".")
        return text + "."


def _order(cap: Caption) -> list[str]:
    # captions built without validation (a group's clip) may lack the field
    return cap.speaking_order() if getattr(cap, "turns", None) else []


def render_prompt(
    captions: Sequence[Caption] | Caption,
    tokenizer: Any = None,
    budget: int = DEFAULT_TOKEN_BUDGET,
) -> RenderedPrompt:
    """Render one or more clips' captions (tags already consistent across them) within
    ``budget`` tokens. When even the bare skeleton (tags, speaking states) does not fit,
    the skeleton is returned with ``fits=False``; tags are never removed."""
    if isinstance(captions, Caption):
        captions = [captions]
    if not captions:
        raise ValueError("render_prompt needs at least one caption")
    r = _Renderer(captions)
    dropped: set = set()
    order: list[str] = []
    text = r.render(dropped)
    n = count_tokens(text, tokenizer)
    # Lowest priority first; among equals the latest in the text (later clips, later characters).
    queue = sorted(r.slots, key=lambda s: (s.priority, -s.order))
    while n > budget and queue:
        slot = queue.pop(0)
        dropped.add(slot.key)
        kind, clip, tag, item = slot.key
        order.append(kind + (f":clip{clip}" if clip >= 0 else "") + (f":{tag}" if tag else "") + (f":{item}" if item else ""))
        text = r.render(dropped)
        n = count_tokens(text, tokenizer)
    return RenderedPrompt(text=text, num_tokens=n, budget=budget, fits=n <= budget, dropped=order)


def clip_caption(data: dict) -> Caption:
    """One clip of a multi-clip prompt from JSON: every field is validated, but the clip may
    show a subset of the group's characters (e.g. only Person2 in a reverse shot)."""
    if not isinstance(data, dict):
        raise ValueError(f"a clip caption must be a JSON object, got {type(data).__name__}")
    unknown = set(data) - set(Caption.model_fields)
    if unknown:
        raise ValueError(f"unknown caption keys: {sorted(unknown)}")
    chars = [Character.model_validate(c) for c in data.get("characters") or []]
    tags = [c.tag for c in chars]
    if len(set(tags)) != len(tags):
        raise ValueError(f"a character tag appears twice in one clip: {tags}")
    summary = data.get("summary")
    if summary is not None and not isinstance(summary, str):
        raise ValueError("summary must be a string")
    turns = [Turn.model_validate(t) for t in data.get("turns") or []]
    if any(t.tag not in tags for t in turns):
        raise ValueError(f"a turn names a character not in the clip: {[t.tag for t in turns]}")
    return Caption.model_construct(characters=chars, environment=Environment.model_validate(data.get("environment") or {}),
                                   camera=Camera.model_validate(data.get("camera") or {}), summary=summary, turns=turns)


def render_from_json(doc: Any, tokenizer: Any = None, budget: int = DEFAULT_TOKEN_BUDGET) -> RenderedPrompt:
    """Render a prompt from caption JSON as a user writes it for ``mocha generate``: one caption
    object, a list of them, or ``{"clips": [...]}`` (text or parsed)."""
    import json

    if isinstance(doc, (str, bytes)):
        doc = json.loads(doc)
    if isinstance(doc, dict) and "clips" in doc:
        doc = doc["clips"]
    clips = doc if isinstance(doc, list) else [doc]
    return render_prompt([clip_caption(c) for c in clips], tokenizer, budget)
