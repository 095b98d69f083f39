"""JSON contracts of the language-model stages: the prominent-character verdict and the
structured caption stored in a clip's ``character_verdict`` and ``caption`` columns.

A model (VLM, server or the rules backend) must answer with JSON that validates against these
models; anything else is treated as invalid output. Characters are tagged ``Person1``,
``Person2`` ... in the order of the clip's face tracks (dominant first), so the tag is the
only name a prompt ever uses for a character.
"""
from __future__ import annotations

import json
import re
from typing import Literal, Optional

from pydantic import BaseModel, Field, field_validator, model_validator

from schemas.base import Strict

TAG_RE = re.compile(r"^Person([1-9][0-9]*)$")

Position = Literal["left", "center", "right"]
Facing = Literal["camera", "left", "right", "away", "down", "up"]
ShotSize = Literal["extreme_close_up", "close_up", "medium_close_up", "medium", "wide"]
Angle = Literal["eye_level", "high", "low", "overhead", "dutch"]
Movement = Literal["static", "pan", "tilt", "zoom", "dolly", "tracking", "handheld"]


def tag_number(tag: str) -> int:
    m = TAG_RE.match(tag)
    if not m:
        raise ValueError(f"{tag!r} is not a character tag (Person1, Person2, ...)")
    return int(m.group(1))


class CharacterVerdict(Strict):
    """Answer of the prominent-character filter for one clip."""

    has_prominent_character: bool
    num_characters: int = Field(ge=0, le=20)
    # Tag of the central character (Person1 is the dominant face track); None when there is none.
    central_character: Optional[str] = None
    reason: str = Field(min_length=1, max_length=300)

    @field_validator("central_character")
    @classmethod
    def _tag(cls, v):
        if v is not None:
            tag_number(v)
        return v

    @model_validator(mode="after")
    def _consistent(self):
        if self.has_prominent_character:
            if self.num_characters < 1:
                raise ValueError("has_prominent_character is true but num_characters is 0")
            if self.central_character is None:
                raise ValueError("has_prominent_character is true but central_character is missing")
        if self.central_character is not None and tag_number(self.central_character) > max(self.num_characters, 1):
            raise ValueError(f"central_character {self.central_character} exceeds num_characters {self.num_characters}")
        return self


class Character(Strict):
    tag: str
    # Visual attributes that identify the character across clips (hair, clothing, age ...).
    appearance: str = Field(min_length=1, max_length=300)
    position: Optional[Position] = None
    facing: Optional[Facing] = None
    emotion: Optional[str] = Field(None, max_length=60)
    # Set from the measured lip-sync / VAD facts by the caption stage, never from the model's guess.
    speaking: bool = False
    actions: list[str] = Field(default_factory=list, max_length=8)
    body_language: Optional[str] = Field(None, max_length=120)
    # Face track of the visual stage this character was matched to (None: not matched).
    track_id: Optional[int] = None

    @field_validator("tag")
    @classmethod
    def _tag(cls, v):
        tag_number(v)
        return v

    @field_validator("actions")
    @classmethod
    def _actions(cls, v):
        return [a.strip() for a in v if a and a.strip()]


class Turn(Strict):
    """One turn of the measured speaking timeline: the character speaking and when (clip seconds)."""

    tag: str
    start_s: float = Field(ge=0)
    end_s: float = Field(ge=0)

    @field_validator("tag")
    @classmethod
    def _tag(cls, v):
        tag_number(v)
        return v

    @model_validator(mode="after")
    def _span(self):
        if self.end_s < self.start_s:
            raise ValueError(f"turn of {self.tag} ends ({self.end_s}) before it starts ({self.start_s})")
        return self


class Environment(Strict):
    setting: Optional[str] = Field(None, max_length=200)  # e.g. "a kitchen", "outdoors by a gazebo"
    lighting: Optional[str] = Field(None, max_length=80)


class Camera(Strict):
    shot_size: Optional[ShotSize] = None
    angle: Optional[Angle] = None
    movement: Optional[Movement] = None


class Caption(Strict):
    """Structured caption of one clip."""

    characters: list[Character] = Field(default_factory=list, max_length=10)
    environment: Environment = Field(default_factory=Environment)
    camera: Camera = Field(default_factory=Camera)
    # One-sentence description of what happens; optional, the prompt is built from the fields.
    summary: Optional[str] = Field(None, max_length=400)
    # Who speaks when, in time order: filled from the speaking timeline by the caption stage,
    # never from a model's guess (a model leaves it empty).
    turns: list[Turn] = Field(default_factory=list, max_length=64)

    @model_validator(mode="after")
    def _tags(self):
        numbers = [tag_number(c.tag) for c in self.characters]
        if sorted(numbers) != list(range(1, len(numbers) + 1)):
            raise ValueError(
                "character tags must be Person1..PersonN, each once; got " + ", ".join(c.tag for c in self.characters)
            )
        tags = {c.tag for c in self.characters}
        for t in self.turns:
            if t.tag not in tags:
                raise ValueError(f"turn of {t.tag}, who is not among the characters")
        if any(b.start_s < a.start_s for a, b in zip(self.turns, self.turns[1:])):
            raise ValueError("turns must be in time order")
        return self

    def character(self, tag: str) -> Optional[Character]:
        return next((c for c in self.characters if c.tag == tag), None)

    def speaking_order(self) -> list[str]:
        """Tags of the turns in time order, consecutive turns of one character counted once."""
        order: list[str] = []
        for t in self.turns:
            if not order or order[-1] != t.tag:
                order.append(t.tag)
        return order


def caption_json_schema() -> dict:
    return Caption.model_json_schema()


def verdict_json_schema() -> dict:
    return CharacterVerdict.model_json_schema()


def dumps(model: BaseModel) -> str:
    """Compact, key-stable JSON for the row columns."""
    return json.dumps(model.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
