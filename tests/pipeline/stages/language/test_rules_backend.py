"""The embedded `rules` backend: prominence and captions from measured facts only."""
from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.stages.language.caption import CaptionStage
from pipeline.stages.language.character import CharacterFilterStage
from pipeline.stages.language.config import CaptionConfig, CharacterFilterConfig
from pipeline.stages.language.facts import apply_facts
from schemas.caption import Caption, Character, CharacterVerdict
from tests.helpers.prompt_tags import tag_report


def track(tid=0, coverage=1.0, height=0.4, x=0.5, speaking=None, sync=None):
    return {"track_id": tid, "coverage": coverage, "height_ratio": height, "center": [x, 0.4],
            "bbox_mean": [x - 0.1, 0.2, x + 0.1, 0.6], "speaking": speaking, "sync_conf": sync}


def row(clip_id="c", faces=None, speech_ratio=0.9, sync_conf=6.0, shot_size="close_up", **kw):
    r = {"clip_id": clip_id, "source_uri": "mem://s", "start_s": 0.0, "end_s": 5.0, "scene_index": 0, "video": b"",
         "fps": 25.0, "width": 640, "height": 360, "num_frames": 125, "has_audio": True, "speech_ratio": speech_ratio,
         "faces": None if faces is None else json.dumps(faces), "shot_size": shot_size, "sync_conf": sync_conf,
         "motion_class": "normal", "backends": "{}", "reject_stage": None}
    r.update(kw)
    return r


def run(rows):
    rows = CharacterFilterStage().run(rows)
    return CaptionStage().run(rows)


def test_talking_close_up_is_kept_with_fact_based_caption():
    (r,) = run([row(faces=[track(tid=7, speaking=True, sync=6.0)], motion_class="static")])
    assert r["reject_stage"] is None
    v = CharacterVerdict.model_validate_json(r["character_verdict"])
    assert v.has_prominent_character and v.num_characters == 1 and v.central_character == "Person1"
    cap = Caption.model_validate_json(r["caption"])
    (p1,) = cap.characters
    assert (p1.tag, p1.speaking, p1.track_id, p1.position, p1.appearance) == ("Person1", True, 7, "center", "a person")
    assert cap.camera.shot_size == "close_up" and cap.camera.movement == "static"
    assert r["prompt"] == ("One video clip.\nCharacters:\nPerson1: a person.\n"
                           "First clip: Close-up shot, static camera. Person1 (center of frame) talks.")
    b = json.loads(r["backends"])
    assert b["character"] == {"backend": "rules", "fallback": True} and b["caption"]["backend"] == "rules"


@pytest.mark.parametrize("faces,why", [
    ([], "no face track"),
    ([track(coverage=0.3)], "on screen 30%"),
    ([track(height=0.01)], "1.0% of frame height"),
])
def test_clips_without_prominent_face_are_dropped(faces, why):
    (r,) = run([row(faces=faces)])
    assert (r["reject_stage"], r["reject_reason"]) == ("character", "no_prominent_character")
    v = json.loads(r["character_verdict"])
    assert v["has_prominent_character"] is False and why in v["reason"]
    assert r["caption"] is None and r["prompt"] is None  # the caption stage skipped the rejected clip


def test_two_characters_speaker_from_sync():
    faces = [track(0, x=0.75, speaking=True, sync=7.0), track(1, coverage=0.8, x=0.25, speaking=False, sync=0.5),
             track(2, coverage=0.1, x=0.5)]  # a passer-by is not a character
    (r,) = run([row(faces=faces, shot_size="medium")])
    cap = Caption.model_validate_json(r["caption"])
    assert [(c.tag, c.position, c.speaking, c.track_id) for c in cap.characters] == [
        ("Person1", "right", True, 0), ("Person2", "left", False, 1)]
    assert "Person1 (right of frame) talks. Person2 (left of frame) listens." in r["prompt"]
    assert json.loads(r["character_verdict"])["num_characters"] == 2


def test_no_speech_means_nobody_speaks():
    (r,) = run([row(faces=[track(speaking=True)], speech_ratio=0.0)])
    assert r["reject_stage"] is None
    assert Caption.model_validate_json(r["caption"]).characters[0].speaking is False
    assert "stays silent" in r["prompt"]


