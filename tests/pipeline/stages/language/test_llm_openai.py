"""OpenAI-compatible backend against a real HTTP server on 127.0.0.1 (started by the test):
the request, the retry policy (429 with Retry-After honoured, other 4xx never retried, 5xx and
transport errors retried up to the limit), the ledger reasons, and an API key that reaches the
server and nothing else."""
from __future__ import annotations

import json
import logging
import socket

import numpy as np
import pytest

from common.media import encode_mp4
from pipeline.stages.language.caption import CaptionStage
from pipeline.stages.language.character import CharacterFilterStage
from pipeline.stages.language.config import LLMConfig
from schemas.caption import Caption
from tests.helpers.stub_llm_server import StubChatServer

VALID_VERDICT = json.dumps({"has_prominent_character": True, "num_characters": 1,
                            "central_character": "Person1", "reason": "one woman talks to the camera"})
VALID_CAPTION = json.dumps({
    "characters": [{"tag": "Person1", "appearance": "a woman with short grey hair, a red scarf",
                    "position": "center", "facing": "camera", "emotion": "calm", "speaking": False,
                    "actions": ["nods"], "body_language": "upright posture"}],
    "environment": {"setting": "an office", "lighting": "soft daylight"},
    "camera": {"shot_size": "medium", "angle": "eye_level", "movement": "static"},
})


@pytest.fixture(scope="module")
def video() -> bytes:
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(20)]
    return encode_mp4(frames, fps=25.0)


def make_row(video: bytes, i: int = 0) -> dict:
    faces = [{"track_id": 0, "coverage": 1.0, "height_ratio": 0.4, "center": [0.5, 0.4],
              "bbox_mean": [0.3, 0.2, 0.7, 0.6], "speaking": True, "sync_conf": 5.0}]
    return {"clip_id": f"clip{i}", "source_uri": "mem://src", "start_s": 0.0, "end_s": 0.8, "scene_index": 0,
            "video": video, "fps": 25.0, "width": 64, "height": 48, "num_frames": 20, "has_audio": True,
            "speech_ratio": 0.9, "faces": json.dumps(faces), "num_faces": 1, "shot_size": "medium",
            "sync_conf": 5.0, "motion_class": "static", "backends": "{}", "reject_stage": None}


def llm_cfg(url: str, **kw) -> LLMConfig:
    base = dict(backend="openai", endpoint=url, model="stub-vlm", retries=2, backoff_s=0.01, timeout_s=2.0,
                concurrency=4, max_keyframes=3, keyframe_max_side=64)
    base.update(kw)
    return LLMConfig(**base)


def run_filter(cfg: LLMConfig, rows: list[dict]) -> list[dict]:
    return CharacterFilterStage(llm=cfg).run(rows)


def test_valid_answer_is_accepted_and_request_is_well_formed(video):
    with StubChatServer(reply=VALID_VERDICT) as srv:
        (row,) = run_filter(llm_cfg(srv.url), [make_row(video)])
        assert srv.requests == 1
        body = srv.bodies[0]
    assert row["reject_stage"] is None
    assert json.loads(row["character_verdict"])["central_character"] == "Person1"
    backends = json.loads(row["backends"])["character"]
    assert backends == {"backend": "openai", "fallback": False, "model": "stub-vlm", "endpoint": srv.url}
    assert body["model"] == "stub-vlm"
    assert body["response_format"]["type"] == "json_schema"
    assert "has_prominent_character" in json.dumps(body["response_format"]["json_schema"]["schema"])
    user = body["messages"][1]["content"]
    images = [c["image_url"]["url"] for c in user if c["type"] == "image_url"]
    assert len(images) == 3 and all(u.startswith("data:image/jpeg;base64,") for u in images)
    assert "Face tracks: 1" in user[0]["text"]


