"""`mocha train` (LightningCLI): the stage configs parse; a smoke run on synthetic shards writes
last.ckpt under default_root_dir (where the DAG's next stage looks) with the data position."""
from __future__ import annotations

import pytest
import torch

from mocha.cli import main as mocha
from tests.conftest import ROOT
from tests.helpers.datashards import colour_clip, mixed_rows, write_shards

CONFIGS = ROOT / "training" / "configs"


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
        assert "MochaDataModule" in out and "some/out" in out and "dit_preset: 1b" in out
        if extra:
            assert "FSDPStrategy" in out and "model.dit.DiTBlock" in out


def test_smoke_train_writes_last_ckpt(tmp_path):
    from training.demo import build_tiny_models

    n = 20
    rows = mixed_rows({("st2v", "close_up"): 2, ("t2v", "close_up"): 2}, colour_clip(80, n=n, step=4), n=n)
    write_shards(tmp_path / "shards", rows)
    models = build_tiny_models(tmp_path / "tiny", audio_dim=8)
    run = tmp_path / "runs" / "stage1"
    rc = mocha(["train", "fit", "--config", str(CONFIGS / "smoke.yaml"),
                "--model.vae", models["vae"], "--model.text_encoder", models["t5"],
                "--model.audio_model", models["w2v"], "--data.shards", str(tmp_path / "shards"),
                "--trainer.default_root_dir", str(run), "--trainer.max_steps", "2"])
    assert rc == 0
    ck = torch.load(run / "last.ckpt", map_location="cpu", weights_only=False)
    assert ck["global_step"] == 2
    dm_state = ck["MochaDataModule"]
    assert dm_state["consumed"] == 2 and dm_state["stage"] == 1
    assert any(k.startswith("ema_dit.") for k in ck["state_dict"])


def test_missing_text_encoder_is_one_clear_error(tmp_path, capsys):
    rows = mixed_rows({("t2v", "close_up"): 2}, colour_clip(80, n=20, step=4), n=20)
    write_shards(tmp_path / "shards", rows)
    rc = mocha(["train", "fit", "--config", str(CONFIGS / "smoke.yaml"),
                "--model.text_encoder", str(tmp_path / "no_t5"), "--model.vae", str(tmp_path / "no_vae"),
                "--data.shards", str(tmp_path / "shards"), "--trainer.default_root_dir", str(tmp_path / "run")])
    assert rc == 1
    err = capsys.readouterr().err
    assert "mocha train:" in err and "mocha models fetch" in err