def test_clip_level_face_facts_without_tracks():
    (r,) = run([row(faces=None, num_faces=1, face_height_ratio=0.3)])
    assert r["reject_stage"] is None
    assert Caption.model_validate_json(r["caption"]).characters[0].speaking is True


def test_malformed_faces_json_is_a_clear_verdict_not_a_crash():
    r = row()
    r["faces"] = "{not json"
    (out,) = run([r])
    assert out["reject_reason"] == "no_prominent_character"


def test_model_speaking_guess_is_overwritten_by_facts():
    cap = Caption(characters=[Character(tag="Person1", appearance="a man", position="left", speaking=True),
                              Character(tag="Person2", appearance="a woman", position="right", speaking=False)])
    faces = [track(0, x=0.8, speaking=True, sync=8.0), track(1, x=0.2, speaking=False, sync=0.1)]
    fixed = apply_facts(cap, row(faces=faces, shot_size="wide"), CharacterFilterConfig(), CaptionConfig())
    # the woman on the right owns the speaking track; the model's guess is replaced
    assert [(c.tag, c.track_id, c.speaking) for c in fixed.characters] == [("Person1", 1, False), ("Person2", 0, True)]
    assert fixed.camera.shot_size == "wide"


# --- real clips -------------------------------------------------------------------------------
# Facts derived here with what exists until the visual stage lands: YuNet faces on frames every
# 0.5 s of the first 8 s (one track: the largest face), Silero VAD speech ratio, no lip-sync.

REAL = {
    "closeup_talk_hdtf_katiehill.mp4": True,
    "medium_talk_latentsync_demo1.mp4": True,
    "medium_talk_latentsync_demo2.mp4": True,
    "cuts_nature_noperson_noaudio.mp4": False,
}


def measured_row(path, weights_dir, vad_model, span_s=8.0) -> dict:
    import cv2
    import torch
    from silero_vad import get_speech_timestamps

    from common.media import decode_audio, fit_size, iter_frames, probe

    info = probe(str(path))
    end = min(info.duration_s, span_s)
    w, h = fit_size(info.width, info.height, 640)
    det = cv2.FaceDetectorYN.create(str(weights_dir / "face_detection_yunet_2023mar.onnx"), "", (w, h), 0.8, 0.3, 20)
    sampled, hits, next_t = 0, [], 0.0
    for t, frame in iter_frames(str(path), fmt="bgr24", width=w, height=h):
        if t >= end:
            break
        if t + 1e-6 < next_t:
            continue
        next_t += 0.5
        sampled += 1
        _, faces = det.detect(frame)
        if faces is not None and len(faces):
            x, y, bw, bh = max(faces, key=lambda f: f[3])[:4]
            hits.append((bh / h, (x + bw / 2) / w, (y + bh / 2) / h))
    faces = []
    if hits:
        hr, cx, cy = np.median(np.array(hits), axis=0)
        faces = [{"track_id": 0, "coverage": len(hits) / sampled, "height_ratio": float(hr), "center": [float(cx), float(cy)],
                  "speaking": None, "sync_conf": None}]
    pcm = decode_audio(str(path))
    speech_ratio = None
    if pcm is not None:
        pcm = pcm[: int(end * 16000)]
        segs = get_speech_timestamps(torch.from_numpy(pcm), vad_model, sampling_rate=16000)
        speech_ratio = sum(s["end"] - s["start"] for s in segs) / max(len(pcm), 1)
    return row(clip_id=path.name, faces=faces, speech_ratio=speech_ratio, sync_conf=None, shot_size=None,
               has_audio=pcm is not None, end_s=end, width=info.width, height=info.height, num_faces=len(faces))


@pytest.fixture(scope="module")
def real_rows(real_dir, weights_dir):
    from silero_vad import load_silero_vad

    vad = load_silero_vad(onnx=True)
    return run([measured_row(real_dir / name, weights_dir, vad) for name in REAL])


@pytest.mark.realdata
def test_real_clips_rules_backend(real_rows):
    for r in real_rows:
        keep = REAL[r["clip_id"]]
        assert (r["reject_stage"] is None) == keep, (r["clip_id"], r["reject_reason"], r["character_verdict"])
        if keep:
            cap = Caption.model_validate_json(r["caption"])
            assert len(cap.characters) == 1
            assert cap.characters[0].speaking, r["clip_id"]  # VAD says they talk, the only face is the speaker
            defined, used = tag_report(r["prompt"])
            assert defined == ["Person1"] and used == {"Person1"}
        else:
            assert r["reject_reason"] == "no_prominent_character"
            assert "no face track" in json.loads(r["character_verdict"])["reason"]


