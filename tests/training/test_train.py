"""Trainer: a tiny DiT overfits one real clip's latents; save/resume mid-stage reproduces the
loss curve step for step; EMA and stage initialisation."""
from __future__ import annotations

import glob

import lightning as L
import numpy as np
import pytest
import torch

from model.text_encoder import build_tiny_text_encoder
from model.vae import build_tiny_vae
from tests.helpers.train import AUDIO_DIM, InMemoryDataModule, speech_features
from training.module import MochaLitModule

CLIP = "closeup_talk_hdtf_katiehill.mp4"
FRAMES, SIDE = 17, 64  # 17 frames -> 5 latent frames of the 4x tiny VAE


@pytest.fixture(scope="module")
def frozen(tmp_path_factory):
    d = tmp_path_factory.mktemp("frozen")
    return build_tiny_vae(d / "vae"), build_tiny_text_encoder(d / "t5")


def _module(frozen, **kw) -> MochaLitModule:
    vae, t5 = frozen
    args = dict(dit={"in_channels": 4, "text_dim": 32, "audio_dim": AUDIO_DIM}, vae=vae, text_encoder=t5,
                warmup_steps=0, lr=2e-3, ema_decay=0.0, seed=0)
    args.update(kw)
    torch.manual_seed(0)  # the same DiT init whatever ran before
    return MochaLitModule(**args)


@pytest.fixture(scope="module")
def real_clip_batch(real_dir, frozen):
    """One real talking-head clip: VAE latents of its first 17 frames, speech features per frame."""
    from common.media import decode_audio, decode_video

    src = str(real_dir / CLIP)
    frames, _ = decode_video(src, width=SIDE, height=SIDE, max_frames=FRAMES)
    video = torch.from_numpy(frames).permute(3, 0, 1, 2).float()[None] / 127.5 - 1.0
    pcm = decode_audio(src)
    torch.manual_seed(0)
    latents = _module(frozen).vae_model().encode(video)
    return {
        "latents": latents,
        "audio_emb": torch.from_numpy(speech_features(pcm, FRAMES))[None],
        "has_audio": torch.tensor([True]),
        "prompt": ["A close-up of a woman speaking to the camera indoors."],
        "clip_id": ["real0"], "track": ["st2v"], "shot_size": ["close_up"],
        "num_frames": torch.tensor([FRAMES]),
    }


def _train(module, batch, steps, fixed: bool):
    torch.manual_seed(0)
    opt = torch.optim.AdamW(module.dit.parameters(), lr=module.hparams.lr)
    g = torch.Generator().manual_seed(123)
    noise = torch.randn(batch["latents"].shape, generator=g)
    t = torch.tensor([0.6])
    module.train()
    losses = []
    for step in range(steps):
        loss = module.compute_loss(batch, noise=noise if fixed else None, t=t if fixed else None,
                                   step=step, dropout=False)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.dit.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
    return np.array(losses)


