"""LightningModule: flow-matching fine-tuning of MoCha on a pretrained Wan 2.1 transformer.

The model is the base (``model.base``: registry name, hub id or diffusers folder) with speech
cross-attention in every block (``model/mocha_wan.py``); ``train_mode`` says what is trained
(``audio`` | ``lora`` | ``full``, ``model/finetune.py``). A checkpoint holds only what was
trained (plus what an earlier stage changed in the frozen part, ``carried``), its EMA, the
optimizer and schedule, and the base's identity (source, revision, sha256); loading resolves
the base again and refuses one with another digest. Checkpoints load with
``torch.load(weights_only=True)``.

The frozen VAE and text encoder are loaded lazily and kept out of the module's state. Noise,
timesteps and condition dropout come from a generator seeded by (seed, global step, rank): a
resumed run draws exactly what an uninterrupted run would have drawn, without saving RNG state.
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from contextlib import contextmanager, nullcontext
from typing import Any, Optional

import lightning as L
import torch

from model.finetune import LoraSettings, configure_training
from model.flow import FlowConfig, flow_loss, interpolate, sample_sigma, timestep_of
from model.mocha_wan import MochaConfig, MochaWan
from model.wan_base import DEFAULT_BASE, load_base
from training.ema import EMA

log = logging.getLogger(__name__)

# keeps the per-step noise stream distinct from user code that also seeds 0, 1, 2 ...
_SEED_SALT = 0x5EED_F10A
# where a checkpoint records the base's identity and which tensors it holds
CKPT_KEY = "mocha"


def _as(cls, v):
    """A config dataclass from itself, a dict (checkpoint hparams) or None (defaults)."""
    if isinstance(v, cls):
        return v
    return cls(**(v or {}))


class BaseMismatch(ValueError):
    """A checkpoint was trained on another base than the one resolved now."""


class MochaLitModule(L.LightningModule):
    def __init__(
        self,
        base: str = DEFAULT_BASE,
        base_dtype: str = "float32",
        mocha: Optional[MochaConfig] = None,
        train_mode: str = "lora",
        lora: Optional[LoraSettings] = None,
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
        timestep_shift: float = 1.0,
        seed: int = 0,
        init_from: Optional[str] = None,
        models_dir: Optional[str] = None,
    ):
        """
        Args:
            base: the pretrained WanTransformer3DModel: registry name (``mocha models fetch``),
                hub id in the Hugging Face cache, or a diffusers-format folder.
            base_dtype: dtype the base is loaded in; bfloat16 halves a frozen base's memory on
                one device or under DDP (FSDP needs one dtype per unit: keep float32 there).
            mocha: MochaConfig fields (audio_dim = the shards' Wav2Vec2 feature size,
                window_attention, window_margin, vae_temporal_compression, grad_checkpointing).
            train_mode: ``audio`` (speech layers only), ``lora`` (+ LoRA on the base) or ``full``.
            lora: LoraSettings fields (rank, alpha, dropout, targets) for ``train_mode: lora``.
            vae / text_encoder: registry name, hub id or local directory (loaded local-only);
                the VAE's latent channels and the encoder's width must be the base's.
            text_max_length: text tokens; Wan 2.1 saw 512 zero-padded umT5 states, no mask.
            audio_model / audio_layer: the speech encoder whose features the shards hold; used
                by ``mocha generate`` to featurise new speech the same way.
            warmup_steps: linear LR warmup; constant afterwards (stage runs are short).
            ema_decay: 0 disables the EMA; generation uses the EMA weights when present.
            text_dropout / audio_dropout: probability of training a sample without its prompt /
                speech, which is what makes separate text and audio guidance possible.
            timestep_shift: Wan's time shift of the drawn noise levels (1 = none).
            init_from: checkpoint whose trained weights (+ EMA) start this run (the previous
                curriculum stage); ignored for the parts a resumed checkpoint restores.
        """
        super().__init__()
        self.mocha_cfg = _as(MochaConfig, mocha)
        self.lora_cfg = _as(LoraSettings, lora)
        self.save_hyperparameters()
        # plain dicts in the checkpoint (it must load with weights_only=True)
        for h in (self.hparams, self._hparams_initial):
            h["mocha"], h["lora"] = self.mocha_cfg.to_dict(), self.lora_cfg.to_dict()
        wan, self.base_identity, self.base_label = load_base(base, base_dtype, models_dir)
        self.net = MochaWan(wan, self.mocha_cfg)
        self.trained_names: list[str] = configure_training(self.net, train_mode, self.lora_cfg)
        params = dict(self.net.named_parameters())
        self.ema = EMA((n, params[n]) for n in self.trained_names) if ema_decay > 0 else None
        self.carried: set[str] = set()  # frozen tensors an earlier stage changed: saved too
        self.flow_cfg = FlowConfig(timestep_sampling=timestep_sampling, logit_mean=logit_mean,
                                   logit_std=logit_std, shift=timestep_shift)
        self._frozen: dict[str, Any] = {}  # vae / text encoder, deliberately not submodules
        self._text_cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._init_done = False
        # the frozen base is not in our checkpoints; load_state_dict checks what must be there
        self.strict_loading = False

    # ----- frozen models -----------------------------------------------------------------
    def vae_model(self):
        if "vae" not in self._frozen:
            from model.vae import load_vae

            vae = load_vae(self.hparams.vae)
            if vae.latent_channels != self.net.in_channels:
                raise ValueError(f"VAE {self.hparams.vae} has {vae.latent_channels} latent channels, "
                                 f"the base transformer takes in_channels={self.net.in_channels}")
            if vae.temporal_compression != self.mocha_cfg.vae_temporal_compression:
                raise ValueError(f"VAE temporal compression {vae.temporal_compression} != "
                                 f"mocha.vae_temporal_compression {self.mocha_cfg.vae_temporal_compression}")
            self._frozen["vae"] = vae.to(self.device)
        return self._frozen["vae"]

    def text_model(self):
        if "text" not in self._frozen:
            from model.text_encoder import TextEncoderConfig, load_text_encoder

            te = load_text_encoder(TextEncoderConfig(name_or_path=self.hparams.text_encoder,
                                                     max_length=self.hparams.text_max_length))
            if te.dim != self.net.text_dim:
                raise ValueError(f"text encoder {self.hparams.text_encoder} has hidden size {te.dim}, "
                                 f"the base transformer takes text_dim={self.net.text_dim}")
            self._frozen["text"] = te.to(self.device)
        return self._frozen["text"]

    def backends(self) -> dict:
        """What produced the model and its conditioning, for run records (tiny random models say so)."""
        out = {"dit": self.base_label, "train_mode": self.hparams.train_mode}
        if "vae" in self._frozen:
            out["vae"] = self._frozen["vae"].label
        if "text" in self._frozen:
            out["text_encoder"] = self._frozen["text"].label
        return out

    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        """[B, text_max_length, D]: each prompt's states, zero-padded as Wan was trained (no
        mask); per-prompt results cached (prompts repeat every epoch)."""
        te = self.text_model()
        missing = [p for p in dict.fromkeys(prompts) if p not in self._text_cache]
        if missing:
            h, m = te.encode(missing, device=self.device)
            for i, p in enumerate(missing):
                self._text_cache[p] = h[i, :int(m[i].sum())].detach().cpu()
                while len(self._text_cache) > 4096:
                    self._text_cache.popitem(last=False)
        L_ = int(self.hparams.text_max_length)
        out = torch.zeros(len(prompts), L_, te.dim)
        for i, p in enumerate(prompts):
            h = self._text_cache[p][:L_]
            out[i, :h.shape[0]] = h
        return out.to(self.device)

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
        r = self.mocha_cfg.vae_temporal_compression
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
                     sigma: Optional[torch.Tensor] = None, step: Optional[int] = None,
                     dropout: bool = True) -> torch.Tensor:
        x1 = self.batch_latents(batch)
        B = x1.shape[0]
        step = int(self.global_step if step is None else step)
        g = torch.Generator(device="cpu").manual_seed(
            ((int(self.hparams.seed) * 1_000_003 + step) * 1024 + int(self.global_rank)) ^ _SEED_SALT)
        if noise is None:
            noise = torch.randn(x1.shape, generator=g)
        if sigma is None:
            sigma = sample_sigma(B, self.flow_cfg, generator=g)
        u_text, u_audio = torch.rand(B, generator=g), torch.rand(B, generator=g)
        noise, sigma = noise.to(x1), sigma.to(x1)
        text = self.encode_text(list(batch["prompt"]))
        has_audio = batch["has_audio"].to(self.device).bool()
        if dropout and self.training:
            drop_t = (u_text < self.hparams.text_dropout).to(self.device)
            if bool(drop_t.any()):
                text = torch.where(drop_t[:, None, None], self.encode_text([""] * B), text)
            has_audio = has_audio & ~(u_audio < self.hparams.audio_dropout).to(self.device)
        audio, avalid = self.align_audio(batch["audio_emb"].float().to(self.device), x1.shape[2],
                                         batch.get("num_frames"), has_audio)
        xt, v = interpolate(x1, noise, sigma)
        pred = self.net(xt, timestep_of(sigma), text, audio, has_audio=has_audio, audio_valid=avalid)
        return flow_loss(pred, v)

    # ----- checkpoints -------------------------------------------------------------------
    def saved_names(self) -> set[str]:
        return set(self.trained_names) | self.carried

    def check_base(self, saved: Optional[dict], what: str) -> None:
        if not saved:
            raise BaseMismatch(f"{what} records no base identity (not a checkpoint of this trainer?)")
        if saved.get("sha256") != self.base_identity["sha256"]:
            raise BaseMismatch(
                f"{what} was trained on base {saved.get('source')!r} (sha256 {str(saved.get('sha256'))[:16]}), "
                f"but {self.hparams.base!r} resolves to {self.base_identity['path']} "
                f"(sha256 {self.base_identity['sha256'][:16]}); point --model.base at the same weights")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        keep = {"net." + n for n in self.saved_names()}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items()
                                    if k in keep or k.startswith("ema.")}
        checkpoint[CKPT_KEY] = {"base": self.base_identity, "train_mode": self.hparams.train_mode,
                                "trained": sorted(self.trained_names), "carried": sorted(self.carried)}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        meta = checkpoint.get(CKPT_KEY) or {}
        self.check_base(meta.get("base"), "the checkpoint")
        self.carried = set(meta.get("carried", []))

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Our checkpoints hold the trained (and carried) tensors only: every one of those must
        be there, and nothing the model does not have."""
        own = set(self.state_dict().keys())
        unexpected = sorted(k for k in state_dict if k not in own)
        need = {"net." + n for n in self.saved_names()}
        if self.ema is not None:
            need |= {"ema." + k for k in self.ema.state_dict()}
        missing = sorted(need - set(state_dict))
        if unexpected or missing:
            raise ValueError(f"checkpoint does not fit this model (train_mode {self.hparams.train_mode!r}): "
                             f"missing {missing[:4]}{' ...' if len(missing) > 4 else ''}, "
                             f"unexpected {unexpected[:4]}{' ...' if len(unexpected) > 4 else ''}")
        return super().load_state_dict(state_dict, strict=False, assign=assign)

    def _init_from(self, path: str) -> None:
        ck = torch.load(path, map_location="cpu", weights_only=True)
        self.check_base((ck.get(CKPT_KEY) or {}).get("base"), f"init_from {path}")
        sd = ck["state_dict"]
        net = {k[4:]: v for k, v in sd.items() if k.startswith("net.")}
        own = set(self.net.state_dict())
        unexpected = sorted(k for k in net if k not in own)
        if unexpected:
            raise ValueError(f"init_from {path} holds tensors this model lacks ({unexpected[:3]} ...): it was "
                             f"trained in mode {(ck.get(CKPT_KEY) or {}).get('train_mode')!r}, this run is "
                             f"{self.hparams.train_mode!r}")
        self.net.load_state_dict(net, strict=False)
        self.carried = {k for k in net if k not in set(self.trained_names)}
        if self.ema is not None:
            params = dict(self.net.named_parameters())
            self.ema.copy_from(params)
            ema = {k[4:]: v for k, v in sd.items() if k.startswith("ema.")}
            for k, v in ema.items():
                if hasattr(self.ema, k):
                    getattr(self.ema, k).copy_(v)
        log.info("initialised from %s (%d tensors, %d of the frozen part)", path, len(net), len(self.carried))

    # ----- Lightning hooks -----------------------------------------------------------------
    def setup(self, stage: str) -> None:
        trainer = getattr(self, "_trainer", None)
        if self.ema is not None and trainer is not None and "FSDP" in type(trainer.strategy).__name__:
            raise ValueError("ema_decay > 0 under FSDP: the EMA keeps unsharded copies of the trained "
                             "tensors; set model.ema_decay: 0 (fsdp_8gpu.yaml does)")
        # fail before any data is read when a frozen model is missing or does not fit the base;
        # the VAE is optional here: shards with precomputed latents never need it
        self.text_model()
        try:
            self.vae_model()
        except RuntimeError as e:
            log.warning("VAE not loaded (%s); every batch must carry precomputed latents", e)
        if self.hparams.init_from and not self._init_done:
            self._init_from(self.hparams.init_from)
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
        if self.ema is None:
            return
        d = float(self.hparams.ema_decay)
        # early in training a fixed 0.9999 would average mostly the initial weights
        d = min(d, (1 + self.global_step) / (10 + self.global_step))
        self.ema.update(dict(self.net.named_parameters()), d)

    def configure_optimizers(self):
        decay, no_decay = [], []
        for n, p in self.net.named_parameters():
            if not p.requires_grad:
                continue
            (decay if p.ndim >= 2 and "scale_shift_table" not in n else no_decay).append(p)
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": self.hparams.weight_decay},
             {"params": no_decay, "weight_decay": 0.0}],
            lr=self.hparams.lr, betas=tuple(self.hparams.betas))
        warm = max(0, int(self.hparams.warmup_steps))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) if warm else 1.0)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    @contextmanager
    def sampling_weights(self, use_ema: bool = True):
        """The EMA weights in the network inside the block (when there is an EMA and asked)."""
        ctx = self.ema.swapped_into(dict(self.net.named_parameters())) if use_ema and self.ema is not None \
            else nullcontext()
        with ctx:
            yield self.net