def test_stages_from_run_config_and_disabled_filter():
    from pipeline.engine.config import load_config

    cfg = load_config(overrides=["character.enabled=false", "caption.token_budget=40"])
    f, c = CharacterFilterStage.from_config(cfg), CaptionStage.from_config(cfg)
    (r,) = c.run(f.run([row(faces=[])]))  # no face, but the filter is off
    assert r["reject_stage"] is None and r["character_verdict"] is None
    assert json.loads(r["backends"])["character"] == {"backend": "disabled", "fallback": False}
    assert c.cfg.token_budget == 40 and c.character_cfg.enabled is False
    assert "Characters:" not in r["prompt"] and r["prompt"].startswith("One video clip.")


def _turns(*spec):
    return [{"person": None, "track": tid, "start_s": a, "end_s": b, "score": 2.0, "x": x} for tid, a, b, x in spec]


def test_speaking_timeline_decides_who_speaks_and_the_order():
    # Person1 = the first face track; the right face speaks first, then the left one, then right
    faces = [track(tid=4, x=0.75, speaking=True, sync=3.0), track(tid=9, x=0.25, speaking=False, sync=1.0)]
    turns = _turns((4, 0.1, 2.0, 0.75), (9, 2.1, 3.5, 0.25), (4, 3.6, 4.9, 0.75))
    (r,) = run([row(faces=faces, speaking_turns=turns, shot_size="medium")])
    cap = Caption.model_validate_json(r["caption"])
    assert [(c.tag, c.track_id, c.speaking) for c in cap.characters] == [("Person1", 4, True), ("Person2", 9, True)]
    assert [(t.tag, t.start_s, t.end_s) for t in cap.turns] == [("Person1", 0.1, 2.0), ("Person2", 2.1, 3.5),
                                                                ("Person1", 3.6, 4.9)]
    assert r["prompt"].endswith("Person1 (right of frame) talks. Person2 (left of frame) talks. "
                                "Person1 speaks first, then Person2, then Person1.")
    assert [t["person"] for t in r["speaking_turns"]] == ["Person1", "Person2", "Person1"]


def test_measured_silence_overrides_the_sync_verdict():
    # the speakers stage found nobody on screen speaking: no character talks, whatever sync says
    (r,) = run([row(faces=[track(tid=1, speaking=True, sync=6.0)], speaking_turns=[])])
    cap = Caption.model_validate_json(r["caption"])
    assert not cap.characters[0].speaking and cap.turns == [] and r["speaking_turns"] == []
    assert "Person1 (center of frame) stays silent." in r["prompt"]


def test_vlm_caption_gets_the_measured_turns_by_its_own_tags():
    # a model tagged the left person Person1; the timeline's tracks are mapped to its tags
    faces = [track(tid=4, x=0.75), track(tid=9, x=0.25)]
    r = row(faces=faces, speaking_turns=_turns((9, 0.0, 2.0, 0.25), (4, 2.2, 4.0, 0.75)))
    model = Caption(characters=[Character(tag="Person1", appearance="a man in grey", position="left", speaking=True),
                                Character(tag="Person2", appearance="a woman in red", position="right")])
    cap = apply_facts(model, r, CharacterFilterConfig(), CaptionConfig())
    assert [(c.tag, c.track_id, c.speaking) for c in cap.characters] == [("Person1", 9, True), ("Person2", 4, True)]
    assert cap.speaking_order() == ["Person1", "Person2"]


def test_model_prompt_lists_the_measured_turns():
    from pipeline.stages.language.facts import facts_text

    faces = [track(tid=4, x=0.75), track(tid=9, x=0.25)]
    text = facts_text(row(faces=faces, speaking_turns=_turns((9, 0.0, 2.0, 0.25), (4, 2.2, 4.0, 0.75))))
    assert "Speaking turns (measured, in order): track 2 0.0-2.0 s; track 1 2.2-4.0 s." in text
    assert "no face on screen speaks" in facts_text(row(faces=faces, speaking_turns=[]))
