"""Model-weights registry: what each model is, where it comes from, its licence and checksums;
fetching that trusts nothing it has not verified, and loading that runs no pickled code.

Nothing here downloads at import or run time. ``mocha models fetch NAME`` (for users with network)
fills the cache dir; every stage resolves its model through :func:`resolve_model`, which raises
one clear :class:`ModelMissing` naming that command when the weights are absent.

Trust: every entry is pinned, a hub entry to a full commit hash, a URL entry to an https URL and
the full sha256 of each file. ``fetch`` downloads into a temporary folder beside the cache, checks
every file against its pin (a hub file against the sha256 / git blob id that the pinned commit
records) and only then renames the folder into place, so a half-done or tampered download is
never usable. Weights load through :func:`load_state_dict`: safetensors, or ``torch.load`` with
``weights_only=True`` and an explicit allow-list where a published checkpoint needs one.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional
from urllib.parse import urlsplit

LOCK_FILE = ".mocha-model.json"
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ModelMissing(RuntimeError):
    """The weights of a configured model are not available locally."""


class UnpinnedModel(ValueError):
    """A registry entry lacks the pins that make its download verifiable."""


class ChecksumMismatch(ValueError):
    """A downloaded or cached file is not the one its pin names."""


class UnsafeWeights(ValueError):
    """A weights file holds pickled objects beyond tensors and plain containers."""


@dataclass(frozen=True)
class ModelEntry:
    name: str
    kind: str  # "hf": a Hugging Face repo snapshot; "url": single files; "package": ships in a wheel
    source: str  # repo id, or base description for url/package
    licence: str
    used_by: str
    files: dict = field(default_factory=dict)  # url kind: filename -> https URL
    # filename -> full sha256: every file of a url entry; optional extra pins of hub files
    sha256: dict = field(default_factory=dict)
    size: dict = field(default_factory=dict)  # filename -> bytes where known: a bigger download stops early
    revision: Optional[str] = None  # hf kind: the full commit hash that is fetched
    subfolder: Optional[str] = None
    allow_patterns: tuple = ()
    note: str = ""


REGISTRY: dict[str, ModelEntry] = {e.name: e for e in [
    ModelEntry("wav2vec2-base-960h", "hf", "facebook/wav2vec2-base-960h", "Apache-2.0",
               "audio_embed (pipeline) and the loader's fallback features",
               revision="22aad52d435eb6dbaf354bdad9b0da84ce7d6156",
               allow_patterns=("*.json", "*.safetensors", "*.txt")),
    # demucs names a checkpoint <signature>-<first 8 hex digits of its sha256>.th
    ModelEntry("htdemucs", "url", "facebook/demucs hybrid transformer v4", "MIT",
               "music (vocals stem)",
               files={"955717e8-8726e21a.th": "https://dl.fbaipublicfiles.com/demucs/hybrid_transformer/955717e8-8726e21a.th"},
               sha256={"955717e8-8726e21a.th": "8726e21a993978c7ba086d3872e7608d7d5bfca646ca4aca459ffda844faa8b4"},
               size={"955717e8-8726e21a.th": 84141911}),
    ModelEntry("silero-vad", "package", "silero-vad wheel (src/silero_vad/data)", "MIT", "speech",
               note="ships inside the silero-vad package; nothing to fetch"),
    ModelEntry("yunet-2023mar", "url", "opencv_zoo face_detection_yunet", "MIT / Apache-2.0", "faces (OpenCV backend)",
               files={"face_detection_yunet_2023mar.onnx":
                      "https://github.com/opencv/opencv_zoo/raw/966be4cb6eefc2a4f586ed0581bf4bbaa2533070/"
                      "models/face_detection_yunet/face_detection_yunet_2023mar.onnx"},
               sha256={"face_detection_yunet_2023mar.onnx": "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4"},
               size={"face_detection_yunet_2023mar.onnx": 232589}),
    ModelEntry("scrfd-500m", "url", "insightface SCRFD-500M-KPS (buffalo_sc det_500m.onnx)",
               "non-commercial research only (insightface model licence)", "faces (production backend)",
               files={"buffalo_sc.zip": "https://github.com/deepinsight/insightface/releases/download/v0.7/buffalo_sc.zip"},
               sha256={"buffalo_sc.zip": "57d31b56b6ffa911c8a73cfc1707c73cab76efe7f13b675a05223bf42de47c72"},
               note="research-only weights: check the licence before any commercial use"),
    ModelEntry("syncnet-v2", "url", "joonson/syncnet_python syncnet_v2.model", "see the authors' page (research use)",
               "lip-sync (SyncNet backend)",
               files={"syncnet_v2.model": "https://www.robots.ox.ac.uk/~vgg/software/lipsync/data/syncnet_v2.model"},
               sha256={"syncnet_v2.model": "961e8696f888fce4f3f3a6c3d5b3267cf5b343100b238e79b2659bff2c605442"},
               size={"syncnet_v2.model": 54573114}),
    ModelEntry("qwen2-vl-2b-instruct", "hf", "Qwen/Qwen2-VL-2B-Instruct", "Apache-2.0",
               "character filter and captions (transformers backend)",
               revision="895c3a49bc3fa70a340399125c650a463535e71c",
               allow_patterns=("*.json", "*.safetensors", "*.txt", "*.model")),
    ModelEntry("wan2.1-vae", "hf", "Wan-AI/Wan2.1-T2V-1.3B-Diffusers", "Apache-2.0", "VAE (latents, trainer, generate)",
               revision="0fad780a534b6463e45facd96134c9f345acfa5b",
               subfolder="vae", allow_patterns=("vae/*",)),
    ModelEntry("wan2.1-t2v-1.3b", "hf", "Wan-AI/Wan2.1-T2V-1.3B-Diffusers", "Apache-2.0",
               "trainer base (MoCha = this transformer + speech cross-attention), generate",
               revision="0fad780a534b6463e45facd96134c9f345acfa5b", subfolder="transformer",
               allow_patterns=("transformer/*",),
               sha256={"transformer/config.json": "0b093fa072e9ff28763febe9b964ee582f566733a6d6709deb9dfba1bde16b81",
                       "transformer/diffusion_pytorch_model-00001-of-00002.safetensors":
                       "6d011927dbd2cc8afe53d57abab04a8fd86f615d83324770d985fb058ece3a24",
                       "transformer/diffusion_pytorch_model-00002-of-00002.safetensors":
                       "b92ec2309b1f239af6f746431815a881afcc938abb26a4f08d9a2fd6c892f872",
                       "transformer/diffusion_pytorch_model.safetensors.index.json":
                       "dcbcf3497134a3f50557ff069dd7d2c84b5c4d8c5932472f6bdb780fb4016589"}),
    ModelEntry("umt5-xxl", "hf", "google/umt5-xxl", "Apache-2.0", "text encoder (trainer, generate)",
               revision="66cb9e7e85526fe440a945569e42c72fb6cbc0ad",
               allow_patterns=("*.json", "*.safetensors", "*.model", "*.txt")),
    ModelEntry("t5-base", "hf", "google-t5/t5-base", "Apache-2.0", "text encoder (small configs)",
               revision="a9723ea7f1b39c1eae772870f3b547bf6ef7e6c1",
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
        # a hub id already in the user's Hugging Face cache (never downloads here); a registry
        # model only at its pinned commit
        try:
            from huggingface_hub import snapshot_download

            revision = entry.revision if entry is not None and entry.kind == "hf" else None
            return snapshot_download(name_or_path, revision=revision, local_files_only=True)
        except Exception:
            pass
    fix = f"run `mocha models fetch {entry.name}`" if entry else \
        "pass a local path, or add it to the registry and run `mocha models fetch NAME`"
    raise ModelMissing(f"model {name_or_path!r} is not available locally ({models_dir(root)}); {fix}")


def model_file(name_or_path: str, pattern: str, root: Optional[str] = None) -> str:
    """One file of a model: the path itself if it is a file, else the first file matching
    ``pattern`` inside its directory (zip archives there are unpacked once, beside them)."""
    p = Path(resolve_model(name_or_path, root))
    if p.is_file():
        return str(p)
    hits = sorted(p.rglob(pattern))
    if not hits:
        for z in sorted(p.glob("*.zip")):
            dest = p / z.stem
            if not dest.exists():
                _unpack(z, dest)
            hits = sorted(dest.rglob(pattern))
            if hits:
                break
    if not hits:
        raise ModelMissing(f"model {name_or_path!r} ({p}) holds no file matching {pattern!r}")
    return str(hits[0])


def _unpack(archive: Path, dest: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(dest)  # zipfile drops absolute paths and ".." parts of member names


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def git_blob_sha1(path: Path) -> str:
    """The id git gives the file's content (how a hub commit pins its small, non-LFS files)."""
    h = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# -- pins -------------------------------------------------------------------------------------