def test_caption_stage_overrides_speaking_from_facts(video):
    with StubChatServer(reply=VALID_CAPTION) as srv:
        (row,) = CaptionStage(llm=llm_cfg(srv.url)).run([make_row(video)])
    assert row["reject_stage"] is None
    cap = Caption.model_validate_json(row["caption"])
    # the model said speaking=false; the sync facts say the only face talks
    assert cap.characters[0].speaking is True and cap.characters[0].track_id == 0
    assert row["prompt"].startswith("One video clip.\nCharacters:\nPerson1: a woman with short grey hair, a red scarf.")
    assert "Person1 (center of frame, facing the camera, calm) talks, nods; upright posture." in row["prompt"]


@pytest.mark.parametrize("reply", ["not json {", "```json\n{\"has_prominent_character\": true}\n```",
                                   json.dumps({"has_prominent_character": True, "num_characters": 1,
                                               "central_character": "Person1", "reason": "x", "extra": 1})])
def test_invalid_output_is_retried_then_rejected(video, reply):
    with StubChatServer(reply=reply) as srv:
        (row,) = run_filter(llm_cfg(srv.url, retries=2), [make_row(video)])
        assert srv.requests == 3  # first attempt + 2 retries
    assert (row["reject_stage"], row["reject_reason"], row["status"]) == ("character", "llm_invalid_output", "rejected")
    assert "error" in json.loads(row["backends"])["character"]


def test_retry_recovers_from_one_bad_answer(video):
    with StubChatServer(reply=lambda body, i: "Sure! here it is" if i == 1 else VALID_VERDICT) as srv:
        (row,) = run_filter(llm_cfg(srv.url, retries=1), [make_row(video)])
        assert srv.requests == 2
    assert row["reject_stage"] is None and row["character_verdict"]


def error_of(row: dict) -> str:
    return json.loads(row["backends"])["character"]["error"]


@pytest.mark.parametrize("status", [500, 502, 503])
def test_5xx_is_retried_up_to_the_limit(video, status):
    with StubChatServer(reply=VALID_VERDICT, status=status) as srv:
        (row,) = run_filter(llm_cfg(srv.url, retries=2), [make_row(video)])
        assert srv.requests == 3  # first attempt + 2 retries, and no re-ask on top
    assert row["reject_reason"] == "llm_unavailable"
    assert f"HTTP {status} from {srv.url}/chat/completions" in error_of(row) and "(after 3 attempts)" in error_of(row)


def test_a_transient_5xx_recovers(video):
    with StubChatServer(reply=VALID_VERDICT, status=lambda i: 503 if i == 1 else 200) as srv:
        (row,) = run_filter(llm_cfg(srv.url, retries=2), [make_row(video)])
        assert srv.requests == 2
    assert row["reject_stage"] is None and row["character_verdict"]


def test_429_waits_at_least_what_retry_after_asks(video):
    # the backoff alone would wait ~10 ms: only the server's Retry-After explains a 1 s gap
    with StubChatServer(reply=VALID_VERDICT, status=lambda i: 429 if i == 1 else 200,
                        headers={"Retry-After": "1"}) as srv:
        (row,) = run_filter(llm_cfg(srv.url, retries=2, backoff_s=0.01), [make_row(video)])
        assert srv.requests == 2
        gap = srv.arrivals[1] - srv.arrivals[0]
    assert row["reject_stage"] is None and row["character_verdict"]
    assert gap >= 1.0


def test_a_retry_after_beyond_the_allowed_wait_fails_at_once(video):
    with StubChatServer(reply=VALID_VERDICT, status=429, headers={"Retry-After": "3600"}) as srv:
        (row,) = run_filter(llm_cfg(srv.url, retries=3, retry_after_max_s=5), [make_row(video)])
        assert srv.requests == 1
    assert row["reject_reason"] == "llm_unavailable"
    assert "HTTP 429" in error_of(row) and "retry after 3600 s, longer than llm.retry_after_max_s=5" in error_of(row)