@pytest.mark.realdata
def test_tiny_dit_overfits_one_real_clip(real_clip_batch, frozen):
    assert real_clip_batch["latents"].shape == (1, 4, 5, SIDE // 4, SIDE // 4)
    fixed = _train(_module(frozen), real_clip_batch, 250, fixed=True)
    assert fixed[-10:].mean() <= fixed[0] / 10, f"fixed noise/t: {fixed[0]:.4f} -> {fixed[-10:].mean():.4f}"
    fresh = _train(_module(frozen), real_clip_batch, 250, fixed=False)
    assert fresh[-25:].mean() < 0.5 * fresh[:10].mean(), f"fresh noise: {fresh[:10].mean():.4f} -> {fresh[-25:].mean():.4f}"


class _Record(L.Callback):
    def __init__(self):
        self.rows = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.rows.append((trainer.global_step, float(outputs["loss"]), batch["clip_id"][0]))


def _batches(n=5):
    g = torch.Generator().manual_seed(7)
    out = []
    for i in range(n):
        out.append({
            "latents": torch.randn(2, 4, 3, 8, 8, generator=g),
            "audio_emb": torch.randn(2, 9, AUDIO_DIM, generator=g),
            "has_audio": torch.tensor([True, i % 2 == 0]),  # mixed st2v / t2v
            "prompt": [f"clip {i} speaker", "a quiet landscape"],
            "clip_id": [f"c{i}", f"t{i}"], "track": ["st2v", "t2v"], "shot_size": ["close_up", "no_face"],
            "num_frames": torch.tensor([9, 7]),
        })
    return out


def _fit(frozen, max_steps, ckpt_dir=None, ckpt_path=None):
    L.seed_everything(0, verbose=False)
    module = _module(frozen, warmup_steps=3, lr=1e-3, ema_decay=0.99, text_dropout=0.3, audio_dropout=0.3)
    rec = _Record()
    cbs = [rec]
    if ckpt_dir:
        cbs.append(L.pytorch.callbacks.ModelCheckpoint(dirpath=ckpt_dir, every_n_train_steps=4, save_top_k=-1))
    trainer = L.Trainer(max_steps=max_steps, accelerator="cpu", logger=False, callbacks=cbs,
                        enable_checkpointing=bool(ckpt_dir), enable_progress_bar=False,
                        enable_model_summary=False, deterministic=True, gradient_clip_val=1.0)
    trainer.fit(module, InMemoryDataModule(_batches()), ckpt_path=ckpt_path)
    return rec.rows, module


def test_resume_mid_stage_reproduces_loss_curve(frozen, tmp_path):
    full, m_full = _fit(frozen, 8)
    first, _ = _fit(frozen, 4, ckpt_dir=str(tmp_path))
    ckpts = glob.glob(str(tmp_path / "*step=4*.ckpt"))
    assert len(ckpts) == 1
    ck = torch.load(ckpts[0], map_location="cpu", weights_only=False)
    assert ck["InMemoryDataModule"]["consumed"] == 4  # the data position travels with the weights
    assert not any(k.startswith(("_frozen", "vae.", "text")) for k in ck["state_dict"])  # frozen models stay out
    resumed, m_res = _fit(frozen, 8, ckpt_path=ckpts[0])
    assert [r[0] for r in full] == list(range(1, 9))
    assert first == full[:4]
    assert [r[2] for r in resumed] == [r[2] for r in full[4:]]
    np.testing.assert_allclose([r[1] for r in resumed], [r[1] for r in full[4:]], rtol=0, atol=1e-6)
    for a, b in zip(m_full.ema_dit.parameters(), m_res.ema_dit.parameters()):
        assert torch.allclose(a, b, atol=1e-6)
    # the EMA copy moved away from its init but lags the trained weights
    assert not torch.allclose(m_full.ema_dit.head.weight, m_full.dit.head.weight)


def test_init_from_previous_stage(frozen, tmp_path):
    _fit(frozen, 4, ckpt_dir=str(tmp_path))
    ckpt = glob.glob(str(tmp_path / "*.ckpt"))[0]
    nxt = _module(frozen, init_from=ckpt, ema_decay=0.99)
    before = nxt.dit.head.weight.clone()
    nxt.setup("fit")
    saved = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    assert torch.equal(nxt.dit.head.weight, saved["dit.head.weight"])
    assert not torch.equal(before, nxt.dit.head.weight)


def test_bf16_mixed_with_activation_checkpointing_trains(frozen):
    """The production precision and memory options run end to end through Lightning (on CPU)."""
    L.seed_everything(0, verbose=False)
    module = _module(frozen, lr=1e-3, ema_decay=0.99)
    module.dit.cfg.grad_checkpointing = True
    rec = _Record()
    trainer = L.Trainer(max_steps=6, accelerator="cpu", precision="bf16-mixed", logger=False, callbacks=[rec],
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        gradient_clip_val=1.0)
    trainer.fit(module, InMemoryDataModule(_batches()))
    losses = [r[1] for r in rec.rows]
    assert len(losses) == 6 and all(np.isfinite(losses))
    assert all(p.dtype == torch.float32 for p in module.dit.parameters())  # fp32 master weights
