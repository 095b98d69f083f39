"""Model-weights registry: what each model is, where it comes from, its licence and checksums.

Nothing here downloads at import or run time. ``mocha models fetch NAME`` (for users with network)
fills the cache dir; every stage resolves its model through :func:`resolve_model`, which raises
one clear :class:`ModelMissing` naming that command when the weights are absent.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

LOCK_FILE = ".mocha-model.json"


class ModelMissing(RuntimeError):
    """The weights of a configured model are not available locally."""


@dataclass(frozen=True)
class ModelEntry:
    name: str
    kind: str  # "hf": a Hugging Face repo snapshot; "url": single files; "package": ships in a wheel
    source: str  # repo id, or base description for url/package
    licence: str
    used_by: str
    files: dict = field(default_factory=dict)  # url kind: filename -> url
    sha256: dict = field(default_factory=dict)  # filename -> full hex digest (or hex prefix)
    revision: Optional[str] = None
    subfolder: Optional[str] = None
    allow_patterns: tuple = ()
    note: str = ""


REGISTRY: dict[str, ModelEntry] = {e.name: e for e in [
    ModelEntry("wav2vec2-base-960h", "hf", "facebook/wav2vec2-base-960h", "Apache-2.0",
               "audio_embed (pipeline) and the loader's fallback features",
               allow_patterns=("*.json", "*.safetensors", "*.txt")),
    ModelEntry("htdemucs", "url", "facebook/demucs hybrid transformer v4", "MIT",
               "music (vocals stem)",
               files={"955717e8-8726e21a.th": "https://dl.fbaipublicfiles.com/demucs/hybrid_transformer/955717e8-8726e21a.th"},
               # demucs names its checkpoints by the first 8 hex digits of their sha256
               sha256={"955717e8-8726e21a.th": "955717e8"}),
    ModelEntry("silero-vad", "package", "silero-vad wheel (src/silero_vad/data)", "MIT", "speech",
               note="ships inside the silero-vad package; nothing to fetch"),
    ModelEntry("yunet-2023mar", "url", "opencv_zoo face_detection_yunet", "MIT / Apache-2.0", "faces (OpenCV backend)",
               files={"face_detection_yunet_2023mar.onnx":
                      "https://github.com/opencv/opencv_zoo/raw/main/models/face_detection_yunet/face_detection_yunet_2023mar.onnx"},
               sha256={"face_detection_yunet_2023mar.onnx": "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4"}),
    ModelEntry("scrfd-500m", "url", "insightface SCRFD-500M-KPS (buffalo_sc det_500m.onnx)",
               "non-commercial research only (insightface model licence)", "faces (production backend)",
               files={"buffalo_sc.zip": "https://github.com/deepinsight/insightface/releases/download/v0.7/buffalo_sc.zip"},
               note="research-only weights: check the licence before any commercial use"),
    ModelEntry("syncnet-v2", "url", "joonson/syncnet_python syncnet_v2.model", "see the authors' page (research use)",
               "lip-sync (SyncNet backend)",
               files={"syncnet_v2.model": "http://www.robots.ox.ac.uk/~vgg/software/lipsync/data/syncnet_v2.model"}),
    ModelEntry("qwen2-vl-2b-instruct", "hf", "Qwen/Qwen2-VL-2B-Instruct", "Apache-2.0",
               "character filter and captions (transformers backend)",
               allow_patterns=("*.json", "*.safetensors", "*.txt", "*.model")),
    ModelEntry("wan2.1-vae", "hf", "Wan-AI/Wan2.1-T2V-1.3B-Diffusers", "Apache-2.0", "VAE (latents, trainer, generate)",
               subfolder="vae", allow_patterns=("vae/*",)),
    ModelEntry("umt5-xxl", "hf", "google/umt5-xxl", "Apache-2.0", "text encoder (trainer, generate)",
               allow_patterns=("*.json", "*.safetensors", "*.model", "*.txt")),
    ModelEntry("t5-base", "hf", "google-t5/t5-base", "Apache-2.0", "text encoder (small configs)",
               allow_patterns=("*.json", "*.safetensors", "*.model", "*.txt")),
    ModelEntry("lr-asd", "url", "Junhua-Liao/LR-ASD weight/ (IJCV 2025)", "MIT", "speakers (active-speaker scores)",
               files={f: f"https://github.com/Junhua-Liao/LR-ASD/raw/1b6dcd2d8fc2895683de6508ec6294ec47d388ca/weight/{f}"
                      for f in ("pretrain_AVA.model", "finetuning_TalkSet.model")},
               sha256={"pretrain_AVA.model": "85e6c77fc981595234790d1e128ebb60352d37726b2445e0ef8891e2512fe9e3",
                       "finetuning_TalkSet.model": "6b4ef53694e874e96cf630198dc479c78aebb3993bbf166aee3d926dfe7d9342"},
               revision="1b6dcd2d8fc2895683de6508ec6294ec47d388ca"),
]}


def models_dir(override: Optional[str] = None) -> Path:
    if override:
        return Path(override).expanduser()
    env = os.environ.get("MOCHA_MODELS_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "mocha" / "models"


def _entry_for(name: str) -> Optional[ModelEntry]:
    if name in REGISTRY:
        return REGISTRY[name]
    for e in REGISTRY.values():
        if e.kind == "hf" and e.source == name:
            return e
    return None


def is_fetched(entry: ModelEntry, root: Optional[str] = None) -> bool:
    return (models_dir(root) / entry.name / LOCK_FILE).is_file()


def resolve_model(name_or_path: str, root: Optional[str] = None) -> str:
    """Local directory/file for a model given as a path, a registry name or a hub id."""
    p = Path(name_or_path).expanduser()
    if p.exists():
        return str(p)
    entry = _entry_for(name_or_path)
    if entry is not None and is_fetched(entry, root):
        d = models_dir(root) / entry.name
        return str(d / entry.subfolder) if entry.subfolder else str(d)
    if "/" in name_or_path and not name_or_path.startswith((".", "/")):
        # a hub id already in the user's Hugging Face cache (never downloads here)
        try:
            from huggingface_hub import snapshot_download

            return snapshot_download(name_or_path, local_files_only=True)
        except Exception:
            pass
    fix = f"run `mocha models fetch {entry.name}`" if entry else \
        "pass a local path, or add it to the registry and run `mocha models fetch NAME`"
    raise ModelMissing(f"model {name_or_path!r} is not available locally ({models_dir(root)}); {fix}")


def model_file(name_or_path: str, pattern: str, root: Optional[str] = None) -> str:
    """One file of a model: the path itself if it is a file, else the first file matching
    ``pattern`` inside its directory (zip archives there are unpacked once, beside them)."""
    import zipfile

    p = Path(resolve_model(name_or_path, root))
    if p.is_file():
        return str(p)
    hits = sorted(p.rglob(pattern))
    if not hits:
        for z in sorted(p.glob("*.zip")):
            dest = p / z.stem
            if not dest.exists():
                with zipfile.ZipFile(z) as zf:
                    zf.extractall(dest)
            hits = sorted(dest.rglob(pattern))
            if hits:
                break
    if not hits:
        raise ModelMissing(f"model {name_or_path!r} ({p}) holds no file matching {pattern!r}")
    return str(hits[0])


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check_pinned(entry: ModelEntry, fname: str, digest: str) -> None:
    want = entry.sha256.get(fname)
    if want and not digest.startswith(want):
        raise ValueError(f"{entry.name}/{fname}: sha256 {digest} does not match the registry ({want})")


def fetch(name: str, root: Optional[str] = None) -> Path:
    """Download a model into the cache and record the sha256 of every file (needs network)."""
    entry = REGISTRY.get(name)
    if entry is None:
        raise KeyError(f"unknown model {name!r}; `mocha models list` shows the registry")
    dest = models_dir(root) / entry.name
    if entry.kind == "package":
        return dest
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if entry.kind == "hf":
        from huggingface_hub import snapshot_download

        snapshot_download(entry.source, revision=entry.revision, local_dir=str(tmp),
                          allow_patterns=list(entry.allow_patterns) or None)
    else:
        for fname, url in entry.files.items():
            with urllib.request.urlopen(url, timeout=60) as r, open(tmp / fname, "wb") as f:
                shutil.copyfileobj(r, f)
    files = {}
    for f in sorted(tmp.rglob("*")):
        if f.is_file():
            rel = str(f.relative_to(tmp))
            files[rel] = sha256_file(f)
            _check_pinned(entry, rel, files[rel])
    (tmp / LOCK_FILE).write_text(json.dumps({"name": entry.name, "source": entry.source, "licence": entry.licence,
                                             "fetched_at": time.time(), "files": files}, indent=1))
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


def verify(name: str, root: Optional[str] = None) -> list[str]:
    """Problems found with a fetched model (empty list: all files match their recorded sha256)."""
    entry = REGISTRY.get(name)
    if entry is None:
        return [f"unknown model {name!r}"]
    if entry.kind == "package":
        return []
    dest = models_dir(root) / entry.name
    lock = dest / LOCK_FILE
    if not lock.is_file():
        return [f"{name}: not fetched (run `mocha models fetch {name}`)"]
    problems = []
    for rel, digest in json.loads(lock.read_text())["files"].items():
        f = dest / rel
        if not f.is_file():
            problems.append(f"{name}/{rel}: missing")
            continue
        got = sha256_file(f)
        if got != digest:
            problems.append(f"{name}/{rel}: sha256 {got} != recorded {digest}")
        try:
            _check_pinned(entry, rel, got)
        except ValueError as e:
            problems.append(str(e))
    return problems
