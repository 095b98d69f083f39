"""The embedded default backend: no model, rules over the measured facts.

It decides prominence from the face tracks (coverage and size of the dominant face) and writes
captions that contain only what was measured: characters with their frame position and speaking
state, the shot size and, for a static clip, the camera movement. It cannot see appearance, so
every character is "a person"; rows say ``{"backend": "rules"}`` in ``backends`` so a dataset
audit never mistakes these captions for a VLM's.
"""
from __future__ import annotations

from typing import Optional, Sequence

from pipeline.stages.language import facts
from pipeline.stages.language.backends.base import LLMBackend, Result
from schemas.caption import Camera, Caption, Character, CharacterVerdict, Environment


class RulesBackend(LLMBackend):
    name = "rules"
    fallback = True

    def verdict(self, row: dict) -> CharacterVerdict:
        cfg = self.character_cfg
        tracks = facts.parse_tracks(row)
        if not tracks:
            return CharacterVerdict(has_prominent_character=False, num_characters=0, central_character=None,
                                    reason="no face track in the clip")
        dom = tracks[0]
        chars = facts.character_tracks(tracks, cfg)
        problems = []
        if dom["coverage"] < cfg.min_coverage:
            problems.append(f"dominant face on screen {dom['coverage']:.0%} of the clip < {cfg.min_coverage:.0%}")
        if dom["height_ratio"] < cfg.min_face_height_ratio:
            problems.append(f"dominant face {dom['height_ratio']:.1%} of frame height < {cfg.min_face_height_ratio:.1%}")
        if problems:
            n = len([t for t in tracks if t["coverage"] >= cfg.min_other_coverage])
            return CharacterVerdict(has_prominent_character=False, num_characters=n, central_character=None,
                                    reason="; ".join(problems))
        return CharacterVerdict(
            has_prominent_character=True, num_characters=len(chars), central_character="Person1",
            reason=(f"dominant face on screen {dom['coverage']:.0%} of the clip at {dom['height_ratio']:.0%} of "
                    f"frame height; {len(chars)} face track(s)"))

    def caption(self, row: dict) -> Caption:
        tracks = facts.character_tracks(facts.parse_tracks(row), self.character_cfg)
        chars = [
            Character(tag=f"Person{i + 1}", appearance="a person", position=facts.position_of(t),
                      track_id=facts.track_int(t))
            for i, t in enumerate(tracks)
        ]
        movement = "static" if row.get("motion_class") == "static" else None
        cap = Caption(characters=chars, environment=Environment(), camera=Camera(movement=movement))
        return facts.apply_facts(cap, row, self.character_cfg, self.caption_cfg)

    def verdicts(self, rows: Sequence[dict]) -> list[Result]:
        return [_safe(self.verdict, r) for r in rows]

    def captions(self, rows: Sequence[dict], verdicts: Sequence[Optional[CharacterVerdict]] = ()) -> list[Result]:
        return [_safe(self.caption, r) for r in rows]


def _safe(fn, row: dict) -> Result:
    try:
        return fn(row)
    except Exception as e:  # a malformed fact is that row's error, not the batch's
        return e
