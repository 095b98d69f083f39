"""The speakers stage: published crops, the speaking timeline (Viterbi turns, refined changes,
merged pauses), st2v admission and its reasons, the sync-facts fallback; and on the real clips
with the published weights: talkers speak, silent / music / still faces do not, mismatched
speech and reaction shots are not st2v."""
from __future__ import annotations

import json

import numpy as np
import pytest

from common import media
from pipeline.finalize.route import route
from pipeline.stages.visual.speakers import (
    NOBODY,
    SILENCE,
    SpeakersConfig,
    SpeakersStage,
    crop_boxes,
    decode_crops,
    face_crop,
    refine_changes,
    resolve_checkpoint,
    speech_mask,
    track_audio,
    turns_from_labels,
    viterbi_speakers,
)

CFG = SpeakersConfig()


# --- crops -------------------------------------------------------------------------------------

def test_published_crop_layout():
    img = np.zeros((200, 300), np.uint8)
    cx, cy, bs = 150.0, 90.0, 20.0
    # the crop shows x in cx +- 0.7 bs and y from cy - 0.3 bs to cy + 1.1 bs (the mouth region):
    # its centre is the pixel corner at (cx - 0.5, cy + 0.4 bs - 0.5) in index coordinates
    img[97:99, 149:151] = 255
    crop = face_crop(img, cx, cy, bs)
    assert crop.shape == (112, 112)
    ys, xs = np.nonzero(crop > 100)
    assert abs(ys.mean() - 55.5) < 0.5 and abs(xs.mean() - 55.5) < 0.5
    assert 6 <= len(ys) ** 0.5 <= 10  # 2 px at 4x (112 px for 1.4 half-sizes of 20 px)
    # outside the frame the published padding grey (110) shows
    edge = face_crop(img, 5.0, 5.0, 20.0)
    assert edge[0, 0] == 110 and edge[-1, -1] == 0


def test_crop_boxes_are_median_filtered():
    boxes = np.tile([100.0, 50.0, 140.0, 100.0], (30, 1))
    boxes[10] = [300, 300, 400, 420]  # one detector outlier
    p = crop_boxes(boxes, 13)
    assert np.allclose(p[:, 0], 120) and np.allclose(p[:, 1], 75) and np.allclose(p[:, 2], 25)


def test_track_audio_gives_four_mfcc_steps_per_frame():
    from pipeline.stages.visual.sync import mfcc

    pcm = np.random.default_rng(0).standard_normal(50 * 640).astype(np.float32) * 0.1
    for first, last in ((0, 49), (10, 29), (40, 49)):
        assert len(mfcc(track_audio(pcm, first, last))) == 4 * (last - first + 1)


# --- timeline ----------------------------------------------------------------------------------

def test_viterbi_keeps_a_turn_through_a_dip_and_switches_on_a_new_voice():
    T = 130
    s = np.full((2, T), -2.0)
    s[0, :50] = 2.0
    s[0, 20:27] = -1.0  # the speaker pauses for 7 frames inside its turn
    s[1, 50:100] = 2.0
    s[1, 110:113] = 0.5  # a 3-frame blip while nobody speaks
    s[1, 120:] = np.nan  # track 1 leaves the frame
    labels = viterbi_speakers(s, 0.0, CFG.switch_penalty)
    assert (labels[:50] == 0).all() and (labels[50:100] == 1).all()
    assert (labels[100:] == NOBODY).all()


def test_refined_change_lands_where_the_short_windows_cross():
    labels = np.array([SILENCE] * 5 + [0] * 60 + [1] * 40 + [SILENCE] * 5)
    short = np.full((2, len(labels)), -2.0)
    short[0, 5:52] = 2.0  # the first speaker really stops at frame 52, the change was put at 65
    short[1, 52:105] = 2.0
    out = refine_changes(labels, short, 0.0, 15)
    assert (out[5:52] == 0).all() and (out[52:105] == 1).all()
    assert (out[:5] == SILENCE).all() and (out[105:] == SILENCE).all()
    # never further than the search reach
    far = refine_changes(labels, short, 0.0, 5)
    assert (far[:61] == np.r_[[SILENCE] * 5, [0] * 56]).all() and (far[61:105] == 1).all()


def test_turns_merge_short_pauses_and_drop_blips():
    fps = 25
    labels = np.array([SILENCE] * 5 + [0] * 40 + [SILENCE] * 10 + [0] * 30 + [1] * 3 + [0] * 20
                      + [SILENCE] * 30 + [1] * 25)
    turns = turns_from_labels(labels, CFG, fps)
    # 10 silent frames (0.4 s) do not end the turn; 3 frames of track 1 (0.12 s) are dropped,
    # which joins track 0's runs around it; a 1.2 s pause does end the turn
    assert turns == [(0, 5, 108), (1, 138, 163)]


