"""Frozen T5-family text encoder (transformers) for the DiT's text cross-attention.

Production: the umT5-XXL encoder shipped with Wan 2.1 (``text_encoder``/``tokenizer`` subfolders
of the Wan diffusers repo), or any T5/umT5 checkpoint directory. Loading is local-only; a missing
model raises an error that names ``mocha models fetch``.

``build_tiny_text_encoder`` writes a random 2-layer T5 encoder and a byte-level tokenizer built
in-process (no vocabulary download) for tests and the smoke demo; it is labelled as such.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import nn

from common.weights import resolve_model

from .vae import missing_model_error

# Registry name of the production encoder (see common/weights.py and `mocha models fetch`).
DEFAULT_TEXT_ENCODER = "umt5-xxl"

TINY_LABEL = "tiny-random-t5 (untrained, byte tokenizer, smoke tests only)"


def build_tiny_tokenizer(path: str | Path):
    """A byte-level tokenizer (256 byte symbols + pad/eos/unk) saved as a fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "</s>", "<unk>"]
    byte_syms = list(pre_tokenizers.ByteLevel.alphabet())
    vocab = {s: i for i, s in enumerate(specials + sorted(byte_syms))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    fast.save_pretrained(str(path))
    return fast


def build_tiny_text_encoder(path: str | Path, d_model: int = 32, seed: int = 0) -> str:
    """Save tokenizer + random T5 encoder into ``path`` (one directory) and return it."""
    from transformers import T5Config, T5EncoderModel

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tok = build_tiny_tokenizer(path)
    torch.manual_seed(seed)
    cfg = T5Config(vocab_size=len(tok), d_model=d_model, d_kv=8, d_ff=2 * d_model, num_layers=2,
                   num_heads=4, relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1,
                   decoder_start_token_id=0)
    T5EncoderModel(cfg).save_pretrained(str(path))
    return str(path)


@dataclass
class TextEncoderConfig:
    name_or_path: str = DEFAULT_TEXT_ENCODER
    # A full Wan diffusers repo keeps model and tokenizer in these subfolders; they are used
    # only when present, so a flat checkpoint dir (google/umt5-xxl, t5-base) loads as well
    subfolder: Optional[str] = "text_encoder"
    tokenizer_subfolder: Optional[str] = "tokenizer"
    max_length: int = 512  # structured MoCha prompts are long; Wan uses 512 tokens
    dtype: str = "float32"


class TextEncoder(nn.Module):
    def __init__(self, tokenizer, model: nn.Module, max_length: int, label: str):
        super().__init__()
        self.tokenizer = tokenizer
        self.model = model.eval().requires_grad_(False)
        self.max_length = max_length
        self.label = label
        self.dim = int(model.config.d_model)

    def train(self, mode: bool = True):
        return super().train(False)

    @torch.no_grad()
    def encode(self, prompts: Sequence[str], device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(hidden [B,L,D] float32 with padding zeroed, mask [B,L] bool)."""
        if isinstance(prompts, str):
            prompts = [prompts]
        enc = self.tokenizer(list(prompts), padding="longest", truncation=True,
                             max_length=self.max_length, return_tensors="pt")
        dev = device or next(self.model.parameters()).device
        ids, mask = enc["input_ids"].to(dev), enc["attention_mask"].to(dev)
        hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state.float()
        hidden = hidden * mask[..., None].to(hidden.dtype)
        return hidden, mask.bool()


def _sub(path: str, sub: Optional[str]) -> dict:
    if sub and (not os.path.isdir(path) or os.path.isdir(os.path.join(path, sub))):
        return {"subfolder": sub}
    return {}


def load_text_encoder(cfg: TextEncoderConfig | dict | str) -> TextEncoder:
    if isinstance(cfg, str):
        cfg = TextEncoderConfig(name_or_path=cfg)
    elif isinstance(cfg, dict):
        cfg = TextEncoderConfig(**cfg)
    from transformers import AutoConfig, AutoTokenizer, T5EncoderModel, UMT5EncoderModel

    path = resolve_model(cfg.name_or_path)
    try:
        mcfg = AutoConfig.from_pretrained(path, local_files_only=True, **_sub(path, cfg.subfolder))
        cls = UMT5EncoderModel if mcfg.model_type == "umt5" else T5EncoderModel
        model = cls.from_pretrained(path, local_files_only=True, torch_dtype=getattr(torch, cfg.dtype),
                                    **_sub(path, cfg.subfolder))
        tok = AutoTokenizer.from_pretrained(path, local_files_only=True, **_sub(path, cfg.tokenizer_subfolder))
    except (OSError, ValueError) as e:
        raise missing_model_error(cfg.name_or_path, e) from None
    label = f"{cls.__name__}:{cfg.name_or_path}"
    if int(mcfg.d_model) <= 64:
        label = TINY_LABEL
    return TextEncoder(tok, model, cfg.max_length, label)