def pin_problems(entry: ModelEntry) -> list[str]:
    """What keeps ``entry``'s download from being verifiable (empty: fully pinned)."""
    problems = []
    bad_digests = [f for f, d in entry.sha256.items() if not _SHA256.match(str(d))]
    if bad_digests:
        problems.append(f"sha256 of {', '.join(bad_digests)} is not a full 64-hex digest")
    if entry.kind == "package":
        return problems
    if entry.kind == "hf":
        if not entry.revision or not _COMMIT.match(entry.revision):
            problems.append(f"hub revision {entry.revision!r} is not a full commit hash (40 hex digits)")
    elif entry.kind == "url":
        if not entry.files:
            problems.append("no files listed")
        for fname, url in entry.files.items():
            parts = urlsplit(url)
            if parts.scheme != "https" or not parts.hostname:
                problems.append(f"{fname}: {url!r} is not an https URL")
            if fname not in entry.sha256:
                problems.append(f"{fname}: no sha256 pinned")
    else:
        problems.append(f"unknown kind {entry.kind!r}")
    return problems


# -- fetch ------------------------------------------------------------------------------------
def _https_only(request) -> None:
    # the sha256 pins make a plain-http copy harmless to integrity, but not to privacy; and a
    # redirect that drops TLS is a sign of a hijacked mirror
    if request.url.scheme != "https":
        raise UnpinnedModel(f"refusing a non-https request to {request.url} (redirected?)")


