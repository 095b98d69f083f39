"""Writing shards (on the workers) and committing them (on the driver).

A worker's write call turns a few finished segments into ``st2v/``, ``t2v/`` and ``ledger/``
Parquet files of bounded size, written straight to the output filesystem under names no other
attempt uses (``part-<uuid>-<k>.parquet``), and returns a small commit record: the files and the
segments they complete. Only the driver commits: :class:`CommitLog` writes each record whole as
``_commits/<time>-<uuid>.json`` (one PUT on object stores, a rename on local disk). Readers trust
only files named in records (``common.output``), so nothing depends on atomic renames or fresh
listings, a retried task's first attempt is just an orphan, and a rerun removes orphans before
it starts.
"""
from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Iterable, Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from common.fs import delete, ensure_dir, list_files, write_bytes
from common.output import COMMITS, LEDGER, PARTS, TRACKS, Output
from schemas.rows import DEFAULT_AUDIO_EMB_DIM, clip_schema, ledger_schema, read_table

log = logging.getLogger(__name__)


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


def _chunks(rows: list[dict], max_bytes: int, max_rows: int) -> list[list[dict]]:
    out, cur, size = [], [], 0
    for r in rows:
        b = _row_bytes(r)
        if cur and (size + b > max_bytes or len(cur) >= max_rows):
            out.append(cur)
            cur, size = [], 0
        cur.append(r)
        size += b
    if cur:
        out.append(cur)
    return out


def write_shards(out: Output, rows: list[dict], segments: list[dict], dim: int = DEFAULT_AUDIO_EMB_DIM,
                 max_bytes: int = 256 * 1024**2, max_rows: int = 2000) -> dict:
    """Write the finished rows of ``segments`` and return their commit record (not committed)."""
    tag = uuid.uuid4().hex[:12]
    files: list[str] = []

    def write(table: pa.Table, rel: str) -> None:
        # small row groups: the trainer's reader caches a few row groups per worker, so their
        # size bounds its memory (a clip row holds an mp4 of ~1 MB)
        pq.write_table(table, out.path(rel), filesystem=out.fs, compression="zstd", row_group_size=32)
        files.append(rel)

    for track in TRACKS:
        kept = [r for r in rows if r.get("status") == track]
        for i, chunk in enumerate(_chunks(kept, max_bytes, max_rows)):
            rel = f"{track}/part-{tag}-{i:03d}.parquet"
            for r in chunk:
                r["shard"] = rel
            write(clip_table(chunk, dim), rel)
    for i, chunk in enumerate(_chunks(rows, max_bytes, max(max_rows, 1))):
        write(ledger_table(chunk), f"{LEDGER}/part-{tag}-{i:03d}.parquet")
    return {"format": 2, "id": tag, "files": files, "segments": segments, "rows": len(rows),
            "clips": sum(1 for r in rows if r.get("clip_id") is not None)}


class CommitLog:
    """The driver's view of an output: what is committed, and the one place that commits."""

    def __init__(self, out: Output):
        self.out = out
        for d in PARTS + (COMMITS,):
            ensure_dir(out.fs, out.path(d))
        self.records = out.commit_records()
        self.committed = {(s["source"], int(s["index"])) for r in self.records for s in r["segments"] if not s.get("retry")}

    def progress(self):
        return self.out.progress(self.records)

    def remove_orphans(self) -> list[str]:
        """Delete shard files no record names (left by killed or retried workers), and commit
        records a killed driver left half-written on local disk."""
        named = {f for r in self.records for f in r["files"]}
        removed = []
        for p in list_files(self.out.fs, self.out.path(COMMITS), ".tmp"):
            delete(self.out.fs, p)
        for part in PARTS:
            for p in list_files(self.out.fs, self.out.path(part), ".parquet"):
                rel = f"{part}/{p.rsplit('/', 1)[-1]}"
                if rel not in named:
                    err = delete(self.out.fs, p)
                    if err:
                        log.warning("could not remove orphan %s: %s", p, err)
                    else:
                        removed.append(rel)
        return removed

    def commit(self, record: dict) -> bool:
        """Commit a worker's record; False (and nothing committed) when any of its segments is
        already committed, so a segment delivered twice never appears twice. A record holding a
        segment supersedes the earlier records that only held retry rows of that segment."""
        keys = {(s["source"], int(s["index"])) for s in record["segments"] if not s.get("retry")}
        if keys & self.committed:
            log.warning("commit record %s repeats committed segments %s; not committed", record.get("id"),
                        sorted(keys & self.committed)[:3])
            return False
        here = {(s["source"], int(s["index"])) for s in record["segments"]}
        stale = [r["id"] for r in self.records if r.get("id") and r["segments"] and all(s.get("retry") for s in r["segments"])
                 and {(s["source"], int(s["index"])) for s in r["segments"]} <= here]
        if stale:
            record = {**record, "supersedes": stale}
        name = f"{time.time_ns():020d}-{record.get('id') or uuid.uuid4().hex[:12]}.json"
        write_bytes(self.out.fs, self.out.path(COMMITS, name), json.dumps(record).encode())
        self.records = [r for r in self.records if r.get("id") not in stale] + [record]
        self.committed |= keys
        return True


def iter_ledger(out: Output, columns: Optional[Iterable[str]] = None, records: Optional[list[dict]] = None):
    """The dataset's ledger tables, one file at a time."""
    for rel in out.dataset_files(LEDGER, records):
        yield read_table(out.path(rel), "ledger", columns=columns, filesystem=out.fs)


def read_ledger(out) -> pa.Table:
    """The whole committed ledger of an output (a path, URI or :class:`Output`)."""
    out = out if isinstance(out, Output) else Output.open(str(out))
    tables = list(iter_ledger(out))
    # ledgers of older minor versions lack later columns: those read as nulls
    return pa.concat_tables(tables, promote_options="default") if tables else ledger_schema().empty_table()
