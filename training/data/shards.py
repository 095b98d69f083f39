"""Shard discovery, the sample index and bounded-memory row-group reads.

The index holds only light columns (ids, track, shot size, geometry), so every rank can hold
it for millions of clips; heavy columns (video, audio, embeddings, latents) are read one
Parquet row group at a time through a small LRU cache.
"""
from __future__ import annotations

import logging
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Optional

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from common.fs import filesystem, redact
from common.output import TRACKS, Output
from schemas.rows import META_EMB_DIM, SchemaError, check_schema

log = logging.getLogger(__name__)

INDEX_COLUMNS = ["clip_id", "track", "shot_size", "fps", "width", "height", "num_frames",
                 "group_id", "group_index", "group_size"]
SAMPLE_COLUMNS = ["clip_id", "track", "shot_size", "fps", "width", "height", "num_frames", "video",
                  "audio", "audio_emb", "prompt", "group_id", "group_index", "group_prompt", "latents"]


class ShardError(RuntimeError):
    """No shards, or shards that cannot make a data set (clear message for the trainer)."""


def discover(roots: list[str]) -> list[tuple[pafs.FileSystem, str]]:
    """Parquet clip shards under ``roots`` (sorted, so every rank sees the same list). A curate
    output (a folder or URI) contributes the st2v/ and t2v/ files its commit log names (never its
    ledger/, nor files a killed run left uncommitted); any other folder, every Parquet file in it."""
    out: list[tuple[pafs.FileSystem, str]] = []
    for root in roots:
        fs, path = filesystem(root)
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            raise ShardError(f"shard root {redact(root)} does not exist")
        if info.type == pafs.FileType.File:
            out.append((fs, path))
            continue
        subdirs = [f"{path.rstrip('/')}/{t}" for t in TRACKS]
        present = [d for d in subdirs if fs.get_file_info(d).type == pafs.FileType.Directory]
        if present:
            output = Output(root, fs, path)
            records = output.commit_records()
            out.extend((fs, output.path(rel)) for t in TRACKS for rel in output.dataset_files(t, records))
            continue
        files = []
        for f in fs.get_file_info(pafs.FileSelector(path, recursive=True)):
            parts = f.path.split("/")
            if f.type == pafs.FileType.File and f.path.endswith(".parquet") and "ledger" not in parts \
                    and not any(p.startswith((".", "_")) for p in parts[-1:]):
                files.append(f.path)
        out.extend((fs, p) for p in sorted(files))
    if not out:
        raise ShardError(f"no Parquet shards under {roots}")
    return out


@dataclass
class Chunk:
    file: int  # index into ShardIndex.files
    row_group: int
    num_rows: int


@dataclass
class Item:
    """One training sample: a clip, or a group of clips concatenated in group_index order."""

    key: str  # clip_id, or group_id for a group
    track: str
    shot_size: str
    rows: list[tuple[int, int]]  # (chunk, row in chunk) per member, in time order
    width: int
    height: int
    fps: float
    num_frames: int  # source frames, summed over members


@dataclass
class ShardIndex:
    files: list[tuple[pafs.FileSystem, str]]
    chunks: list[Chunk]
    items: list[Item]
    audio_emb_dim: int
    stats: dict = field(default_factory=dict)

    def pools(self) -> dict[tuple[str, str], list[int]]:
        out: dict[tuple[str, str], list[int]] = {}
        for i, it in enumerate(self.items):
            out.setdefault((it.track, it.shot_size), []).append(i)
        return out

    def totals(self) -> dict:
        per = Counter((it.track, it.shot_size) for it in self.items)
        return {
            "files": len(self.files), "row_groups": len(self.chunks), "rows": self.stats.get("rows", 0),
            "samples": len(self.items), "groups": self.stats.get("groups", 0),
            "incomplete_groups": self.stats.get("incomplete_groups", 0),
            "per_track": dict(Counter(it.track for it in self.items)),
            "per_track_shot": {f"{t}/{s}": n for (t, s), n in sorted(per.items())},
        }


def _open(fs: pafs.FileSystem, path: str) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(fs.open_input_file(path))
    except (OSError, pa.ArrowInvalid) as e:
        raise SchemaError(f"{path}: not a readable Parquet file ({e})") from e