def _download(url: str, dest: Path, want_sha256: str, want_size: Optional[int] = None) -> str:
    """Stream ``url`` into ``dest`` hashing as it goes; a file that is not the pinned one is
    deleted and raises :class:`ChecksumMismatch`."""
    import httpx

    h, n = hashlib.sha256(), 0
    try:
        with httpx.Client(follow_redirects=True, timeout=httpx.Timeout(60.0, connect=15.0),
                          event_hooks={"request": [_https_only]}) as client:
            with client.stream("GET", url) as r:
                r.raise_for_status()
                with open(dest, "wb") as f:
                    for chunk in r.iter_bytes(1 << 20):
                        n += len(chunk)
                        if want_size is not None and n > want_size:
                            raise ChecksumMismatch(f"{dest.name}: the download from {url} is larger than the "
                                                   f"pinned {want_size} bytes; discarded")
                        h.update(chunk)
                        f.write(chunk)
        got = h.hexdigest()
        if got != want_sha256:
            raise ChecksumMismatch(f"{dest.name}: sha256 {got} of the download from {url} does not match "
                                   f"the pinned {want_sha256}; discarded")
        return got
    except BaseException:
        dest.unlink(missing_ok=True)
        raise


def _hub_snapshot(entry: ModelEntry, dest: Path) -> None:
    from huggingface_hub import snapshot_download

    snapshot_download(entry.source, revision=entry.revision, local_dir=str(dest),
                      allow_patterns=list(entry.allow_patterns) or None)


