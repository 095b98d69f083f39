"""The pretrained base: diffusers' ``WanTransformer3DModel`` (Wan 2.1 T2V, 1.3 B or 14 B).

Loaded with ``from_pretrained`` from a local diffusers folder, a registry name or a hub id
already in the Hugging Face cache (``local_files_only``: nothing is downloaded here). A folder
holding a whole Wan pipeline is read from its ``transformer/`` subfolder.

A checkpoint of ours does not carry the base's weights, only its identity: where it came from,
the hub revision when known, and a sha256 over the base's files (config and weights), so a
reload that resolves a different base fails instead of silently mixing weights. File digests
come from the lock file ``mocha models fetch`` writes, or from the Hugging Face cache (a blob is
named by its sha256), and are computed only when neither knows them.

``build_tiny_wan`` writes a random, untrained transformer for tests and smoke runs; it loads
through the same ``from_pretrained`` path and is labelled as such.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path
from typing import Optional

import torch

from common.weights import LOCK_FILE, REGISTRY, ModelMissing, resolve_model, sha256_file

log = logging.getLogger(__name__)

# Registry name of the default base (common/weights.py; `mocha models fetch wan2.1-t2v-1.3b`).
DEFAULT_BASE = "wan2.1-t2v-1.3b"
TINY_LABEL = "tiny-random-wan-transformer (untrained, smoke tests only)"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_SNAPSHOT = re.compile(r"/snapshots/([0-9a-f]{40})(/|$)")


def tiny_wan_config(in_channels: int = 4, text_dim: int = 32, num_layers: int = 2) -> dict:
    """A Wan transformer small enough for CPU tests: 2 blocks of width 64 (4 heads of 16; the
    3D RoPE needs head_dim >= 6), Wan 2.1's block layout, patch (1, 2, 2)."""
    return dict(patch_size=(1, 2, 2), num_attention_heads=4, attention_head_dim=16, in_channels=in_channels,
                out_channels=in_channels, text_dim=text_dim, freq_dim=64, ffn_dim=128, num_layers=num_layers,
                cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=256)


def build_tiny_wan(path: str | Path, in_channels: int = 4, text_dim: int = 32, seed: int = 0,
                   num_layers: int = 2) -> str:
    """Save a tiny random ``WanTransformer3DModel`` in diffusers format to ``path``."""
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    WanTransformer3DModel(**tiny_wan_config(in_channels, text_dim, num_layers)).save_pretrained(str(path))
    return str(path)


def is_tiny(config) -> bool:
    return int(config["num_attention_heads"]) * int(config["attention_head_dim"]) <= 128


def _registry_revision(name: str) -> Optional[str]:
    for e in REGISTRY.values():
        if name in (e.name, e.source):
            return e.revision
    return None


def resolve_base(name_or_path: str, models_dir: Optional[str] = None) -> tuple[str, Optional[str]]:
    """(folder holding the transformer's config.json, hub revision when known)."""
    path = Path(resolve_model(name_or_path, models_dir))
    if not (path / "config.json").is_file() and (path / "transformer" / "config.json").is_file():
        path = path / "transformer"
    if not (path / "config.json").is_file():
        raise ModelMissing(f"base {name_or_path!r} ({path}) holds no diffusers transformer (config.json); "
                           "give a diffusers-format WanTransformer3DModel folder or a registry name")
    m = _SNAPSHOT.search(str(path.resolve()) + "/") or _SNAPSHOT.search(str(path) + "/")
    revision = m.group(1) if m else _registry_revision(name_or_path)
    return str(path), revision


def _lock_digests(path: Path) -> dict[str, str]:
    """sha256 of the base's files recorded by `mocha models fetch`, keyed by name in ``path``."""
    for root in (path, path.parent):
        lock = root / LOCK_FILE
        if lock.is_file():
            rel = path.relative_to(root)
            files = json.loads(lock.read_text()).get("files", {})
            out = {}
            for k, v in files.items():
                p = Path(k)
                if p.parent == rel:
                    out[p.name] = v
            return out
    return {}


def _file_digest(f: Path, known: dict[str, str]) -> str:
    if f.name in known:
        return known[f.name]
    if f.is_symlink():
        blob = os.path.basename(os.readlink(f))
        if _HEX64.match(blob):  # Hugging Face cache: LFS blobs are named by their sha256
            return blob
    return sha256_file(f)


def base_identity(source: str, path: str, revision: Optional[str] = None) -> dict:
    """Where the base came from and a sha256 over its config and weight files."""
    p = Path(path)
    files = sorted(f for f in p.iterdir() if f.is_file() and (
        f.name == "config.json" or f.name.endswith((".safetensors", ".safetensors.index.json", ".bin"))))
    known = _lock_digests(p)
    digests = {f.name: _file_digest(f, known) for f in files}
    h = hashlib.sha256("".join(f"{k}:{v}\n" for k, v in sorted(digests.items())).encode()).hexdigest()
    return {"source": source, "path": str(p), "revision": revision, "sha256": h, "files": digests}


def load_base(name_or_path: str = DEFAULT_BASE, dtype: str = "float32", models_dir: Optional[str] = None):
    """(WanTransformer3DModel, identity dict, label) loaded local-only.

    ``dtype`` bfloat16 halves a frozen base's memory; Wan's norms, time embedding and
    modulation tables stay in float32 (diffusers' ``_keep_in_fp32_modules``, which needs
    ``accelerate``).
    """
    from diffusers import WanTransformer3DModel

    path, revision = resolve_base(name_or_path, models_dir)
    try:
        base = WanTransformer3DModel.from_pretrained(path, local_files_only=True, torch_dtype=getattr(torch, dtype))
    except (OSError, ValueError) as e:
        raise ModelMissing(f"base {name_or_path!r} ({path}) did not load as a WanTransformer3DModel: "
                           f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    ident = base_identity(name_or_path, path, revision)
    if is_tiny(base.config):
        label = TINY_LABEL
    else:
        label = f"WanTransformer3DModel:{name_or_path}" + (f"@{revision[:12]}" if revision else "")
    log.info("base %s: %s (sha256 %s)", name_or_path, path, ident["sha256"][:12])
    return base, ident, label
