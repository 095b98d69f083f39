"""Filesystems by URI: local paths, ``file://``, and every store ``pyarrow.fs`` knows (``s3://``,
``gs://``, ``abfs://``, ``hdfs://``), with anything else that ``fsspec`` resolves wrapped for
pyarrow. Credentials come from each store's own standard environment and config files (for S3:
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``, ``AWS_ENDPOINT_URL``); a URI that
carries them inline is redacted by :func:`redact` wherever it is recorded.
"""
from __future__ import annotations

import os
import re
from typing import Optional

import pyarrow.fs as pafs

_USERINFO = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@]*@")


def is_uri(s: str) -> bool:
    return "://" in s and not s.startswith("file://")


def redact(uri: str) -> str:
    """``uri`` without inline credentials (``s3://KEY:SECRET@bucket/x`` -> ``s3://***@bucket/x``)."""
    return _USERINFO.sub(r"\1***@", uri)


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for a local path or a URI."""
    if not is_uri(uri):
        local = uri[len("file://"):] if uri.startswith("file://") else uri
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(local))
    try:
        return pafs.FileSystem.from_uri(uri)
    except ValueError as e:  # pyarrow.lib.ArrowInvalid
        if "Unrecognized filesystem type" not in str(e):
            raise
    import fsspec  # schemes pyarrow has no native client for

    fs, path = fsspec.core.url_to_fs(uri)
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path


def join(root: str, *parts: str) -> str:
    """A child of a filesystem path (or of a URI, written the way the root was written)."""
    return "/".join([root.rstrip("/") or "/"] + [p.strip("/") for p in parts if p])


def read_bytes(fs: pafs.FileSystem, path: str) -> bytes:
    with fs.open_input_stream(path) as f:
        return f.read()


def write_bytes(fs: pafs.FileSystem, path: str, data: bytes) -> None:
    """One object written whole: on object stores a single PUT, visible all at once or not at
    all; on local disk via a temporary name and a rename, for the same guarantee."""
    if isinstance(fs, pafs.LocalFileSystem):
        parent = os.path.dirname(path)
        os.makedirs(parent, exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
        return
    with fs.open_output_stream(path) as f:
        f.write(data)


def ensure_dir(fs: pafs.FileSystem, path: str) -> None:
    fs.create_dir(path, recursive=True)


def list_files(fs: pafs.FileSystem, path: str, suffix: str = "") -> list[str]:
    """Files directly under ``path`` ending in ``suffix`` (sorted); none if it does not exist."""
    try:
        infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    except (FileNotFoundError, OSError):
        return []
    return sorted(i.path for i in infos if i.type == pafs.FileType.File and i.path.endswith(suffix))


def exists(fs: pafs.FileSystem, path: str) -> bool:
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def delete(fs: pafs.FileSystem, path: str) -> Optional[str]:
    """Delete one file; returns the error text instead of raising (cleanup is best effort)."""
    try:
        fs.delete_file(path)
        return None
    except OSError as e:
        return str(e)
