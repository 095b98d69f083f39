"""Multi-clip grouping of one source's kept clips: consistent tags, speaker from sync scores."""
from __future__ import annotations

import json
import random

from pipeline.finalize.grouping import group_clips
from pipeline.stages.language.caption import CaptionStage
from pipeline.stages.language.character import CharacterFilterStage
from schemas.caption import Camera, Caption, Character, dumps
from tests.helpers.prompt_tags import tag_report


def track(tid, x, speaking, sync, coverage=1.0):
    return {"track_id": tid, "coverage": coverage, "height_ratio": 0.3, "center": [x, 0.4],
            "bbox_mean": [x - 0.1, 0.2, x + 0.1, 0.5], "speaking": speaking, "sync_conf": sync}


def dialogue_row(i, speaker_x, start, scene=0, dur=3.0, track_name="st2v"):
    """Two people, left (x=0.25) and right (x=0.75); the speaking track comes first, as the face
    stage orders them, so the rules captioner's Person1 switches sides between clips."""
    other_x = 0.25 if speaker_x > 0.5 else 0.75
    faces = [track(0, speaker_x, True, 7.0), track(1, other_x, False, 0.4)]
    return {"clip_id": f"clip{i}", "source_uri": "mem://talk", "start_s": start, "end_s": start + dur,
            "scene_index": scene, "video": b"", "width": 640, "height": 360, "has_audio": True, "speech_ratio": 0.9,
            "faces": json.dumps(faces), "num_faces": 2, "shot_size": "medium", "sync_conf": 7.0,
            "motion_class": "static", "track": track_name, "backends": "{}", "reject_stage": None}


def captioned(rows):
    return CaptionStage().run(CharacterFilterStage().run(rows))


def test_turn_based_dialogue_in_one_scene_is_one_group():
    rows = captioned([dialogue_row(0, 0.75, 0.0), dialogue_row(1, 0.25, 3.0), dialogue_row(2, 0.75, 6.0)])
    # the rules captioner tags the speaker Person1 in each clip on its own ...
    assert [Caption.model_validate_json(r["caption"]).characters[0].position for r in rows] == ["right", "left", "right"]
    random.Random(0).shuffle(rows)
    out = group_clips(rows, max_clips=4)
    assert out is rows
    rows.sort(key=lambda r: r["start_s"])
    assert len({r["group_id"] for r in rows}) == 1 and rows[0]["group_id"] is not None
    assert [r["group_index"] for r in rows] == [0, 1, 2] and {r["group_size"] for r in rows} == {3}
    prompt = rows[0]["group_prompt"]
    assert all(r["group_prompt"] == prompt for r in rows)
    # ... the group keeps one tag per person (by side) and one speaker per clip from the sync scores
    assert prompt == (
        "Three video clips.\nCharacters:\nPerson1: a person.\nPerson2: a person.\n"
        "First clip: Medium shot, static camera. Person1 (right of frame) talks. Person2 (left of frame) listens.\n"
        "Second clip: Medium shot, static camera. Person1 (right of frame) listens. Person2 (left of frame) talks.\n"
        "Third clip: Medium shot, static camera. Person1 (right of frame) talks. Person2 (left of frame) listens.")
    defined, used = tag_report(prompt)
    assert defined == ["Person1", "Person2"] and used == {"Person1", "Person2"}


def test_max_clips_gap_track_and_rejects_split_groups():
    rows = captioned([dialogue_row(0, 0.75, 0.0), dialogue_row(1, 0.25, 3.0), dialogue_row(2, 0.75, 6.0),
                      dialogue_row(3, 0.25, 9.0), dialogue_row(4, 0.75, 15.0),  # 3 s gap before clip4
                      dialogue_row(5, 0.25, 18.0, track_name="t2v"), dialogue_row(6, 0.75, 21.0, track_name="t2v")])
    rows[3]["reject_stage"], rows[3]["reject_reason"] = "music", "music_ratio"
    group_clips(rows, max_clips=2)
    ids = [r["group_id"] for r in rows]
    assert ids[0] == ids[1] is not None and rows[0]["group_size"] == 2
    assert ids[2] is None  # its partner clip3 was rejected, the next kept clip is 9 s later
    assert ids[3] is None and ids[4] is None  # rejected; after a gap
    assert ids[5] == ids[6] is not None and ids[5] != ids[0]  # the t2v pair groups on its own
    assert ids[4] != ids[5]
    for r in rows:
        if r["group_id"] is None:
            assert r["group_index"] is None and r["group_prompt"] is None


