"""Shard writer: st2v/, t2v/ and ledger/ Parquet files of bounded size, committed atomically.

A flush writes every file under a temporary name, then a commit record ``_commits/NNNNNN.json``
(the commit point, itself written via rename), then renames the files to their final names. On
start, :func:`recover` rolls committed flushes forward and deletes uncommitted temporaries, so a
run killed at any instant leaves either all or none of a flush. The rows of one source always go
into the same flush, so a rerun can skip every source named in a commit record and redo the rest.
"""
from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from schemas.rows import DEFAULT_AUDIO_EMB_DIM, clip_schema, ledger_schema, read_table

TRACK_DIRS = ("st2v", "t2v", "ledger")
COMMITS = "_commits"
TMP_SUFFIX = ".tmp"


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + f".{uuid.uuid4().hex[:8]}" + TMP_SUFFIX)
    tmp.write_text(text)
    os.replace(tmp, path)


def recover(out: Path) -> tuple[set[str], int]:
    """Finish or discard interrupted flushes. Returns (sources already done, next part index)."""
    done: set[str] = set()
    next_part = 0
    cdir = out / COMMITS
    committed_files: set[str] = set()
    if cdir.is_dir():
        for rec in sorted(cdir.glob("*.json")):
            data = json.loads(rec.read_text())
            next_part = max(next_part, int(data["part"]) + 1)
            done.update(data["sources_done"])
            for rel in data["files"]:
                final = out / rel
                committed_files.add(str(final))
                tmp = final.with_name(final.name + TMP_SUFFIX)
                if not final.exists() and tmp.exists():
                    os.replace(tmp, final)
    for d in TRACK_DIRS + (COMMITS,):
        for tmp in (out / d).glob(f"*{TMP_SUFFIX}") if (out / d).is_dir() else []:
            tmp.unlink()
    return done, next_part


def _emb_column(values: list, dim: int) -> pa.Array:
    """list<fixed_size_list<float16, dim>> from (T, dim) arrays or None, without Python loops
    over frames."""
    offsets, flat, valid = [0], [], []
    for v in values:
        if v is None:
            offsets.append(offsets[-1])
            valid.append(False)
            continue
        a = np.asarray(v, dtype=np.float16).reshape(-1, dim)
        flat.append(a.reshape(-1))
        offsets.append(offsets[-1] + a.shape[0])
        valid.append(True)
    values_arr = pa.array(np.concatenate(flat) if flat else np.zeros(0, np.float16), type=pa.float16())
    inner = pa.FixedSizeListArray.from_arrays(values_arr, dim)
    mask = pa.array([not x for x in valid], type=pa.bool_())
    return pa.ListArray.from_arrays(pa.array(offsets, type=pa.int32()), inner, mask=mask)


def clip_table(rows: list[dict], dim: int) -> pa.Table:
    schema = clip_schema(dim)
    cols = []
    for f in schema:
        vals = [r.get(f.name) for r in rows]
        if f.name == "audio_emb":
            cols.append(_emb_column(vals, dim))
        else:
            cols.append(pa.array(vals, type=f.type))
    return pa.Table.from_arrays(cols, schema=schema)


def ledger_table(rows: list[dict]) -> pa.Table:
    schema = ledger_schema()
    return pa.Table.from_arrays([pa.array([r.get(f.name) for r in rows], type=f.type) for f in schema], schema=schema)


def _row_bytes(row: dict) -> int:
    n = 512
    for k in ("video", "audio"):
        v = row.get(k)
        if v:
            n += len(v)
    emb = row.get("audio_emb")
    if emb is not None:
        n += int(np.asarray(emb).size) * 2
    return n


