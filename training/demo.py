"""Training part of ``mocha demo``: a few steps of a TINY RANDOM model on the demo shards, a
checkpoint, and one generated mp4, all offline.

Everything here is a smoke test of the plumbing (shards -> DataModule -> MoCha on a Wan base ->
checkpoint -> sampler -> VAE -> mp4 with speech); the Wan transformer, VAE, text encoder and
Wav2Vec2 are untrained random models written in their libraries' own formats and loaded through
the same ``from_pretrained`` paths as real weights, and labelled as such in the returned
``backends``. The video it generates is noise-like by construction.

``python -m training.demo tiny-models DIR`` writes the tiny models for
``training/configs/smoke.yaml`` (``DIR/wan``: the base transformer in diffusers format).
"""
from __future__ import annotations

import glob
import json
import logging
import os
import sys
from pathlib import Path
from typing import Optional

from common.media import AUDIO_RATE, VIDEO_FPS

log = logging.getLogger(__name__)

TINY_W2V_LABEL = "tiny-random-wav2vec2 (untrained, smoke tests only)"


def build_tiny_wav2vec2(path: str | Path, dim: int = 8, seed: int = 0) -> str:
    """A random Wav2Vec2 (50 Hz states of size ``dim``) + feature extractor, saved to ``path``."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(seed)
    heads = 2 if dim % 2 == 0 else 1
    cfg = Wav2Vec2Config(hidden_size=dim, num_hidden_layers=1, num_attention_heads=heads,
                         intermediate_size=2 * dim, conv_dim=(8,) * 7, num_conv_pos_embeddings=8,
                         num_conv_pos_embedding_groups=heads, vocab_size=8)
    Wav2Vec2Model(cfg).save_pretrained(str(path))
    Wav2Vec2FeatureExtractor(sampling_rate=AUDIO_RATE).save_pretrained(str(path))
    return str(path)


def build_tiny_models(root: str | Path, audio_dim: int = 8) -> dict:
    """Tiny random Wan transformer (4 latent channels, text width 32), VAE (4x4x4 compression,
    4 channels), T5 (d=32) and Wav2Vec2 under ``root``."""
    from model.text_encoder import build_tiny_text_encoder
    from model.vae import build_tiny_vae
    from model.wan_base import build_tiny_wan

    root = Path(root)
    return {
        "wan": build_tiny_wan(root / "wan", in_channels=4, text_dim=32),
        "vae": build_tiny_vae(root / "vae"),
        "t5": build_tiny_text_encoder(root / "t5"),
        "w2v": build_tiny_wav2vec2(root / "w2v", audio_dim),
    }


def shard_audio_dim(shards_dir: str) -> tuple[Optional[int], bool]:
    """(speech feature size declared by the shards' schema, whether any st2v row stores them)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    dim, stored = None, False
    for f in sorted(glob.glob(os.path.join(shards_dir, "*", "*.parquet"))):
        schema = pq.read_schema(f)
        if "audio_emb" not in schema.names:
            continue
        t = schema.field("audio_emb").type
        if dim is None and pa.types.is_list(t) and pa.types.is_fixed_size_list(t.value_type):
            dim = int(t.value_type.list_size)
        if os.path.basename(os.path.dirname(f)) == "st2v" and not stored:
            stored = pq.read_table(f, columns=["audio_emb"]).column("audio_emb").null_count < pq.read_metadata(f).num_rows
    return dim, stored


def demo_train_config(shards_dir: str, models: dict, audio_dim: int, has_emb: bool, out_dir: str,
                      steps: int) -> dict:
    """The parsed equivalent of training/configs/smoke.yaml, pointed at the demo's files."""
    return {
        "model": dict(base=models["wan"], mocha={"audio_dim": audio_dim, "vae_temporal_compression": 4},
                      train_mode="lora", lora={"rank": 4, "alpha": 4},
                      vae=models["vae"], text_encoder=models["t5"], audio_model=models["w2v"],
                      text_max_length=128, lr=1e-3, warmup_steps=2, ema_decay=0.99),
        "data": dict(
            roots=[shards_dir], fps=VIDEO_FPS, num_frames=17, vae_temporal_compression=4, resolution=32,
            spatial_multiple=8, buckets=[[32, 32]], batch_size=2, num_workers=0,
            audio_emb_dim=audio_dim, audio_model=None if has_emb else models["w2v"],
            missing_prompt="empty",
            # every shot size in one stage: the demo has a handful of clips of whatever shots
            curriculum={"stages": [{"track_mix": {"st2v": 0.8, "t2v": 0.2},
                                    "shot_mix": {"close_up": 0.25, "medium_close_up": 0.25,
                                                 "medium": 0.25, "wide": 0.25}}],
                        "stage_starts": [0], "allow_missing_pools": True}),
        "trainer": dict(max_steps=steps, default_root_dir=out_dir),
    }


def run_training_demo(shards_dir: str, out_dir: str, steps: int = 4, gen_steps: int = 4) -> dict:
    """Train a tiny model a few steps on ``shards_dir`` (a `mocha curate` output), save a
    checkpoint under ``out_dir``, generate one mp4 with speech; returns what was made."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    from training.data.datamodule import MochaDataModule
    from training.generate import GenerateConfig, generate, load_module, write_mp4
    from training.module import MochaLitModule

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dim, stored = shard_audio_dim(shards_dir)
    audio_dim = dim or 8
    models = build_tiny_models(out / "tiny_models", audio_dim)
    cfg = demo_train_config(shards_dir, models, audio_dim, stored, str(out / "train"), steps)
    L.seed_everything(0, verbose=False)
    module = MochaLitModule(**cfg["model"])
    dm = MochaDataModule(cfg["data"])
    ckpt_cb = ModelCheckpoint(dirpath=str(out / "train"), save_last=True, every_n_train_steps=steps)
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False,
                        callbacks=[ckpt_cb], enable_progress_bar=False, enable_model_summary=False,
                        gradient_clip_val=1.0, default_root_dir=str(out / "train"), limit_val_batches=0)
    losses: list[float] = []

    class _Losses(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(float(outputs["loss"]))

    trainer.callbacks.append(_Losses())
    trainer.fit(module, dm)
    ckpt = str(out / "train" / "last.ckpt")
    if not Path(ckpt).is_file():
        ckpt = ckpt_cb.best_model_path or ckpt_cb.last_model_path
    # generate from the checkpoint (the same path `mocha generate` takes) with demo speech
    from common.synth import synth_speech

    speech = synth_speech(1.2, 7)
    gen_module = load_module(ckpt)
    res = generate(gen_module, "A close-up of a cartoon character talking to the camera.", [speech],
                   GenerateConfig(height=32, width=32, steps=gen_steps, seed=0))
    mp4 = write_mp4(res, out / "generated.mp4")
    summary = {
        "checkpoint": ckpt,
        "steps": int(trainer.global_step),
        "losses": losses,
        "generated_mp4": str(mp4),
        "generated_frames": int(len(res.frames)),
        "speech_seconds": round(len(speech) / AUDIO_RATE, 3),
        "backends": {**res.info["backends"], "wav2vec2": TINY_W2V_LABEL,
                     "dit": f"{res.info['backends']['dit']} + MoCha speech layers ({steps} steps)"},
        "audio_emb_in_shards": stored,
    }
    (out / "training_demo.json").write_text(json.dumps(summary, indent=2))
    return summary


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 2 and argv[0] == "tiny-models":
        print(json.dumps(build_tiny_models(argv[1]), indent=2))
        return 0
    if len(argv) == 2:
        print(json.dumps(run_training_demo(argv[0], argv[1]), indent=2))
        return 0
    print("usage: python -m training.demo tiny-models DIR | python -m training.demo SHARDS_DIR OUT_DIR",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