@pytest.mark.parametrize("status", [400, 404, 413, 422])
def test_other_4xx_is_never_retried(video, status):
    with StubChatServer(reply=VALID_VERDICT, status=status) as srv:
        (row,) = run_filter(llm_cfg(srv.url, retries=3), [make_row(video)])
        assert srv.requests == 1
    assert (row["reject_stage"], row["reject_reason"]) == ("character", "llm_unavailable")
    assert f"HTTP {status}" in error_of(row) and "not retried: the server refused the request itself" in error_of(row)


def test_401_points_at_the_key_settings(video):
    with StubChatServer(reply=VALID_VERDICT, status=401) as srv:
        (row,) = run_filter(llm_cfg(srv.url), [make_row(video)])
        assert srv.requests == 1
    assert "check llm.api_key / llm.api_key_env" in error_of(row)


def test_slow_answer_past_timeout_gives_unavailable(video):
    with StubChatServer(reply=VALID_VERDICT, delay_s=1.5) as srv:
        (row,) = run_filter(llm_cfg(srv.url, retries=1, timeout_s=0.3), [make_row(video)])
        assert srv.requests == 2
    assert row["reject_reason"] == "llm_unavailable"
    assert f"no answer from {srv.url}/chat/completions within 0.3 s (after 2 attempts)" in error_of(row)


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    return port


def test_closed_port_gives_unavailable(video):
    url = f"http://127.0.0.1:{closed_port()}/v1"
    (row,) = run_filter(llm_cfg(url, retries=1), [make_row(video)])
    assert row["reject_reason"] == "llm_unavailable"
    assert error_of(row).startswith(f"cannot connect to {url}/chat/completions: ConnectError")
    assert "(after 2 attempts)" in error_of(row)


# -- the API key ----------------------------------------------------------------------------------
KEY = "sk-test-0123456789abcdef"


def test_key_from_the_environment_reaches_the_server_and_nothing_else(video, monkeypatch, caplog):
    monkeypatch.setenv("MOCHA_TEST_LLM_KEY", KEY)
    caplog.set_level(logging.DEBUG)  # httpx and httpcore log every exchange at debug level
    # a careless proxy that repeats the Authorization header in its error body
    with StubChatServer(reply=VALID_VERDICT, status=lambda i: 503 if i == 1 else 400, echo_auth=True) as srv:
        cfg = llm_cfg(srv.url, retries=2, api_key_env="MOCHA_TEST_LLM_KEY", model=None)
        (row,) = run_filter(cfg, [make_row(video)])
        assert srv.auth == [f"Bearer {KEY}"] * 3  # GET /models, then the 503 and the 400
    assert "stub failure for Bearer ***" in error_of(row)
    assert KEY not in row["backends"] and KEY not in caplog.text
    assert "HTTP Request: POST" in caplog.text  # the client's log was captured: the check above is real


def test_config_key_wins_and_every_dump_masks_it(monkeypatch):
    import yaml

    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    cfg = LLMConfig(api_key=KEY)
    assert cfg.api_key_value() == KEY
    for dump in (cfg.model_dump_json(), yaml.safe_dump(cfg.model_dump()), repr(cfg), str(cfg)):
        assert KEY not in dump
    assert json.loads(cfg.model_dump_json())["api_key"] == "**********"
    assert LLMConfig().api_key_value() == "sk-from-env" and LLMConfig(api_key_env=None).api_key_value() is None


