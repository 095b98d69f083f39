"""Trainer on a tiny random Wan base: overfits one real clip's latents; save/resume mid-stage
reproduces the loss curve step for step; checkpoints hold only what was trained and the base's
identity, load with weights_only=True and reload by resolving the base again; LoRA and full
modes train and reload; stage initialisation; bf16 with activation checkpointing."""
from __future__ import annotations

import glob

import lightning as L
import numpy as np
import pytest
import torch

from model.text_encoder import build_tiny_text_encoder
from model.vae import build_tiny_vae
from model.wan_base import build_tiny_wan
from tests.helpers.train import AUDIO_DIM, InMemoryDataModule, speech_features
from training.module import BaseMismatch, MochaLitModule

CLIP = "closeup_talk_hdtf_katiehill.mp4"
FRAMES, SIDE = 17, 64  # 17 frames -> 5 latent frames of the 4x tiny VAE


@pytest.fixture(scope="module")
def frozen(tmp_path_factory):
    d = tmp_path_factory.mktemp("frozen")
    return build_tiny_vae(d / "vae"), build_tiny_text_encoder(d / "t5"), build_tiny_wan(d / "wan")


def _module(frozen, **kw) -> MochaLitModule:
    vae, t5, wan = frozen
    args = dict(base=wan, mocha={"audio_dim": AUDIO_DIM}, train_mode="audio", lora={"rank": 4, "alpha": 4},
                vae=vae, text_encoder=t5, text_max_length=64, warmup_steps=0, lr=2e-3, ema_decay=0.0, seed=0)
    args.update(kw)
    torch.manual_seed(0)  # the same speech-layer init whatever ran before
    return MochaLitModule(**args)


@pytest.fixture(scope="module")
def real_clip_batch(real_dir, frozen):
    """One real talking-head clip: VAE latents of its first 17 frames, speech features per frame."""
    from common.media import decode_audio, decode_video
    from model.vae import load_vae

    src = str(real_dir / CLIP)
    frames, _ = decode_video(src, width=SIDE, height=SIDE, max_frames=FRAMES)
    video = torch.from_numpy(frames).permute(3, 0, 1, 2).float()[None] / 127.5 - 1.0
    pcm = decode_audio(src)
    latents = load_vae(frozen[0]).encode(video)
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
    opt = torch.optim.AdamW([p for p in module.net.parameters() if p.requires_grad], lr=module.hparams.lr)
    g = torch.Generator().manual_seed(123)
    noise = torch.randn(batch["latents"].shape, generator=g)
    sigma = torch.tensor([0.4])
    module.train()
    losses = []
    for step in range(steps):
        loss = module.compute_loss(batch, noise=noise if fixed else None, sigma=sigma if fixed else None,
                                   step=step, dropout=False)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.net.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
    return np.array(losses)


