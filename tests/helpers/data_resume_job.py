"""Subprocess job of tests/training/data/test_data_resume.py: train or iterate, save or restore data state.

usage: data_resume_job.py plain|lightning SHARDS OUT.json [--steps N] [--save STATE] [--state STATE]
       [--ckpt-every N] [--ckpt CKPT]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402

from training.data.config import DataConfig  # noqa: E402

DIM = 8


def cfg(shards: str) -> DataConfig:
    return DataConfig(roots=[shards], num_frames=5, resolution=32, batch_size=2, num_workers=2, audio_emb_dim=DIM,
                      curriculum={"stage_starts": [0, 3, 6, 9, 12], "allow_missing_pools": True})


def plain(a) -> dict:
    from training.data.dataset import ShardLoader, ShardStream
    from training.data.shards import build_index

    c = cfg(a.shards)
    loader = ShardLoader(ShardStream(build_index(c.roots, DIM), c), c.num_workers)
    if a.state:
        loader.restore(torch.load(a.state, weights_only=True))
    ids = []
    for b in loader:
        ids.append(b["clip_id"])
        if a.save and len(ids) == a.save_after:
            torch.save(loader.snapshot(), a.save)
        if len(ids) == a.steps:
            break
    return {"ids": ids, "skipped": loader.skipped}


def lightning(a) -> dict:
    import lightning as L

    from training.data.datamodule import MochaDataModule

    seen = []

    class Probe(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def training_step(self, batch, i):
            seen.append(list(batch["clip_id"]))
            assert "_batch_index" not in batch
            return (self.w * batch["video"].mean()).sum() + self.w.square().sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    cbs = []
    if a.ckpt_every:
        cbs.append(L.pytorch.callbacks.ModelCheckpoint(dirpath=a.ckpt_dir, every_n_train_steps=a.ckpt_every,
                                                       save_top_k=-1, filename="{step}"))
    trainer = L.Trainer(max_steps=a.steps, accelerator="cpu", devices=1, logger=False, callbacks=cbs,
                        enable_checkpointing=bool(cbs), enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0)
    dm = MochaDataModule(cfg(a.shards))
    trainer.fit(Probe(), datamodule=dm, ckpt_path=a.ckpt)
    return {"ids": seen, "stage": dm.current_stage()}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["plain", "lightning"])
    p.add_argument("shards")
    p.add_argument("out")
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--save")
    p.add_argument("--save-after", type=int, default=0)
    p.add_argument("--state")
    p.add_argument("--ckpt")
    p.add_argument("--ckpt-every", type=int, default=0)
    p.add_argument("--ckpt-dir")
    a = p.parse_args()
    res = plain(a) if a.mode == "plain" else lightning(a)
    Path(a.out).write_text(json.dumps(res))


if __name__ == "__main__":
    main()