def caption_row(i, appearances, start, scene, speaking=0):
    chars = [Character(tag=f"Person{k + 1}", appearance=a, position=["left", "right"][k], speaking=(k == speaking))
             for k, a in enumerate(appearances)]
    return {"clip_id": f"v{i}", "start_s": start, "end_s": start + 2.0, "scene_index": scene, "track": "st2v",
            "speech_ratio": 0.9, "has_audio": True, "faces": None, "reject_stage": None,
            "caption": dumps(Caption(characters=chars, camera=Camera(shot_size="close_up")))}


def test_across_a_cut_only_matching_appearances_group():
    rows = [
        caption_row(0, ["a man with a grey beard, a blue shirt", "a woman with red hair, a black coat"], 0.0, scene=0),
        caption_row(1, ["a man with grey beard in a blue shirt", "a woman with red hair and black coat"], 2.0, scene=1, speaking=1),
        caption_row(2, ["a child in a yellow hat", "a dog owner in a green jacket"], 4.0, scene=2),
    ]
    group_clips(rows, max_clips=4)
    assert rows[0]["group_id"] == rows[1]["group_id"] is not None and rows[2]["group_id"] is None
    p = rows[0]["group_prompt"]
    assert p.splitlines()[2] == "Person1: a man with a grey beard, a blue shirt."
    assert p.endswith("Second clip: Close-up shot. Person1 (left of frame) listens. Person2 (right of frame) talks.")


def test_rules_captions_never_link_across_a_cut():
    rows = captioned([dialogue_row(0, 0.75, 0.0, scene=0), dialogue_row(1, 0.25, 3.0, scene=1)])
    group_clips(rows, max_clips=4)
    assert [r["group_id"] for r in rows] == [None, None]


def test_different_cast_or_over_budget_stays_single():
    rows = [caption_row(0, ["a man with a grey beard"], 0.0, scene=0),
            caption_row(1, ["a man with a grey beard", "a woman with red hair"], 2.0, scene=0)]
    group_clips(rows, max_clips=4)
    assert [r["group_id"] for r in rows] == [None, None]
    rows = [caption_row(0, ["a man with a grey beard"], 0.0, scene=0), caption_row(1, ["a man with a grey beard"], 2.0, scene=0)]
    group_clips(rows, max_clips=4, budget=30)  # one clip fits in 30 tokens, two do not
    assert [r["group_id"] for r in rows] == [None, None]
    group_clips(rows, max_clips=4, budget=256)
    assert rows[0]["group_id"] == rows[1]["group_id"] is not None


def test_clip_with_measured_turns_keeps_all_its_speakers_in_the_group():
    rows = [dialogue_row(0, 0.75, 0.0), dialogue_row(1, 0.25, 3.0)]
    # the second clip holds a quick exchange: left, then right
    rows[1]["speaking_turns"] = [{"person": None, "track": 0, "start_s": 0.0, "end_s": 1.5, "score": 2.0, "x": 0.25},
                                 {"person": None, "track": 1, "start_s": 1.6, "end_s": 3.0, "score": 2.0, "x": 0.75}]
    rows = captioned(rows)
    group_clips(rows, max_clips=4)
    prompt = rows[0]["group_prompt"]
    assert prompt.splitlines()[-1] == ("Second clip: Medium shot, static camera. Person1 (right of frame) talks. "
                                       "Person2 (left of frame) talks. Person2 speaks first, then Person1.")