def test_speech_mask_from_segments():
    m = speech_mask([[0.1, 0.5], [1.0, 1.02]], 40)
    assert m.sum() == 11 + 1 and m[2] and not m[13] and m[25]


# --- the stage without weights: a stub network ------------------------------------------------

class StubScorer:
    """Stands in for the network: the scores a test wants, per track in order."""

    checkpoint = "stub.model"

    def __init__(self, scores):
        self.scores_ = [np.asarray(s, np.float32) for s in scores]
        self.calls = []

    def scores(self, crops, audios):
        self.calls.append([len(c) for c in crops])
        out = [self.scores_[i % len(self.scores_)] for i in range(len(crops))]  # each clip alike
        return out, out


def _video(n=100, w=96, h=64) -> bytes:
    rng = np.random.default_rng(0)
    return media.encode_mp4([rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for _ in range(n)], 25)


def _row(video: bytes, n: int = 100, faces=None, **kw) -> dict:
    left = np.tile([0.1, 0.2, 0.4, 0.7], (n, 1)).astype(np.float32)
    right = np.tile([0.6, 0.2, 0.9, 0.7], (n, 1)).astype(np.float32)
    faces = faces or [{"track_id": 3, "center": [0.25, 0.45], "speaking": True, "sync_conf": 3.0, "sync_pass": True},
                      {"track_id": 5, "center": [0.75, 0.45], "speaking": False, "sync_conf": 1.0, "sync_pass": False}]
    row = {"clip_id": "c", "video": video, "num_frames": n, "has_audio": True,
           "audio_pcm": np.zeros(n * 640, np.float32), "speech_segments": json.dumps([[0.0, n / 25]]),
           "faces": json.dumps(faces), "st2v_block": None, "reject_stage": None, "backends": "{}",
           "face_tracks": [{"track_id": 3, "first": 0, "last": n - 1, "boxes": left},
                           {"track_id": 5, "first": 0, "last": n - 1, "boxes": right}]}
    row.update(kw)
    return row


@pytest.fixture(scope="module")
def video() -> bytes:
    return _video()


def _stage(scores) -> SpeakersStage:
    st = SpeakersStage(SpeakersConfig(checkpoint=None))
    st._ready = True
    st.scorer = StubScorer(scores)
    return st


def test_two_speakers_make_two_turns_in_order(video):
    a = np.r_[np.full(60, 2.0), np.full(40, -3.0)]
    b = np.r_[np.full(60, -3.0), np.full(40, 1.5)]
    st = _stage([a, b])
    row, other = _row(video), _row(video)
    st.run([row, other])  # two clips of one batch: one network call for both
    assert st.scorer.calls == [[100, 100, 100, 100]]
    assert other["speaking_turns"] == row["speaking_turns"]
    turns = row["speaking_turns"]
    assert [(t["person"], t["track"], t["start_s"], t["end_s"]) for t in turns] == [
        ("Person1", 3, 0.0, 2.4), ("Person2", 5, 2.4, 4.0)]
    assert turns[0]["x"] == pytest.approx(0.25) and turns[1]["x"] == pytest.approx(0.75)
    assert turns[0]["score"] == pytest.approx(2.0) and turns[1]["score"] == pytest.approx(1.5)
    assert row["speech_attribution"] == 1.0
    faces = json.loads(row["faces"])
    assert [f["track_id"] for f in faces] == [3, 5] and all(f["speaking"] for f in faces)
    assert faces[0]["speech_share"] == 0.6 and faces[1]["speech_share"] == 0.4
    # the dominant speaker (track 3) passes lip-sync; track 5's failing sync does not block
    assert row["st2v_block"] is None and "speakers_block" not in row
    assert json.loads(row["backends"])["speakers"]["backend"] == "lr-asd"


def test_dominant_speaker_comes_first_and_must_pass_sync(video):
    a = np.r_[np.full(30, 2.0), np.full(70, -3.0)]
    b = np.r_[np.full(30, -3.0), np.full(70, 2.0)]
    row = _row(video)
    _stage([a, b]).run([row])
    faces = json.loads(row["faces"])
    assert faces[0]["track_id"] == 5  # speaks 70 % of the speech: Person1 now
    assert [t["person"] for t in row["speaking_turns"]] == ["Person2", "Person1"]
    assert row["st2v_block"].startswith("speakers: speaker_sync_low")