def build_index(roots: list[str], audio_emb_dim: Optional[int] = None) -> ShardIndex:
    """Read the light columns of every shard (after checking its schema) into an index."""
    files = discover(roots)
    chunks: list[Chunk] = []
    rows_by_group: dict[str, list] = {}
    singles: list[tuple] = []
    dims = set()
    nrows = 0
    for fi, (fs, path) in enumerate(files):
        pf = _open(fs, path)
        check_schema(pf.schema_arrow, "clip", where=path)
        dims.add(int((pf.schema_arrow.metadata or {}).get(META_EMB_DIM, b"0")))
        for rg in range(pf.num_row_groups):
            n = pf.metadata.row_group(rg).num_rows
            if n == 0:
                continue
            ci = len(chunks)
            chunks.append(Chunk(fi, rg, n))
            t = pf.read_row_group(rg, columns=INDEX_COLUMNS).to_pydict()
            nrows += n
            for r in range(n):
                rec = {k: t[k][r] for k in INDEX_COLUMNS}
                rec["loc"] = (ci, r)
                if rec["group_id"] and (rec["group_size"] or 1) > 1:
                    rows_by_group.setdefault(rec["group_id"], []).append(rec)
                else:
                    singles.append(rec)
    if len(dims) > 1:
        raise ShardError(f"shards disagree on {META_EMB_DIM.decode()}: {sorted(dims)}")
    dim = dims.pop()
    if audio_emb_dim is not None and dim != audio_emb_dim:
        raise ShardError(f"shards hold {dim}-d audio embeddings but the data config says audio_emb_dim={audio_emb_dim}")
    items = [_item(r["clip_id"], [r]) for r in singles]
    incomplete = 0
    for gid, members in rows_by_group.items():
        members.sort(key=lambda r: (r["group_index"] if r["group_index"] is not None else 0))
        if len(members) != (members[0]["group_size"] or len(members)):
            incomplete += 1
            log.warning("group %s: %d of %d members found; using those", gid, len(members), members[0]["group_size"])
        items.append(_item(gid, members))
    items.sort(key=lambda it: it.rows[0])  # storage order: deterministic and IO-local
    return ShardIndex(files, chunks, items, dim,
                      stats={"rows": nrows, "groups": len(rows_by_group), "incomplete_groups": incomplete})


def _item(key: str, members: list[dict]) -> Item:
    tracks = {m["track"] for m in members}
    # A group is speech data only if every member carries speech; otherwise it is text-only.
    track = "st2v" if tracks == {"st2v"} else "t2v"
    # null shot size: no face stage ran on the row; it joins no shot-size pool of the curriculum
    shots = Counter(m["shot_size"] or "unknown" for m in members)
    shot = shots.most_common(1)[0][0]  # ties: the earliest member's shot size (Counter keeps order)
    first = members[0]
    return Item(key=key, track=track, shot_size=shot, rows=[m["loc"] for m in members],
                width=int(first["width"]), height=int(first["height"]), fps=float(first["fps"]),
                num_frames=int(sum((m["num_frames"] or 0) for m in members)))


class ChunkReader:
    """Heavy columns of row groups, an LRU of ``capacity`` row groups per process."""

    def __init__(self, index: ShardIndex, capacity: int = 4, columns: list[str] = SAMPLE_COLUMNS):
        self.index = index
        self.capacity = capacity
        self.columns = columns
        self._cache: OrderedDict[int, pa.Table] = OrderedDict()
        self._files: dict[int, pq.ParquetFile] = {}

    def _table(self, ci: int) -> pa.Table:
        if ci in self._cache:
            self._cache.move_to_end(ci)
            return self._cache[ci]
        ch = self.index.chunks[ci]
        pf = self._files.get(ch.file)
        if pf is None:
            fs, path = self.index.files[ch.file]
            pf = self._files[ch.file] = _open(fs, path)
        t = pf.read_row_group(ch.row_group, columns=self.columns)
        self._cache[ci] = t
        while len(self._cache) > self.capacity:
            self._cache.popitem(last=False)
        return t

    def row(self, loc: tuple[int, int]) -> dict:
        """One row as a dict; ``audio_emb`` stays an Arrow scalar (converted by the decoder)."""
        t = self._table(loc[0])
        out = {}
        for name in self.columns:
            v = t.column(name)[loc[1]]
            out[name] = v if name == "audio_emb" else v.as_py()
        return out