def _hub_digests(entry: ModelEntry) -> dict[str, tuple[str, str]]:
    """What the pinned commit records for each file: ("sha256", hex) for LFS files, ("git-sha1",
    blob id) for the rest. The commit hash covers these records, so they are as pinned as it is."""
    from huggingface_hub import HfApi

    info = HfApi().model_info(entry.source, revision=entry.revision, files_metadata=True)
    if info.sha and info.sha != entry.revision:
        raise ChecksumMismatch(f"{entry.name}: the hub answered for commit {info.sha}, not the pinned {entry.revision}")
    out = {}
    for s in info.siblings or []:
        if s.lfs is not None:
            out[s.rfilename] = ("sha256", s.lfs.sha256)
        elif s.blob_id:
            out[s.rfilename] = ("git-sha1", s.blob_id)
    return out


def _files(root: Path) -> list[str]:
    return sorted(str(f.relative_to(root)) for f in root.rglob("*")
                  if f.is_file() and f.name != LOCK_FILE and ".cache" not in f.relative_to(root).parts)


def _check_hub_files(entry: ModelEntry, tmp: Path, expected: dict[str, tuple[str, str]]) -> None:
    got = _files(tmp)
    if not got:
        raise ChecksumMismatch(f"{entry.name}: the hub snapshot at {entry.revision} holds no file matching "
                               f"{list(entry.allow_patterns)}")
    for rel in got:
        if rel not in expected:
            raise ChecksumMismatch(f"{entry.name}/{rel}: not a file of commit {entry.revision}; discarded")
        algo, want = expected[rel]
        have = sha256_file(tmp / rel) if algo == "sha256" else git_blob_sha1(tmp / rel)
        if have != want:
            raise ChecksumMismatch(f"{entry.name}/{rel}: {algo} {have} does not match {want} recorded by commit "
                                   f"{entry.revision}; discarded")


