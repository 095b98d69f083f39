"""``mocha train`` (LightningCLI), ``mocha generate`` and ``mocha eval``.

``mocha train`` hands everything after it to LightningCLI, so the usual forms work:
``mocha train fit --config training/configs/stage1.yaml --model.init_from runs/stage0/last.ckpt``,
``mocha train fit --config training/configs/smoke.yaml --data.shards OUT --model.base runs/tiny/wan``,
``mocha train fit --config ... --print_config``, ``mocha train --help``.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys

from common.media import AUDIO_RATE, VIDEO_FPS

log = logging.getLogger(__name__)


def translate_args(args: list[str]) -> list[str]:
    """``--data.shards DIR`` (the DAG's and the README's short form) -> the DataModule's
    ``roots`` list; everything else passes through to LightningCLI unchanged."""
    out, i = [], 0
    while i < len(args):
        a = args[i]
        if a == "--data.shards" and i + 1 < len(args):
            out.append("--data.init_args.roots=" + json.dumps([args[i + 1]]))
            i += 2
            continue
        if a.startswith("--data.shards="):
            out.append("--data.init_args.roots=" + json.dumps([a.split("=", 1)[1]]))
        else:
            out.append(a)
        i += 1
    return out


def run_lightning_cli(args: list[str]):
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.cli import LightningCLI

    from training.module import MochaLitModule

    class MochaCLI(LightningCLI):
        def before_fit(self):
            trainer, model, dm = self.trainer, self.model, self.datamodule
            for cb in trainer.callbacks:
                # checkpoints (and last.ckpt) directly under default_root_dir, where the DAG's
                # next stage looks for them (`--model.init_from runs/stageN/last.ckpt`)
                if isinstance(cb, ModelCheckpoint) and cb.dirpath is None:
                    cb.dirpath = trainer.default_root_dir
            dcfg = getattr(dm, "cfg", None)
            if dcfg is not None:
                checks = [("audio_emb_dim", model.mocha_cfg.audio_dim, "model.mocha.audio_dim"),
                          ("vae_temporal_compression", model.mocha_cfg.vae_temporal_compression,
                           "model.mocha.vae_temporal_compression")]
                for field, want, name in checks:
                    got = getattr(dcfg, field, want)
                    if got != want:
                        raise ValueError(f"data.{field}={got} does not match {name}={want}")

    # the model class is fixed; the DataModule is named in the YAML (class_path), so a test or
    # another data source can be swapped in without code changes
    return MochaCLI(MochaLitModule, L.LightningDataModule, subclass_mode_data=True, args=translate_args(args),
                    save_config_kwargs={"overwrite": True})


def _train(ns) -> int:
    rest = list(ns.lightning_args)
    if not rest:
        rest = ["--help"]
    argv = sys.argv
    sys.argv = ["mocha train"]  # LightningCLI reads its args from `rest` only
    from common.weights import ModelMissing
    from training.data.config import DataConfigError
    from training.module import BaseMismatch

    try:
        run_lightning_cli(rest)
    except (ModelMissing, DataConfigError, BaseMismatch) as e:
        # an expected set-up problem (weights not fetched, bad data config): one clear line
        print(f"mocha train: {e}", file=sys.stderr)
        return 1
    finally:
        sys.argv = argv
    return 0


def _generate(ns) -> int:
    from training.generate import GenerateConfig, generate, load_module, prompt_from_input, read_speech, write_mp4

    if (ns.prompt is None) == (ns.prompt_file is None):
        print("give exactly one of --prompt or --prompt-file", file=sys.stderr)
        return 2
    text = ns.prompt if ns.prompt is not None else open(ns.prompt_file, encoding="utf-8").read()
    try:
        module = load_module(ns.ckpt, ns.device, ns.vae, ns.text_encoder, ns.base)
        prompt = prompt_from_input(text, module.text_model().tokenizer)
        speech = [read_speech(p) for p in ns.speech]
        cfg = GenerateConfig(height=ns.height, width=ns.width, fps=ns.fps, steps=ns.steps,
                             text_scale=ns.text_scale, audio_scale=ns.audio_scale, shift=ns.shift, scheduler=ns.scheduler,
                             seed=ns.seed, use_ema=not ns.no_ema, audio_model=ns.audio_model,
                             models_dir=ns.models_dir)
        res = generate(module, prompt, speech, cfg)
    except (ValueError, RuntimeError, OSError) as e:
        print(f"mocha generate: {e}", file=sys.stderr)
        return 1
    out = write_mp4(res, ns.out)
    print(json.dumps({"out": str(out), "frames": int(len(res.frames)), "fps": res.fps,
                      "speech_seconds": round(len(res.speech) / AUDIO_RATE, 3), "backends": res.info["backends"]}))
    return 0


def _eval(ns) -> int:
    from mocha.evaluate import evaluate_videos

    try:
        from pipeline.stages.visual.sync import SyncConfig

        cfg = SyncConfig(syncnet_checkpoint=ns.syncnet_checkpoint) if ns.syncnet_checkpoint else None
        report = evaluate_videos(ns.videos, speech=ns.speech, out=ns.out, sync_cfg=cfg)
    except (ValueError, RuntimeError, OSError, ImportError) as e:
        print(f"mocha eval: {e}", file=sys.stderr)
        return 1
    print(json.dumps(report["summary"], indent=2))
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train", add_help=False, prefix_chars="\0",
        help="fine-tune MoCha on the Wan base (LightningCLI: `mocha train fit --config training/configs/stage0.yaml`)",
        description="All arguments go to LightningCLI; see `mocha train --help`.")
    p.add_argument("lightning_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=_train)

    g = subparsers.add_parser("generate", help="prompt + speech wav(s) -> talking-character mp4 with the speech")
    g.add_argument("--ckpt", required=True, help="a training checkpoint (.ckpt)")
    g.add_argument("--prompt", help="prompt text, or caption JSON rendered by the structured-prompt template")
    g.add_argument("--prompt-file", help="file holding the prompt text or caption JSON")
    g.add_argument("--speech", action="append", required=True,
                   help="speech audio; repeat once per clip of a multi-clip prompt (in clip order)")
    g.add_argument("--out", required=True, help="output .mp4 (a .json sidecar records settings/backends)")
    g.add_argument("--steps", type=int, default=30)
    g.add_argument("--text-scale", type=float, default=5.0, help="text guidance scale")
    g.add_argument("--audio-scale", type=float, default=3.5, help="speech guidance scale")
    g.add_argument("--shift", type=float, default=3.0, help="Wan's sampling time shift (1 = uniform steps)")
    g.add_argument("--scheduler", choices=["unipc", "euler"], default="unipc",
                   help="diffusers flow-matching sampler: unipc (Wan's own) or euler")
    g.add_argument("--height", type=int, default=256)
    g.add_argument("--width", type=int, default=256)
    g.add_argument("--fps", type=float, default=VIDEO_FPS)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--no-ema", action="store_true", help="sample with the raw instead of the EMA weights")
    g.add_argument("--base", help="the base transformer, if not where the checkpoint says (same weights: "
                   "its sha256 is checked)")
    g.add_argument("--vae", help="override the checkpoint's VAE (path or registry name)")
    g.add_argument("--text-encoder", help="override the checkpoint's text encoder")
    g.add_argument("--audio-model", help="override the speech feature model (Wav2Vec2)")
    g.add_argument("--models-dir", help="model cache dir (default $MOCHA_MODELS_DIR)")
    g.add_argument("--device", default="cpu")
    g.set_defaults(func=_generate)

    e = subparsers.add_parser("eval", help="Sync-C / Sync-D of generated videos (the sync stage's scorer)")
    e.add_argument("videos", nargs="+", help="generated .mp4 files (their own audio is the speech)")
    e.add_argument("--speech", action="append", help="score against this audio instead (one per video)")
    e.add_argument("--out", help="write the per-video report as JSON here")
    e.add_argument("--syncnet-checkpoint", help="SyncNet v2 weights (the paper's Sync-C/Sync-D); without it "
                   "the weight-free av-correlation backend scores, on its own scale, and says so")
    e.set_defaults(func=_eval)
