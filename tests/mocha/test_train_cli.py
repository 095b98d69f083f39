"""`mocha train` (LightningCLI): the stage configs parse; a smoke run on synthetic shards with a
diffusers-format tiny Wan as ``--model.base`` writes last.ckpt under default_root_dir (where the
DAG's next stage looks) with the data position, and `mocha generate` from it writes an mp4 with
the speech muxed."""
from __future__ import annotations

import pytest
import torch

from common.media import encode_audio, probe
from mocha.cli import main as mocha
from tests.conftest import ROOT
from tests.helpers.datashards import colour_clip, mixed_rows, write_shards

CONFIGS = ROOT / "training" / "configs"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("extra", [[], ["fsdp_8gpu.yaml"]])
def test_stage_configs_parse(extra, capsys):
    for stage in range(4):
        args = ["train", "fit", "--config", str(CONFIGS / f"stage{stage}.yaml")]
        for e in extra:
            args += ["--config", str(CONFIGS / e)]
        with pytest.raises(SystemExit) as ex:
            mocha(args + ["--data.shards", "some/out", "--print_config"])
        assert ex.value.code in (0, None)
        out = capsys.readouterr().out
        assert "MochaDataModule" in out and "some/out" in out and "base: wan2.1-t2v-1.3b" in out
        assert "train_mode: " + ("full" if extra else "lora") in out
        if extra:
            assert "FSDPStrategy" in out and "model.mocha_wan.MochaBlock" in out
            # the stage's speech settings survive the overlay (typed, merged field by field)
            assert "audio_dim: 768" in out and "window_attention: true" in out and "grad_checkpointing: false" in out


def test_smoke_train_then_generate(tmp_path):
    from common.synth import synth_speech
    from training.demo import build_tiny_models

    n = 20
    rows = mixed_rows({("st2v", "close_up"): 2, ("t2v", "close_up"): 2}, colour_clip(80, n=n, step=4), n=n)
    write_shards(tmp_path / "shards", rows)
    models = build_tiny_models(tmp_path / "tiny", audio_dim=8)
    run = tmp_path / "runs" / "stage1"
    rc = mocha(["train", "fit", "--config", str(CONFIGS / "smoke.yaml"), "--model.base", models["wan"],
                "--model.vae", models["vae"], "--model.text_encoder", models["t5"],
                "--model.audio_model", models["w2v"], "--data.shards", str(tmp_path / "shards"),
                "--trainer.default_root_dir", str(run), "--trainer.max_steps", "2"])
    assert rc == 0
    ck = torch.load(run / "last.ckpt", map_location="cpu", weights_only=True)
    assert ck["global_step"] == 2
    dm_state = ck["MochaDataModule"]
    assert dm_state["consumed"] == 2 and dm_state["stage"] == 1
    assert any(k.startswith("ema.") for k in ck["state_dict"]) and any(".lora_B." in k for k in ck["state_dict"])
    assert ck["mocha"]["base"]["path"] == models["wan"] and ck["mocha"]["train_mode"] == "lora"

    wav = tmp_path / "speech.wav"
    wav.write_bytes(encode_audio(synth_speech(1.0, 3), fmt="wav"))
    out = tmp_path / "talk.mp4"
    assert mocha(["generate", "--ckpt", str(run / "last.ckpt"), "--prompt", "A woman talks.", "--speech", str(wav),
                  "--out", str(out), "--steps", "2", "--height", "32", "--width", "32"]) == 0
    info = probe(str(out))
    assert info.has_video and info.has_audio


def test_missing_text_encoder_is_one_clear_error(tmp_path, capsys):
    from model.wan_base import build_tiny_wan

    rows = mixed_rows({("t2v", "close_up"): 2}, colour_clip(80, n=20, step=4), n=20)
    write_shards(tmp_path / "shards", rows)
    rc = mocha(["train", "fit", "--config", str(CONFIGS / "smoke.yaml"),
                "--model.base", build_tiny_wan(tmp_path / "wan"),
                "--model.text_encoder", str(tmp_path / "no_t5"), "--model.vae", str(tmp_path / "no_vae"),
                "--data.shards", str(tmp_path / "shards"), "--trainer.default_root_dir", str(tmp_path / "run")])
    assert rc == 1
    err = capsys.readouterr().err
    assert "mocha train:" in err and "mocha models fetch" in err


def test_missing_base_is_one_clear_error(tmp_path, capsys):
    rc = mocha(["train", "fit", "--config", str(CONFIGS / "smoke.yaml"), "--model.base", str(tmp_path / "no_wan"),
                "--data.shards", str(tmp_path / "shards"), "--trainer.default_root_dir", str(tmp_path / "run")])
    assert rc == 1
    err = capsys.readouterr().err
    assert "mocha train:" in err and "no_wan" in err and "mocha models fetch" in err
