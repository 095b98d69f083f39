"""The demo (what `make demo` runs) and the command line's help."""
import pytest

from pipeline.engine.writer import read_ledger
from tests.conftest import run_mocha


@pytest.mark.slow
def test_demo_makes_its_inputs_and_curates_them(tmp_path):
    proc = run_mocha("demo", "--output", str(tmp_path), "--runner", "local", "--no-train")
    assert "demo shards:" in proc.stdout
    ledger = read_ledger(tmp_path / "shards").to_pylist()
    by = {}
    for r in ledger:
        by.setdefault(r["source_uri"].rsplit("/", 1)[-1], []).append(r)
    assert any(r["status"] == "st2v" for r in by["talking_two_shots.mp4"])
    assert all(r["status"] == "t2v" and "no_audio_stream" in r["route_reason"] for r in by["character_no_audio.mp4"])
    assert [r["reject_reason"] for r in by["no_character.mp4"]] == ["no_face"]
    assert by["empty.mp4"][0]["status"] == "error" and "empty_file" in by["empty.mp4"][0]["reject_reason"]
    assert (tmp_path / "shards" / "run.json").is_file()


@pytest.mark.parametrize("args", [["--help"], ["curate", "--help"], ["models", "--help"], ["demo", "--help"]])
def test_help_exits_zero(args):
    proc = run_mocha(*args)
    assert "usage:" in proc.stdout


def test_curate_without_inputs_is_a_clear_error(tmp_path):
    proc = run_mocha("curate", "--output", str(tmp_path), check=False)
    assert proc.returncode == 2 and "no inputs" in proc.stderr


def test_bad_config_key_is_named_on_the_command_line(tmp_path):
    proc = run_mocha("curate", "x.mp4", "--output", str(tmp_path), "--set", "speech.treshold=0.4", check=False)
    assert proc.returncode == 2 and "unknown key 'speech.treshold'" in proc.stderr


def test_print_config_shows_overrides():
    proc = run_mocha("curate", "--print-config", "--set", "scenes.max_clip_s=7")
    assert "max_clip_s: 7" in proc.stdout
