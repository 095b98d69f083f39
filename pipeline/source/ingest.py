"""Ingest: expand inputs into source videos, hash them, probe them with PyAV.

Inputs may be local files, directories (searched recursively), globs, or any pyarrow filesystem
URI (``s3://bucket/prefix``, ``gs://...``, ``hdfs://...``, ``file:///...``). An input that
expands to nothing, or cannot be read, becomes an error item so that the ledger shows it.
"""
from __future__ import annotations

import fnmatch
import glob
import hashlib
import os
from typing import Optional

import pyarrow.fs as pafs
from pydantic import Field

from common.fs import filesystem, is_uri, redact
from pipeline.source.dedup import NearDuplicateConfig
from pipeline.source.sandbox import SandboxConfig
from schemas.base import Strict


class IngestConfig(Strict):
    video_extensions: list[str] = [".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".mpg", ".mpeg", ".ts"]
    # Inputs larger than this are refused with a ledger reason instead of tying up a worker.
    max_bytes: int = Field(20 * 1024**3, ge=1)
    max_duration_s: float = Field(4 * 3600.0, gt=0)
    # Frames larger than 8K UHD are refused before any decode: no footage of a talking person
    # needs more, and a header declaring giant frames (a corrupt or hostile file) would make the
    # decoder allocate gigabytes per thread.
    max_pixels: int = Field(7680 * 4320, ge=1)
    # Sources averaging fewer frames per second are refused: below 5 fps a face cannot show lip
    # motion (a slideshow, a still with audio, or a corrupt time base stretching a few frames
    # over hours, which would otherwise be cut into hundreds of identical clips).
    min_fps: float = Field(5.0, ge=0)
    # Time limits (and an optional memory cap) of the per-source child processes.
    sandbox: SandboxConfig = SandboxConfig()
    # Copies of one video under other names: exact copies (same sha256) are always curated
    # once; near copies (re-encoded, rescaled, trimmed) by this rule.
    near_duplicates: NearDuplicateConfig = NearDuplicateConfig()


_GLOB_CHARS = set("*?[")
NOT_REGULAR = "unreadable: not a regular file (a named pipe, a device or a broken link)"


def _has_glob(s: str) -> bool:
    return any(c in s for c in _GLOB_CHARS)


def _ext_ok(path: str, exts: list[str]) -> bool:
    return os.path.splitext(path)[1].lower() in exts


def expand_inputs(inputs: list[str], cfg: IngestConfig) -> list[dict]:
    """One item per candidate file: {"source_uri": ...} or {"source_uri": ..., "error": reason}.

    Explicitly named files are kept whatever their extension (probing decides); files found by
    directory walks and globs must have a video extension."""
    items: list[dict] = []
    seen: set[str] = set()

    def add(uri: str, **extra) -> None:
        if uri not in seen:
            seen.add(uri)
            items.append({"source_uri": uri, **extra})

    for spec in inputs:
        if is_uri(spec):
            _expand_uri(spec, cfg, add)
            continue
        local = spec[len("file://"):] if spec.startswith("file://") else spec
        local = os.path.expanduser(local)
        if _has_glob(local):
            found = sorted(p for p in glob.glob(local, recursive=True) if os.path.isfile(p) and _ext_ok(p, cfg.video_extensions))
            if not found:
                add(spec, error="no_video_files: the pattern matched no video file")
            for p in found:
                add(os.path.abspath(p))
        elif os.path.isdir(local):
            found = []
            for root, _dirs, files in os.walk(local):
                found += [os.path.join(root, f) for f in files if _ext_ok(f, cfg.video_extensions)]
            if not found:
                add(os.path.abspath(local), error="no_video_files: the directory holds no video file")
            for p in sorted(found):
                # a walk lists named pipes and broken links too: a pipe's size reads 0 and its
                # read would wait for a writer that may never come
                add(os.path.abspath(p), **({} if os.path.isfile(p) else {"error": NOT_REGULAR}))
        elif os.path.isfile(local):
            add(os.path.abspath(local))
        elif os.path.lexists(local):
            add(os.path.abspath(local), error=NOT_REGULAR)
        else:
            add(os.path.abspath(local), error="not_found: no such file or directory")
    return items


def _expand_uri(spec: str, cfg: IngestConfig, add) -> None:
    scheme, rest = spec.split("://", 1)
    glob_at = min((rest.index(c) for c in _GLOB_CHARS if c in rest), default=None)
    base = rest if glob_at is None else rest[:glob_at].rsplit("/", 1)[0]
    try:
        fs, path = filesystem(f"{scheme}://{base}")
        info = fs.get_file_info(path)
    except Exception as e:
        add(spec, error=f"unreadable: cannot open filesystem ({redact(str(e))})")
        return
    if glob_at is None and info.type == pafs.FileType.File:
        add(spec)
        return
    if info.type != pafs.FileType.Directory:
        add(spec, error="not_found: no such object")
        return
    # filesystem paths drop the scheme; match the pattern against them the same way
    pattern = path + rest[len(base):] if glob_at is not None else None
    found = []
    for i in fs.get_file_info(pafs.FileSelector(path, recursive=True)):
        if i.type != pafs.FileType.File or not _ext_ok(i.path, cfg.video_extensions):
            continue
        if pattern is None or fnmatch.fnmatch(i.path, pattern):
            found.append(i.path)
    if not found:
        add(spec, error="no_video_files: nothing matched" if pattern else "no_video_files: the prefix holds no video file")
    for p in sorted(found):
        add(f"{scheme}://{p}")


def open_source(uri: str):
    """A path PyAV can open directly (local), or a seekable file object reading the remote
    object by ranges as the demuxer asks (nothing is copied to local disk)."""
    if is_uri(uri):
        fs, path = filesystem(uri)
        return fs.open_input_file(path)
    return uri[len("file://"):] if uri.startswith("file://") else uri


def source_size(uri: str) -> int:
    if is_uri(uri):
        fs, path = filesystem(uri)
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            raise FileNotFoundError(f"no such object: {redact(uri)}")
        return int(info.size or 0)
    return os.path.getsize(open_source(uri))


def sha256_of(uri: str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    f = open_source(uri)
    fh = open(f, "rb") if isinstance(f, str) else f
    try:
        while True:
            b = fh.read(chunk)
            if not b:
                break
            h.update(b)
    finally:
        fh.close()
    return h.hexdigest()


def check_source(item: dict, cfg: IngestConfig) -> dict:
    """Hash and probe one source. Adds source_sha256, probe facts, or error/rejection."""
    from common.media import MediaError, probe

    out = dict(item)
    if out.get("error"):
        return out
    uri = out["source_uri"]
    try:
        size = source_size(uri)
    except OSError as e:
        out["error"] = f"unreadable: {e.strerror or e}"
        return out
    if size == 0:
        out["error"] = "empty_file: 0 bytes"
        return out
    if size > cfg.max_bytes:
        out["rejected"] = f"too_large: {size} bytes > ingest.max_bytes {cfg.max_bytes}"
        return out
    try:
        out["source_sha256"] = sha256_of(uri)
    except OSError as e:
        out["error"] = f"unreadable: {e.strerror or e}"
        return out
    try:
        info = probe(open_source(uri))
    except MediaError as e:
        out["error"] = f"unreadable_media: {e}"
        return out
    if not info.has_video:
        out["rejected"] = "no_video_stream: audio-only or non-video file"
        return out
    if info.width <= 0 or info.height <= 0:
        out["error"] = "unreadable_media: video stream without a frame size"
        return out
    if info.width * info.height > cfg.max_pixels:
        out["rejected"] = f"too_large_frame: {info.width}x{info.height} > ingest.max_pixels {cfg.max_pixels}"
        return out
    if 0 < info.fps < cfg.min_fps:
        out["rejected"] = f"too_low_frame_rate: {info.fps:.3g} fps < ingest.min_fps {cfg.min_fps:g}"
        return out
    if info.duration_s > cfg.max_duration_s:
        out["rejected"] = f"too_long: {info.duration_s:.0f}s > ingest.max_duration_s {cfg.max_duration_s:.0f}s"
        return out
    out.update(size_bytes=size, duration_s=info.duration_s, has_audio=info.has_audio, src_width=info.width,
               src_height=info.height, src_fps=info.fps, video_codec=info.video_codec, audio_codec=info.audio_codec)
    return out


def source_problem(item: dict) -> Optional[tuple[str, str]]:
    """(status, reason) when the source cannot yield clips, else None."""
    if item.get("error"):
        return "error", item["error"]
    if item.get("rejected"):
        return "rejected", item["rejected"]
    return None