def fetch(name: str, root: Optional[str] = None) -> Path:
    """Download a model into the cache, verified file by file before it becomes usable (needs
    network). Raises :class:`UnpinnedModel` for an entry that cannot be verified and
    :class:`ChecksumMismatch` for a file that is not the pinned one; the cache is left as it was."""
    entry = REGISTRY.get(name)
    if entry is None:
        raise KeyError(f"unknown model {name!r}; `mocha models list` shows the registry")
    dest = models_dir(root) / entry.name
    if entry.kind == "package":
        return dest
    problems = pin_problems(entry)
    if problems:
        raise UnpinnedModel(f"{name} is not pinned ({'; '.join(problems)}): refusing to download weights that "
                            "cannot be verified; pin it in common/weights.py")
    dest.parent.mkdir(parents=True, exist_ok=True)
    # beside the cache (same filesystem: the final rename is atomic), under a name resolve_model never reads
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", suffix=".partial", dir=dest.parent))
    try:
        if entry.kind == "hf":
            expected = _hub_digests(entry)
            _hub_snapshot(entry, tmp)
            shutil.rmtree(tmp / ".cache", ignore_errors=True)  # huggingface_hub's download bookkeeping
            _check_hub_files(entry, tmp, expected)
        else:
            for fname, url in entry.files.items():
                _download(url, tmp / fname, entry.sha256[fname], entry.size.get(fname))
            for fname in entry.files:
                if fname.endswith(".zip"):  # verified above: unpack now, so the lock covers the members
                    _unpack(tmp / fname, tmp / Path(fname).stem)
        for fname, want in entry.sha256.items():  # extra pins of hub files
            if entry.kind == "hf" and (tmp / fname).is_file() and sha256_file(tmp / fname) != want:
                raise ChecksumMismatch(f"{entry.name}/{fname}: sha256 does not match the registry's {want}; discarded")
        files = {rel: sha256_file(tmp / rel) for rel in _files(tmp)}
        lock = {"name": entry.name, "kind": entry.kind, "source": entry.source, "licence": entry.licence,
                "revision": entry.revision, "urls": entry.files, "fetched_at": time.time(), "files": files}
        (tmp / LOCK_FILE).write_text(json.dumps(lock, indent=1))
        old = None
        if dest.exists():
            old = dest.with_name(f".{dest.name}.{os.getpid()}.old")
            dest.rename(old)
        tmp.rename(dest)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return dest
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def verify(name: str, root: Optional[str] = None) -> list[str]:
    """Problems found with a fetched model (empty list: every file is the one fetched and pinned)."""
    entry = REGISTRY.get(name)
    if entry is None:
        return [f"unknown model {name!r}"]
    if entry.kind == "package":
        return []
    dest = models_dir(root) / entry.name
    lock_path = dest / LOCK_FILE
    if not lock_path.is_file():
        return [f"{name}: not fetched (run `mocha models fetch {name}`)"]
    try:
        lock = json.loads(lock_path.read_text())
        recorded = dict(lock["files"])
    except (ValueError, KeyError, TypeError) as e:
        return [f"{name}: unreadable {LOCK_FILE} ({e}); run `mocha models fetch {name}`"]
    problems = []
    if entry.kind == "hf" and lock.get("revision") not in (None, entry.revision):
        problems.append(f"{name}: fetched at revision {lock['revision']}, the registry pins {entry.revision} "
                        f"(run `mocha models fetch {name}`)")
    for rel, digest in recorded.items():
        f = dest / rel
        if not f.is_file():
            problems.append(f"{name}/{rel}: missing")
            continue
        got = sha256_file(f)
        if got != digest:
            problems.append(f"{name}/{rel}: sha256 {got} != recorded {digest}")
        want = entry.sha256.get(rel)
        if want and got != want:
            problems.append(f"{name}/{rel}: sha256 {got} does not match the registry ({want})")
    for rel in entry.sha256:
        if rel not in recorded and (entry.kind == "url" or (dest / rel).exists()):
            problems.append(f"{name}/{rel}: pinned file not in the cache")
    for rel in _files(dest):
        if rel not in recorded:
            problems.append(f"{name}/{rel}: not part of the fetch (added to the cache afterwards)")
    return problems


# -- loading ----------------------------------------------------------------------------------
_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
_OPERAND = re.compile(r"Unsupported operand \w+")


def load_state_dict(path, map_location="cpu", allow: Iterable = ()):
    """Tensors of a weights file without running pickled code: a ``.safetensors`` file, or a
    torch checkpoint (zip or the pre-1.6 format) through ``torch.load(weights_only=True)``.
    ``allow`` names the classes a published checkpoint needs beyond tensors and plain
    containers (torch's allow-list, for this call only). Raises :class:`UnsafeWeights` for a
    file holding anything else, naming what it holds, and ``ValueError`` for a file that is not
    a checkpoint at all."""
    import pickle

    import torch

    p = Path(path)
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(p), device=str(map_location))
    try:
        with torch.serialization.safe_globals(list(allow)):
            return torch.load(str(p), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        if "Weights only load failed" not in msg:
            raise ValueError(f"{p}: not a torch checkpoint ({msg.splitlines()[0][:200]})") from None
        m = _GLOBAL.search(msg)
        if m is None:  # no Python object named: bytes that are not a pickle torch can read at all
            op = _OPERAND.search(msg)
            raise ValueError(f"{p}: not a torch checkpoint ({op.group(0) if op else 'unreadable pickle'})") from None
        raise UnsafeWeights(f"{p}: refused to load: it holds pickled objects beyond tensors (it names "
                            f"{m.group(1)}); only weights load here (safetensors, or a state dict of tensors)") from None