def test_speech_nobody_on_screen_utters_is_not_st2v(video):
    st = _stage([np.full(100, -3.0), np.full(100, -2.5)])
    row = _row(video)
    st.run([row])
    assert row["speaking_turns"] == [] and row["speech_attribution"] == 0.0
    assert row["st2v_block"].startswith("speakers: speech_not_on_screen 0.00 < 0.50")
    assert route(row) == ("t2v", row["st2v_block"])
    # blocked before for another reason (a reaction shot also fails lip-sync): both reasons
    earlier = _row(video, st2v_block="visual: low_sync_conf 1.900 < 2.5")
    st.run([earlier])
    status, reason = route(earlier)
    assert status == "t2v" and reason.startswith("visual: low_sync_conf") and "speech_not_on_screen" in reason


def test_no_speech_or_no_audio_means_no_turns_and_no_network(video):
    st = _stage([np.full(100, 2.0), np.full(100, 2.0)])
    rows = [_row(video, speech_segments="[]"), _row(video, has_audio=False), _row(video, face_tracks=None)]
    st.run(rows)
    assert st.scorer.calls == []
    assert all(r["speaking_turns"] == [] and r["speech_attribution"] is None for r in rows)


def test_without_weights_the_sync_facts_make_the_timeline(video, tmp_path):
    cfg = SpeakersConfig(checkpoint="lr-asd")
    assert resolve_checkpoint(cfg, str(tmp_path)) is None  # not fetched into this cache
    st = SpeakersStage(cfg, models_dir=str(tmp_path))
    row = _row(video, speech_segments=json.dumps([[0.2, 1.6], [1.9, 2.5], [3.4, 4.0]]))
    st.run([row])
    assert json.loads(row["backends"])["speakers"] == {"backend": "sync-facts", "fallback": True, "model": None}
    # the sync speaking track holds the speech; a 0.3 s pause is bridged, a 0.9 s one is not
    assert [(t["person"], t["track"], t["start_s"], t["end_s"]) for t in row["speaking_turns"]] == [
        ("Person1", 3, 0.2, 2.52), ("Person1", 3, 3.4, 4.0)]
    assert row["speaking_turns"][0]["score"] == 3.0 and row["st2v_block"] is None
    silent = _row(video, faces=[{"track_id": 3, "center": [0.5, 0.5], "speaking": False}])
    st.run([silent])
    assert silent["speaking_turns"] == []


def test_disabled_stage_adds_nothing(video):
    row = _row(video)
    SpeakersStage(SpeakersConfig(enabled=False)).run([row])
    assert row["speaking_turns"] is None and "speakers" not in json.loads(row["backends"])


def test_crops_follow_each_track_over_its_span(video):
    row = _row(video)
    tracks = row["face_tracks"]
    tracks[1] = {**tracks[1], "first": 40, "last": 79}
    crops = decode_crops(video, tracks, 100, CFG)
    assert [c.shape for c in crops] == [(100, 112, 112), (40, 112, 112)]
    assert crops[0].std() > 10 and crops[1].std() > 10  # real pixels, not padding


# --- the published weights on the real clips --------------------------------------------------

KATIE = "closeup_talk_hdtf_katiehill.mp4"


@pytest.fixture(scope="module")
def stages(weights_dir):
    from pipeline.stages.speech import SpeechConfig, SpeechStage
    from pipeline.stages.visual.faces import FacesConfig
    from pipeline.stages.visual.stage import VisualConfig, VisualStage

    visual = VisualStage(VisualConfig(faces=FacesConfig(yunet_onnx=str(weights_dir / "face_detection_yunet_2023mar.onnx"))))
    speakers = SpeakersStage(SpeakersConfig(checkpoint=str(weights_dir / "lr_asd_pretrain_AVA.model")))
    return SpeechStage(SpeechConfig()), visual, speakers


def _curated(stages, frames, pcm) -> dict:
    from tests.helpers.visual_clips import make_row

    row = make_row(frames, pcm.copy())
    for st in stages:
        st.run([row])
    return row


@pytest.mark.realdata
@pytest.mark.parametrize("name,seconds", [(KATIE, 8.0), ("medium_talk_latentsync_demo1.mp4", 10.0),
                                          ("medium_talk_latentsync_demo2.mp4", 20.0)])