@pytest.mark.realdata
def test_tiny_wan_overfits_one_real_clip(real_clip_batch, frozen):
    assert real_clip_batch["latents"].shape == (1, 4, 5, SIDE // 4, SIDE // 4)
    fixed = _train(_module(frozen, train_mode="full"), real_clip_batch, 120, fixed=True)
    assert fixed[-10:].mean() <= fixed[0] / 10, f"fixed noise/t: {fixed[0]:.4f} -> {fixed[-10:].mean():.4f}"
    fresh = _train(_module(frozen, train_mode="full"), real_clip_batch, 120, fixed=False)
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


def _fit(frozen, max_steps, ckpt_dir=None, ckpt_path=None, **kw):
    L.seed_everything(0, verbose=False)
    args = dict(train_mode="lora", warmup_steps=3, lr=1e-3, ema_decay=0.99, text_dropout=0.3, audio_dropout=0.3)
    args.update(kw)
    module = _module(frozen, **args)
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
    first, m_first = _fit(frozen, 4, ckpt_dir=str(tmp_path))
    ckpts = glob.glob(str(tmp_path / "*step=4*.ckpt"))
    assert len(ckpts) == 1
    ck = torch.load(ckpts[0], map_location="cpu", weights_only=True)  # no arbitrary unpickling
    assert ck["InMemoryDataModule"]["consumed"] == 4  # the data position travels with the weights
    # only what is trained: speech layers + LoRA adapters and their EMA, never the frozen base
    net = {k[4:] for k in ck["state_dict"] if k.startswith("net.")}
    assert net == set(m_first.trained_names)
    assert any(".lora_A." in k for k in net) and not any(".base_layer." in k for k in net)
    assert set(ck["state_dict"]) - {"net." + k for k in net} == {"ema." + k for k in m_first.ema.state_dict()}
    assert ck["mocha"]["base"]["sha256"] == m_first.base_identity["sha256"]
    resumed, m_res = _fit(frozen, 8, ckpt_path=ckpts[0])
    assert [r[0] for r in full] == list(range(1, 9))
    assert first == full[:4]
    assert [r[2] for r in resumed] == [r[2] for r in full[4:]]
    np.testing.assert_allclose([r[1] for r in resumed], [r[1] for r in full[4:]], rtol=0, atol=1e-6)
    for a, b in zip(m_full.ema.buffers(), m_res.ema.buffers()):
        assert torch.allclose(a, b, atol=1e-6)
    # the EMA moved away from its init but lags the trained weights
    name = next(n for n in m_full.trained_names if "audio_attn.to_out.0.weight" in n)
    trained = dict(m_full.net.named_parameters())[name]
    assert m_full.ema.shadow(name).abs().sum() > 0 and not torch.allclose(m_full.ema.shadow(name), trained)


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_modes_train_and_reload_through_the_base(frozen, tmp_path, mode):
    from training.generate import load_module

    rows, module = _fit(frozen, 6, ckpt_dir=str(tmp_path), train_mode=mode, ema_decay=0.0, text_dropout=0.0,
                        audio_dropout=0.0, lr=3e-3, warmup_steps=0)
    losses = [r[1] for r in rows]
    assert all(np.isfinite(losses))
    ckpt = glob.glob(str(tmp_path / "*step=4*.ckpt"))[0]
    # the state at step 4, as the checkpoint has it
    _, at4 = _fit(frozen, 4, train_mode=mode, ema_decay=0.0, text_dropout=0.0, audio_dropout=0.0, lr=3e-3,
                  warmup_steps=0)
    re = load_module(ckpt)
    b = _batches()[0]
    with torch.no_grad():
        want = at4.eval().compute_loss(b, step=0, dropout=False)
        got = re.compute_loss(b, step=0, dropout=False)
        fresh = _module(frozen, train_mode=mode).eval().compute_loss(b, step=0, dropout=False)
    assert torch.allclose(got, want, atol=1e-6) and not torch.allclose(got, fresh, atol=1e-4)
    n_saved = sum(1 for k in torch.load(ckpt, weights_only=True)["state_dict"] if k.startswith("net."))
    assert (n_saved == len(list(re.net.parameters()))) == (mode == "full")


def test_reload_refuses_another_base(frozen, tmp_path):
    from training.generate import load_module

    _fit(frozen, 4, ckpt_dir=str(tmp_path), ema_decay=0.0)
    ckpt = glob.glob(str(tmp_path / "*.ckpt"))[0]
    other = build_tiny_wan(tmp_path / "other", seed=3)
    with pytest.raises(BaseMismatch, match="trained on base"):
        load_module(ckpt, base=other)
    same = build_tiny_wan(tmp_path / "copy", seed=0)  # another copy of the same weights is fine
    assert load_module(ckpt, base=same).base_identity["path"] == same


def test_init_from_previous_stage(frozen, tmp_path):
    _fit(frozen, 4, ckpt_dir=str(tmp_path))
    ckpt = glob.glob(str(tmp_path / "*.ckpt"))[0]
    nxt = _module(frozen, train_mode="lora", init_from=ckpt, ema_decay=0.99)
    name = next(n for n in nxt.trained_names if n.endswith("audio_attn.to_out.0.weight"))
    before = dict(nxt.net.named_parameters())[name].clone()
    nxt.setup("fit")
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    after = dict(nxt.net.named_parameters())[name]
    assert torch.equal(after, saved["net." + name]) and not torch.equal(before, after)
    # a LoRA stage cannot start a run that has no adapters to put them in
    with pytest.raises(ValueError, match="train_mode|mode"):
        _module(frozen, train_mode="audio", init_from=ckpt).setup("fit")


def test_full_stage_then_audio_stage_carries_the_changed_base(frozen, tmp_path):
    """A frozen tensor an earlier stage trained is saved again (``carried``), or the later
    checkpoint would silently fall back to the pretrained base's value."""
    _fit(frozen, 4, ckpt_dir=str(tmp_path / "s0"), train_mode="full", ema_decay=0.0)
    ckpt = glob.glob(str(tmp_path / "s0" / "*.ckpt"))[0]
    nxt = _module(frozen, train_mode="audio", init_from=ckpt)
    nxt.setup("fit")
    assert "blocks.0.attn1.to_q.weight" in nxt.carried
    out = {"state_dict": nxt.state_dict(), "hyper_parameters": dict(nxt.hparams)}
    nxt.on_save_checkpoint(out)
    assert "net.blocks.0.attn1.to_q.weight" in out["state_dict"]
    assert out["mocha"]["carried"] == sorted(nxt.carried)


def test_bf16_mixed_with_activation_checkpointing_trains(frozen):
    """The production precision and memory options run end to end through Lightning (on CPU)."""
    L.seed_everything(0, verbose=False)
    module = _module(frozen, train_mode="lora", lr=1e-3, ema_decay=0.99,
                     mocha={"audio_dim": AUDIO_DIM, "grad_checkpointing": True})
    rec = _Record()
    trainer = L.Trainer(max_steps=4, accelerator="cpu", precision="bf16-mixed", logger=False, callbacks=[rec],
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        gradient_clip_val=1.0)
    trainer.fit(module, InMemoryDataModule(_batches()))
    losses = [r[1] for r in rec.rows]
    assert len(losses) == 4 and all(np.isfinite(losses))
    assert all(p.dtype == torch.float32 for p in module.net.parameters() if p.requires_grad)  # fp32 master weights