class ShardWriter:
    def __init__(self, out: Path, audio_emb_dim: int = DEFAULT_AUDIO_EMB_DIM, max_bytes: int = 256 * 1024**2,
                 max_rows: int = 2000, on_source: Optional[Callable[[list[dict]], list[dict]]] = None):
        self.out = Path(out)
        for d in TRACK_DIRS + (COMMITS,):
            (self.out / d).mkdir(parents=True, exist_ok=True)
        self.done, self.part = recover(self.out)
        self.dim = audio_emb_dim
        self.max_bytes = max_bytes
        self.max_rows = max_rows
        self.on_source = on_source
        self.pending: dict[str, list[dict]] = {}
        self.buffer: list[dict] = []
        self.buffer_sources: list[str] = []
        self.buffer_bytes = 0
        self.committed_rows = 0

    @staticmethod
    def source_key(row: dict) -> str:
        return row["source_uri"]

    def add(self, row: dict) -> Optional[list[dict]]:
        """Take one finished row; returns the source's rows when that source is complete."""
        key = self.source_key(row)
        rows = self.pending.setdefault(key, [])
        rows.append(row)
        if len(rows) < int(row.get("source_num_rows") or 1):
            return None
        rows = self.pending.pop(key)
        rows.sort(key=lambda r: (r.get("start_s") is None, r.get("start_s") or 0.0))
        if self.on_source is not None:
            rows = self.on_source(rows)
        self.buffer.extend(rows)
        self.buffer_sources.append(key)
        self.buffer_bytes += sum(_row_bytes(r) for r in rows)
        if self.buffer_bytes >= self.max_bytes or len(self.buffer) >= self.max_rows:
            self.flush()
        return rows

    def _chunks(self, rows: list[dict]) -> list[list[dict]]:
        out, cur, size = [], [], 0
        for r in rows:
            b = _row_bytes(r)
            if cur and (size + b > self.max_bytes or len(cur) >= self.max_rows):
                out.append(cur)
                cur, size = [], 0
            cur.append(r)
            size += b
        if cur:
            out.append(cur)
        return out

    def flush(self) -> None:
        if not self.buffer and not self.buffer_sources:
            return
        part = self.part
        files: list[str] = []
        tmps: list[tuple[Path, Path]] = []

        def write(table: pa.Table, rel: str) -> None:
            final = self.out / rel
            tmp = final.with_name(final.name + TMP_SUFFIX)
            # small row groups: the trainer's reader caches a few row groups per worker, so
            # their size bounds its memory (a clip row holds an mp4 of ~1 MB)
            pq.write_table(table, tmp, compression="zstd", row_group_size=32)
            files.append(rel)
            tmps.append((tmp, final))

        for track in ("st2v", "t2v"):
            rows = [r for r in self.buffer if r.get("status") == track]
            for i, chunk in enumerate(self._chunks(rows)):
                rel = f"{track}/part-{part:06d}-{i:03d}.parquet"
                for r in chunk:
                    r["shard"] = rel
                write(clip_table(chunk, self.dim), rel)
        if self.buffer:
            write(ledger_table(self.buffer), f"ledger/part-{part:06d}.parquet")
        record = {"part": part, "files": files, "sources_done": self.buffer_sources, "rows": len(self.buffer)}
        _atomic_write_text(self.out / COMMITS / f"{part:06d}.json", json.dumps(record))
        for tmp, final in tmps:
            os.replace(tmp, final)
        self.done.update(self.buffer_sources)
        self.committed_rows += len(self.buffer)
        self.part += 1
        self.buffer, self.buffer_sources, self.buffer_bytes = [], [], 0

    def close(self) -> None:
        # sources that never completed (a worker died mid-source) must still reach the ledger
        for key, rows in list(self.pending.items()):
            for r in rows:
                r["source_num_rows"] = len(rows)
            self.buffer.extend(rows)
            self.buffer_sources.append(key)
        self.pending.clear()
        self.flush()


def read_ledger(out: Path) -> pa.Table:
    files = sorted((Path(out) / "ledger").glob("*.parquet"))
    if not files:
        return ledger_schema().empty_table()
    return pa.concat_tables([read_table(str(f), "ledger") for f in files])
