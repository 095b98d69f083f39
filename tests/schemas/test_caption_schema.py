"""Caption and verdict models: what validates, what does not, and the exported JSON Schema."""
from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from schemas.caption import Caption, CharacterVerdict, caption_json_schema, dumps, verdict_json_schema

GOOD = {
    "characters": [
        {"tag": "Person1", "appearance": "a man with a grey beard", "position": "left", "facing": "right",
         "emotion": "calm", "speaking": True, "actions": ["nods", "  "], "body_language": "relaxed"},
        {"tag": "Person2", "appearance": "a woman in a red coat", "position": "right"},
    ],
    "environment": {"setting": "a cafe", "lighting": "daylight"},
    "camera": {"shot_size": "medium", "angle": "eye_level", "movement": "static"},
    "summary": "Two people talk at a table.",
}


def test_good_caption_round_trips():
    cap = Caption.model_validate(GOOD)
    assert [c.tag for c in cap.characters] == ["Person1", "Person2"]
    assert cap.characters[0].actions == ["nods"]  # blank actions are dropped
    assert cap.characters[1].speaking is False and cap.characters[1].track_id is None
    again = Caption.model_validate_json(dumps(cap))
    assert again == cap
    assert cap.character("Person2").appearance == "a woman in a red coat"


@pytest.mark.parametrize("tags", [["Person1", "Person1"], ["Person2"], ["Person1", "Person3"], ["person1"], ["Bob"],
                                  ["Person0"]])
def test_tags_must_be_person1_to_n(tags):
    data = {"characters": [{"tag": t, "appearance": "someone"} for t in tags]}
    with pytest.raises(ValidationError):
        Caption.model_validate(data)


@pytest.mark.parametrize("patch", [
    {"mood": "happy"},  # unknown key
    {"camera": {"shot_size": "medium_wide"}},  # not a shot size
    {"camera": {"movement": "spinning"}},
    {"characters": [{"tag": "Person1", "appearance": ""}]},  # empty appearance
    {"characters": [{"tag": "Person1", "appearance": "x", "position": "top"}]},
    {"characters": [{"tag": "Person1", "appearance": "x", "speaking": "maybe"}]},
])
def test_invalid_captions_are_refused(patch):
    with pytest.raises(ValidationError):
        Caption.model_validate({**GOOD, **patch})


def test_verdict_consistency():
    ok = CharacterVerdict(has_prominent_character=True, num_characters=2, central_character="Person2", reason="two")
    assert ok.central_character == "Person2"
    CharacterVerdict(has_prominent_character=False, num_characters=0, reason="empty street")
    bad = [
        dict(has_prominent_character=True, num_characters=0, central_character="Person1", reason="x"),
        dict(has_prominent_character=True, num_characters=1, central_character=None, reason="x"),
        dict(has_prominent_character=True, num_characters=1, central_character="Person3", reason="x"),
        dict(has_prominent_character=True, num_characters=1, central_character="the man", reason="x"),
        dict(has_prominent_character=False, num_characters=-1, reason="x"),
        dict(has_prominent_character=False, num_characters=0, reason=""),
    ]
    for b in bad:
        with pytest.raises(ValidationError):
            CharacterVerdict(**b)


def test_json_schema_export_validates_the_same_documents():
    jsonschema = pytest.importorskip("jsonschema")
    schema = caption_json_schema()
    json.dumps(schema)  # serialisable, as sent to a server for guided decoding
    jsonschema.validate(GOOD, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**GOOD, "camera": {"shot_size": "medium_wide"}}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**GOOD, "mood": "x"}, schema)
    vs = verdict_json_schema()
    assert set(vs["required"]) == {"has_prominent_character", "num_characters", "reason"}
    jsonschema.validate({"has_prominent_character": False, "num_characters": 0, "reason": "no one"}, vs)


def test_turns_name_characters_in_time_order():
    from schemas.caption import Caption

    two = [{"tag": "Person1", "appearance": "x"}, {"tag": "Person2", "appearance": "y"}]
    cap = Caption.model_validate({"characters": two, "turns": [
        {"tag": "Person2", "start_s": 0.0, "end_s": 1.0}, {"tag": "Person2", "start_s": 1.2, "end_s": 2.0},
        {"tag": "Person1", "start_s": 2.1, "end_s": 3.0}]})
    assert cap.speaking_order() == ["Person2", "Person1"]
    for bad, why in [([{"tag": "Person3", "start_s": 0, "end_s": 1}], "not among the characters"),
                     ([{"tag": "Person1", "start_s": 2, "end_s": 3}, {"tag": "Person2", "start_s": 0, "end_s": 1}],
                      "time order"),
                     ([{"tag": "Person1", "start_s": 2, "end_s": 1}], "ends")]:
        with pytest.raises(ValueError, match=why):
            Caption.model_validate({"characters": two, "turns": bad})