def test_real_talkers_speak_in_most_of_their_speech(real_dir, stages, name, seconds):
    from tests.helpers.visual_clips import frames_25, pcm_for, real

    frames = frames_25(real(real_dir, name), seconds)
    row = _curated(stages, frames, pcm_for(real(real_dir, name), len(frames)))
    assert row["reject_stage"] is None, row["reject_reason"]
    face = json.loads(row["faces"])[0]
    assert face["speaking_frac"] >= 0.8, face
    assert face["speaking"] and row["speech_attribution"] >= 0.8
    assert "speakers_block" not in row
    assert {t["track"] for t in row["speaking_turns"]} == {face["track_id"]}
    assert json.loads(row["backends"])["speakers"]["fallback"] is False


def _scores(stages, row) -> list[np.ndarray]:
    speakers = stages[2]
    speakers.run([])  # loads the network once (Stage.run is the only entry point)
    tracks = row["face_tracks"]
    crops = decode_crops(row["video"], tracks, len(tracks[0]["boxes"]), speakers.cfg)
    means, _ = speakers.scorer.scores(crops, [track_audio(row["audio_pcm"], t["first"], t["last"]) for t in tracks])
    return means


@pytest.mark.realdata
@pytest.mark.parametrize("case", ["music_only", "silent_audio", "still_frame"])
def test_silent_singing_and_still_faces_are_not_speaking(real_dir, stages, case):
    from tests.helpers.visual_clips import frames_25, pcm_for, real

    if case == "still_frame":  # a photo of the talker, under her own speech
        frames = frames_25(real(real_dir, KATIE), 8.0)
        frames, pcm = np.repeat(frames[60:61], 150, axis=0), pcm_for(real(real_dir, KATIE), 150)
    else:
        name = {"music_only": "face_music_only_lp_d14.mp4", "silent_audio": "face_silent_audio_lp_d3.mp4"}[case]
        frames = frames_25(real(real_dir, name), 8.0)
        pcm = pcm_for(real(real_dir, name), len(frames))
    visual = stages[1]
    if case == "still_frame":
        # the pipeline rejects a still picture as static before any face work; here the visual
        # stage is told not to, so that the network's verdict on a still face is what is tested
        from pipeline.stages.visual.stage import VisualStage

        assert _curated([visual], frames, pcm)["reject_reason"] == "static"
        cfg = visual.cfg.model_copy(update={"motion": visual.cfg.motion.model_copy(update={"static_max": 0.0})})
        visual = VisualStage(cfg)
    row = _curated([visual], frames, pcm)  # the visual stage hands over the face track
    scores = _scores(stages, row)
    assert len(scores) == 1 and (scores[0] >= 0).mean() < 0.1


@pytest.mark.realdata
def test_face_with_another_clips_speech_is_not_st2v(real_dir, stages):
    from tests.helpers.visual_clips import frames_25, pcm_for, real

    frames = frames_25(real(real_dir, "medium_talk_latentsync_demo1.mp4"), 9.6)
    row = _curated(stages, frames, pcm_for(real(real_dir, "speech_other_latentsync_demo1_audio.wav"), len(frames)))
    assert row["reject_stage"] is None
    assert row["st2v_block"] is not None and route(row)[0] == "t2v"


@pytest.mark.realdata
def test_reaction_shot_is_t2v_with_a_reason(real_dir, stages):
    from tests.helpers.visual_clips import frames_25, pcm_for, real

    # a real face that does not talk (she looks at the camera), while someone else speaks
    frames = frames_25(real(real_dir, "medium_person_music_only_lp_s18.mp4"), 8.0)
    row = _curated(stages, frames, pcm_for(real(real_dir, KATIE), len(frames)))
    assert row["reject_stage"] is None, row["reject_reason"]
    assert row["speech_attribution"] < 0.1 and row["speaking_turns"] == []
    status, reason = route(row)
    assert status == "t2v" and "speech_not_on_screen" in reason


@pytest.mark.realdata
def test_fallback_on_a_real_talker_is_the_sync_speaker(real_dir, stages, tmp_path):
    from tests.helpers.visual_clips import frames_25, pcm_for, real

    frames = frames_25(real(real_dir, KATIE), 8.0)
    st = SpeakersStage(SpeakersConfig(), models_dir=str(tmp_path))
    row = _curated((stages[0], stages[1], st), frames, pcm_for(real(real_dir, KATIE), len(frames)))
    assert json.loads(row["backends"])["speakers"]["fallback"] is True
    face = json.loads(row["faces"])[0]
    assert {t["track"] for t in row["speaking_turns"]} == {face["track_id"]}
    assert row["speaking_turns"][0]["score"] == face["sync_conf"] and row["st2v_block"] is None
