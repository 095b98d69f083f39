"""LightningModule: flow-matching training of the MoCha DiT.

The frozen VAE and text encoder are loaded lazily and kept OUT of the module's state dict (a
checkpoint holds only what is trained: DiT, its EMA copy, optimizer, schedule), so a checkpoint
of a 1B DiT does not carry a 5B text encoder. Noise, timesteps and condition dropout come from a
generator seeded by (seed, global step, rank): a resumed run draws exactly what an uninterrupted
run would have drawn, without saving RNG state.
"""
from __future__ import annotations

import copy
import logging
from collections import OrderedDict
from typing import Any, Optional

import lightning as L
import torch

from model.dit import DiT, DiTConfig, dit_config
from model.flow import FlowConfig, flow_loss, interpolate, sample_t

log = logging.getLogger(__name__)

# keeps the per-step noise stream distinct from user code that also seeds 0, 1, 2 ...
_SEED_SALT = 0x5EED_F10A


class MochaLitModule(L.LightningModule):
    def __init__(
        self,
        dit_preset: str = "tiny",
        dit: Optional[dict] = None,
        vae: str = "wan2.1-vae",
        text_encoder: str = "umt5-xxl",
        text_max_length: int = 512,
        audio_model: str = "wav2vec2-base-960h",
        audio_layer: int = -1,
        lr: float = 1e-4,
        weight_decay: float = 0.01,
        betas: tuple[float, float] = (0.9, 0.999),
        warmup_steps: int = 1000,
        ema_decay: float = 0.9999,
        text_dropout: float = 0.1,
        audio_dropout: float = 0.1,
        timestep_sampling: str = "logit_normal",
        logit_mean: float = 0.0,
        logit_std: float = 1.0,
        seed: int = 0,
        init_from: Optional[str] = None,
    ):
        """
        Args:
            dit_preset: named DiT size (tiny | 100m | 1b); ``dit`` overrides single fields.
            dit: DiTConfig fields (in_channels must equal the VAE's latent channels, text_dim the
                text encoder's hidden size, audio_dim the Wav2Vec2 feature size).
            vae / text_encoder: registry name, hub id or local directory (loaded local-only).
            audio_model / audio_layer: the speech encoder whose features the shards hold; used
                by ``mocha generate`` to featurise new speech the same way.
            warmup_steps: linear LR warmup; constant afterwards (stage runs are short).
            ema_decay: 0 disables the EMA copy; generation uses the EMA weights when present.
            text_dropout / audio_dropout: probability of training a sample without its prompt /
                speech, which is what makes separate text and audio guidance possible.
            init_from: checkpoint whose DiT (+EMA) weights start this run (the previous
                curriculum stage); ignored for the parts a resumed checkpoint restores.
        """
        super().__init__()
        self.save_hyperparameters()
        self.dit_cfg: DiTConfig = dit_config(dit_preset, **(dit or {}))
        self.dit = DiT(self.dit_cfg)
        self.ema_dit = copy.deepcopy(self.dit).requires_grad_(False) if ema_decay > 0 else None
        self.flow_cfg = FlowConfig(timestep_sampling=timestep_sampling, logit_mean=logit_mean, logit_std=logit_std)
        self._frozen: dict[str, Any] = {}  # vae / text encoder, deliberately not submodules
        self._text_cache: OrderedDict[str, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self._init_done = False

    # ----- frozen models -----------------------------------------------------------------
    def vae_model(self):
        if "vae" not in self._frozen:
            from model.vae import load_vae

            vae = load_vae(self.hparams.vae)
            if vae.latent_channels != self.dit_cfg.in_channels:
                raise ValueError(f"VAE {self.hparams.vae} has {vae.latent_channels} latent channels, "
                                 f"the DiT expects in_channels={self.dit_cfg.in_channels}")
            if vae.temporal_compression != self.dit_cfg.vae_temporal_compression:
                raise ValueError(f"VAE temporal compression {vae.temporal_compression} != DiT "
                                 f"vae_temporal_compression {self.dit_cfg.vae_temporal_compression}")
            self._frozen["vae"] = vae.to(self.device)
        return self._frozen["vae"]

    def text_model(self):
        if "text" not in self._frozen:
            from model.text_encoder import TextEncoderConfig, load_text_encoder

            te = load_text_encoder(TextEncoderConfig(name_or_path=self.hparams.text_encoder,
                                                     max_length=self.hparams.text_max_length))
            if te.dim != self.dit_cfg.text_dim:
                raise ValueError(f"text encoder {self.hparams.text_encoder} has hidden size {te.dim}, "
                                 f"the DiT expects text_dim={self.dit_cfg.text_dim}")
            self._frozen["text"] = te.to(self.device)
        return self._frozen["text"]

    def backends(self) -> dict:
        """What produced the conditioning, for run records (tiny random models say so)."""
        out = {}
        if "vae" in self._frozen:
            out["vae"] = self._frozen["vae"].label
        if "text" in self._frozen:
            out["text_encoder"] = self._frozen["text"].label
        return out

    def encode_text(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """[B,L,D] and mask [B,L]; per-prompt results cached (prompts repeat every epoch)."""
        te = self.text_model()
        missing = [p for p in dict.fromkeys(prompts) if p not in self._text_cache]
        if missing:
            h, m = te.encode(missing, device=self.device)
            for i, p in enumerate(missing):
                n = int(m[i].sum())
                self._text_cache[p] = (h[i, :n].detach().cpu(), m[i, :n].cpu())
                while len(self._text_cache) > 4096:
                    self._text_cache.popitem(last=False)
        items = [self._text_cache[p] for p in prompts]
        L_ = max(x[0].shape[0] for x in items)
        D = items[0][0].shape[1]
        hid = torch.zeros(len(prompts), L_, D)
        mask = torch.zeros(len(prompts), L_, dtype=torch.bool)
        for i, (h, m) in enumerate(items):
            hid[i, :h.shape[0]] = h
            mask[i, :h.shape[0]] = True
        return hid.to(self.device), mask.to(self.device)

    # ----- data -> model inputs ------------------------------------------------------------
    def batch_latents(self, batch: dict) -> torch.Tensor:
        if batch.get("latents") is not None:
            return batch["latents"].float()
        if batch.get("video") is None:
            raise KeyError("batch has neither 'latents' nor 'video'")
        return self.vae_model().encode(batch["video"].float())

    def align_audio(self, audio: torch.Tensor, num_latent: int, num_frames: Optional[torch.Tensor] = None,
                    has_audio: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Crop/pad per-frame speech features to the video frames the latents cover; the
        validity mask excludes padding and frames beyond each sample's ``num_frames``."""
        r = self.dit_cfg.vae_temporal_compression
        T = 1 + r * (num_latent - 1)
        B, Ta, D = audio.shape
        if Ta >= T:
            audio = audio[:, :T]
        else:
            audio = torch.cat([audio, audio.new_zeros(B, T - Ta, D)], dim=1)
        idx = torch.arange(T, device=audio.device)[None]
        valid = (idx < Ta).expand(B, T).clone()
        if num_frames is not None:
            valid &= idx < num_frames.to(audio.device)[:, None]
        if has_audio is not None:
            # t2v rows: all-zero features that are all "valid", exactly as at generation time
            valid |= ~has_audio.to(audio.device).bool()[:, None]
        return audio, valid

    def compute_loss(self, batch: dict, noise: Optional[torch.Tensor] = None,
                     t: Optional[torch.Tensor] = None, step: Optional[int] = None,
                     dropout: bool = True) -> torch.Tensor:
        x1 = self.batch_latents(batch)
        B = x1.shape[0]
        step = int(self.global_step if step is None else step)
        g = torch.Generator(device="cpu").manual_seed(
            ((int(self.hparams.seed) * 1_000_003 + step) * 1024 + int(self.global_rank)) ^ _SEED_SALT)
        if noise is None:
            noise = torch.randn(x1.shape, generator=g)
        if t is None:
            t = sample_t(B, self.flow_cfg, generator=g)
        u_text, u_audio = torch.rand(B, generator=g), torch.rand(B, generator=g)
        noise, t = noise.to(x1), t.to(x1)
        text, tmask = self.encode_text(list(batch["prompt"]))
        has_audio = batch["has_audio"].to(self.device).bool()
        if dropout and self.training:
            drop_t = (u_text < self.hparams.text_dropout).to(self.device)
            if bool(drop_t.any()):
                e_h, e_m = self.encode_text([""] * B)
                L_ = max(text.shape[1], e_h.shape[1])
                text = _pad_to(text, L_)
                tmask = _pad_to(tmask, L_)
                text = torch.where(drop_t[:, None, None], _pad_to(e_h, L_), text)
                tmask = torch.where(drop_t[:, None], _pad_to(e_m, L_), tmask)
            has_audio = has_audio & ~(u_audio < self.hparams.audio_dropout).to(self.device)
        audio, avalid = self.align_audio(batch["audio_emb"].float().to(self.device), x1.shape[2],
                                         batch.get("num_frames"), has_audio)
        xt, v = interpolate(x1, noise, t)
        pred = self.dit(xt, t, text, audio, text_mask=tmask, has_audio=has_audio, audio_valid=avalid)
        return flow_loss(pred, v)

    # ----- Lightning hooks -----------------------------------------------------------------
    def setup(self, stage: str) -> None:
        # fail before any data is read when a frozen model is missing or does not fit the DiT;
        # the VAE is optional here: shards with precomputed latents never need it
        self.text_model()
        try:
            self.vae_model()
        except RuntimeError as e:
            log.warning("VAE not loaded (%s); every batch must carry precomputed latents", e)
        if self.hparams.init_from and not self._init_done:
            ckpt = torch.load(self.hparams.init_from, map_location="cpu", weights_only=False)
            sd = {k: v for k, v in ckpt["state_dict"].items() if k.startswith(("dit.", "ema_dit."))}
            missing, unexpected = self.load_state_dict(sd, strict=False)
            log.info("initialised from %s (%d tensors; missing %d)", self.hparams.init_from, len(sd), len(missing))
            if self.ema_dit is not None and not any(k.startswith("ema_dit.") for k in sd):
                self.ema_dit.load_state_dict(self.dit.state_dict())
            self._init_done = True

    def on_fit_start(self) -> None:
        for m in self._frozen.values():
            m.to(self.device)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.compute_loss(batch)
        B = len(batch["prompt"])
        self.log("train/loss", loss, prog_bar=True, batch_size=B)
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], batch_size=B)
        if "has_audio" in batch:
            self.log("train/st2v_frac", batch["has_audio"].float().mean(), batch_size=B)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.compute_loss(batch, step=batch_idx, dropout=False)
        self.log("val/loss", loss, prog_bar=True, batch_size=len(batch["prompt"]), sync_dist=True)
        return loss

    def optimizer_step(self, *args, **kwargs):
        # EMA right after each real optimizer step (not in on_train_batch_end, which runs after
        # the checkpoint callback and would leave a saved EMA one update behind its weights)
        out = super().optimizer_step(*args, **kwargs)
        self._update_ema()
        return out

    @torch.no_grad()
    def _update_ema(self) -> None:
        if self.ema_dit is None:
            return
        d = float(self.hparams.ema_decay)
        # early in training a fixed 0.9999 would average mostly the random init
        d = min(d, (1 + self.global_step) / (10 + self.global_step))
        for pe, p in zip(self.ema_dit.parameters(), self.dit.parameters()):
            pe.lerp_(p.detach().to(pe.dtype), 1.0 - d)

    def configure_optimizers(self):
        decay, no_decay = [], []
        for n, p in self.dit.named_parameters():
            if not p.requires_grad:
                continue
            (decay if p.ndim >= 2 and "modulation" not in n and "out_mod" not in n else no_decay).append(p)
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": self.hparams.weight_decay},
             {"params": no_decay, "weight_decay": 0.0}],
            lr=self.hparams.lr, betas=tuple(self.hparams.betas))
        warm = max(0, int(self.hparams.warmup_steps))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) if warm else 1.0)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def sampling_model(self) -> DiT:
        return self.ema_dit if self.ema_dit is not None else self.dit


def _pad_to(x: torch.Tensor, n: int) -> torch.Tensor:
    if x.shape[1] >= n:
        return x
    pad = x.new_zeros((x.shape[0], n - x.shape[1], *x.shape[2:]))
    return torch.cat([x, pad], dim=1)