def test_no_key_sends_no_authorization(video, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with StubChatServer(reply=VALID_VERDICT) as srv:
        run_filter(llm_cfg(srv.url), [make_row(video)])
        assert srv.auth == [None]


def test_a_key_on_the_command_line_is_masked_in_the_recorded_command():
    from pipeline.stages.language.config import mask_secret_args

    argv = ["mocha", "curate", "--set", f"llm.api_key={KEY}", f"--set=llm.api_key={KEY}", "--set", "llm.api_key_env=K"]
    assert mask_secret_args(argv) == ["mocha", "curate", "--set", "llm.api_key=**********",
                                      "--set=llm.api_key=**********", "--set", "llm.api_key_env=K"]


@pytest.mark.slow
def test_curate_run_keeps_the_key_out_of_run_json_logs_and_ledger(tmp_path):
    """End to end: the key reaches the server; run.json, the ledger and the job's output never
    hold it, and the ledger gives the row a clear reason."""
    from common.media import VIDEO_FPS
    from common.synth import synth_talking_frames
    from pipeline.engine.writer import read_ledger
    from tests.conftest import run_mocha

    src = tmp_path / "character.mp4"
    src.write_bytes(encode_mp4(synth_talking_frames(3.0, 320, 240, (100, 120, 100), None, 3), VIDEO_FPS))
    cfg = tmp_path / "llm.yaml"
    cfg.write_text(f"llm:\n  backend: openai\n  api_key: {KEY}\n  retries: 1\n  backoff_s: 0.01\n")
    out = tmp_path / "out"
    with StubChatServer(reply=VALID_VERDICT, status=400, echo_auth=True) as srv:
        proc = run_mocha("curate", str(src), "--output", str(out), "--runner", "local", "--no-progress",
                         "--config", str(cfg), "--set", f"llm.endpoint={srv.url}", "--set", "llm.api_key_env=OTHER",
                         env={"OTHER": "sk-other-key", "PYTHONUNBUFFERED": "1"})
        assert srv.auth and set(srv.auth) == {f"Bearer {KEY}"}
    run_json = (out / "run.json").read_text()
    assert json.loads(run_json)["config"]["llm"]["api_key"] == "**********"
    ledger = read_ledger(out).to_pylist()
    rejected = [r for r in ledger if r["reject_stage"] == "character"]
    assert rejected and all(r["reject_reason"] == "llm_unavailable" for r in rejected)
    assert "HTTP 400" in json.loads(rejected[0]["backends"])["character"]["error"]
    shards = b"".join(p.read_bytes() for p in out.rglob("*") if p.is_file())
    for secret in (KEY, "sk-other-key"):
        assert secret not in run_json and secret not in proc.stdout + proc.stderr
        assert secret.encode() not in shards


def test_concurrency_never_exceeds_limit(video):
    rows = [make_row(video, i) for i in range(12)]
    with StubChatServer(reply=VALID_VERDICT, delay_s=0.15) as srv:
        out = run_filter(llm_cfg(srv.url, concurrency=3), rows)
        assert srv.requests == 12
        assert srv.max_in_flight == 3  # the limit is used, and never exceeded
    assert all(r["reject_stage"] is None for r in out)


def test_bad_video_fails_only_its_row(video):
    rows = [make_row(video, 0), dict(make_row(video, 1), video=b"not an mp4"), make_row(video, 2)]
    with StubChatServer(reply=VALID_VERDICT) as srv:
        out = run_filter(llm_cfg(srv.url), rows)
        assert srv.requests == 2
    assert [r["reject_stage"] for r in out] == [None, "character", None]
    assert out[1]["status"] == "error" and out[1]["reject_reason"].startswith("error: MediaError")


def test_keyframes_are_the_centres_of_equal_parts():
    from pipeline.stages.language.keyframes import jpeg_data_url, sample_keyframes

    # frame i has brightness 10*i: the sampled brightness tells which frames were picked
    frames = [np.full((36, 64, 3), 10 * i, dtype=np.uint8) for i in range(25)]
    vid = encode_mp4(frames, fps=25.0, crf=0)
    got = sample_keyframes(vid, 4, max_side=32)
    assert [f.shape for f in got] == [(18, 32, 3)] * 4
    idx = [int(round(float(f.mean()) / 10)) for f in got]
    assert idx == [3, 9, 16, 22]  # centres of 4 quarters of 25 frames (1 s): t = 0.125, 0.375, 0.625, 0.875
    assert jpeg_data_url(got[0]).startswith("data:image/jpeg;base64,/9j/")  # JPEG magic
    with pytest.raises(Exception, match="no video bytes"):
        sample_keyframes(b"", 4)
