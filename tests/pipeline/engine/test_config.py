import json

import pytest

from common.config import ConfigError
from pipeline.engine.config import load_config
from tests.conftest import ROOT


def test_defaults_are_the_documented_ones():
    cfg = load_config()
    assert (cfg.scenes.detector, cfg.scenes.min_clip_s, cfg.scenes.max_clip_s) == ("adaptive", 2.0, 10.0)
    assert cfg.clips.fps == 25.0 and cfg.clips.audio_rate == 16000


def test_unknown_key_is_named(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("scenes:\n  max_clip_sec: 8\n")
    with pytest.raises(ConfigError, match="unknown key 'scenes.max_clip_sec'"):
        load_config(p)


def test_mistyped_value_is_named(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("speech:\n  min_speech_ratio: lots\n")
    with pytest.raises(ConfigError, match="speech.min_speech_ratio"):
        load_config(p)


def test_overrides_apply_to_any_field_and_are_validated(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("scenes:\n  max_clip_s: 8\n")
    cfg = load_config(p, ["scenes.max_clip_s=6", "resources.speech.actors=3", "scenes.detector_args={threshold: 20}"])
    assert cfg.scenes.max_clip_s == 6 and cfg.resources.speech.actors == 3
    assert cfg.scenes.detector_args == {"threshold": 20}
    with pytest.raises(ConfigError, match="unknown key 'scenes.nope'"):
        load_config(None, ["scenes.nope=1"])
    with pytest.raises(ConfigError, match="max_clip_s"):
        load_config(None, ["scenes.max_clip_s=1"])  # below min_clip_s
    with pytest.raises(ConfigError, match="not of the form"):
        load_config(None, ["scenes.max_clip_s"])


def test_resolved_config_round_trips_through_json():
    cfg = load_config(None, ["music.max_music_ratio=0.2"], inputs=["a.mp4"], output="o")
    again = load_config(None, [], **json.loads(cfg.model_dump_json()))
    assert again == cfg


def test_shipped_yaml_is_valid():

    cfg = load_config(ROOT / "configs" / "curate.yaml")
    assert cfg == load_config(None, [], inputs=cfg.inputs, output=cfg.output)


def _leaves(d: dict, prefix: str = "") -> set[str]:
    out = set()
    for k, v in d.items():
        key = f"{prefix}{k}"
        out |= _leaves(v, key + ".") if isinstance(v, dict) and v else {key}
    return out


def test_shipped_yaml_lists_every_field():
    import yaml

    listed = _leaves(yaml.safe_load((ROOT / "configs" / "curate.yaml").read_text()))
    fields = _leaves(json.loads(load_config().model_dump_json()))
    assert fields - listed == set(), "configs/curate.yaml misses these fields"
