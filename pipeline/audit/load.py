"""Schema-checked reading of a curated output directory.

Every shard goes through :func:`schemas.rows.read_table`; a shard that fails the schema check is
recorded (path + message) instead of stopping the audit, so the report can show it as a failed
check. Heavy binary columns (video, audio, embeddings) are not loaded for every row: the audit
keeps only whether each row has audio / an embedding, and fetches video bytes just for the few
rows shown in the gallery.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from common.fs import redact
from common.output import LEDGER, RUN_JSON, TRACKS, Output
from schemas.rows import SchemaError, check_schema, clip_schema, ledger_schema, read_table

# Columns of clip rows the audit reads in full; the binary ones are reduced to flags.
_HEAVY = ("video", "audio", "audio_emb", "latents")
# Rows per batch when reducing heavy columns to null flags: bounds memory for long clips with
# per-frame embeddings (a 2,000-row shard of 10 s clips holds ~0.5 GB of float16 vectors).
_FLAG_BATCH_ROWS = 256


@dataclass
class SchemaProblem:
    path: str
    message: str


@dataclass
class AuditData:
    output_dir: str  # a local path or a URI
    clips: pa.Table  # st2v + t2v rows without heavy columns, plus has_audio/has_emb/_shard/_row
    ledger: pa.Table
    run: dict = field(default_factory=dict)
    run_problem: Optional[str] = None
    schema_problems: list[SchemaProblem] = field(default_factory=list)
    shard_files: dict[str, list[str]] = field(default_factory=dict)  # dir name -> relative paths
    # files present but named in no commit record (a killed run's leftovers): not part of the data
    uncommitted_files: list[str] = field(default_factory=list)
    output: Optional[Output] = None


def _light_clip_columns() -> list[str]:
    return [n for n in clip_schema().names if n not in _HEAVY]


def _null_flags(path, column: str, fs=None) -> pa.Array:
    """Boolean array: row has a non-null ``column``.

    A row group whose statistics count no nulls in the column's leaf is all valid without
    decoding it (null and empty lists both count as leaf nulls there, so a zero is proof);
    only other row groups are decoded, in batches to bound memory. This keeps an audit of
    shards full of per-frame embeddings from decoding gigabytes of float16 it does not need."""
    pf = pq.ParquetFile(fs.open_input_file(str(path)) if fs is not None else path)
    leaf = next(i for i in range(pf.metadata.num_columns)
                if pf.metadata.schema.column(i).path.split(".")[0] == column)
    parts = []
    for g in range(pf.num_row_groups):
        rg = pf.metadata.row_group(g)
        stats = rg.column(leaf).statistics
        if stats is not None and stats.has_null_count and stats.null_count == 0:
            parts.append(pa.array(np.ones(rg.num_rows, dtype=bool)))
            continue
        for b in pf.iter_batches(batch_size=_FLAG_BATCH_ROWS, row_groups=[g], columns=[column]):
            parts.append(pc.is_valid(b.column(0)))
    return pa.concat_arrays(parts) if parts else pa.array([], pa.bool_())


def _read_clip_shard(out: Output, rel: str) -> pa.Table:
    path = out.path(rel)
    light = [c for c in _light_clip_columns() if c in pq.read_schema(path, filesystem=out.fs).names]
    t = read_table(path, "clip", columns=light, filesystem=out.fs)
    # read_table has checked the schema; the flags only need the validity of two columns.
    t = t.append_column("has_audio", _null_flags(path, "audio", out.fs))
    t = t.append_column("has_emb", _null_flags(path, "audio_emb", out.fs))
    t = t.append_column("_shard", pa.array([rel] * t.num_rows, pa.string()))
    return t.append_column("_row", pa.array(range(t.num_rows), pa.int64()))


def _empty_clips() -> pa.Table:
    schema = clip_schema()
    fields = [schema.field(n) for n in _light_clip_columns()]
    fields += [pa.field("has_audio", pa.bool_()), pa.field("has_emb", pa.bool_()),
               pa.field("_shard", pa.string()), pa.field("_row", pa.int64())]
    return pa.schema([f.with_nullable(True) for f in fields]).empty_table()


def _drop_contract_nulls(t: pa.Table, schema: pa.Schema, rel: str, problems: list) -> pa.Table:
    """Rows with nulls in columns the contract declares non-nullable (a foreign writer can
    produce them: the schema check compares types only) are reported and left out, so no later
    step meets a null clip_id, span or track."""
    keep = None
    for f in schema:
        if f.nullable or f.name not in t.column_names:
            continue
        n = t.column(f.name).null_count
        if n:
            problems.append(SchemaProblem(rel, f"{n} null value(s) in non-nullable column {f.name!r}; "
                                               "those rows are left out of the audit"))
            valid = pc.is_valid(t.column(f.name))
            keep = valid if keep is None else pc.and_(keep, valid)
    return t if keep is None else t.filter(keep)


def _conform(t: pa.Table, empty: pa.Table) -> pa.Table:
    """``t`` with exactly the columns of ``empty``: optional columns a shard lacks become nulls
    (the schema check only requires the contract's columns)."""
    cols = []
    for f in empty.schema:
        if f.name in t.column_names:
            c = t.column(f.name)
            if not c.type.equals(f.type):
                try:
                    c = c.cast(f.type)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                    c = pa.nulls(t.num_rows, f.type)  # an optional column of a foreign type
            cols.append(c)
        else:
            cols.append(pa.nulls(t.num_rows, f.type))
    return pa.Table.from_arrays(cols, schema=empty.schema)


def _concat(tables: list[pa.Table], empty: pa.Table) -> pa.Table:
    if not tables:
        return empty
    return pa.concat_tables([_conform(t, empty) for t in tables])


def load_output(output_dir: str | Path) -> AuditData:
    """Read run.json and the dataset's clip and ledger shards (those named in the commit log)
    of an output folder or URI. Every file present is schema-checked; uncommitted ones are
    listed, not read."""
    out = Output.open(str(output_dir))
    if not out.is_dir():
        raise FileNotFoundError(f"{redact(str(output_dir))}: not a directory (expected the OUTPUT of `mocha curate`)")
    records = out.commit_records()
    problems: list[SchemaProblem] = []
    files: dict[str, list[str]] = {}
    tables: dict[str, list[pa.Table]] = {"clip": [], "ledger": []}
    uncommitted: list[str] = []
    for part in TRACKS + (LEDGER,):
        kind = "ledger" if part == LEDGER else "clip"
        data_files = set(out.dataset_files(part, records))
        for rel in sorted(data_files | set(out.present_files(part))):
            try:
                if rel not in data_files:
                    uncommitted.append(rel)
                    check_schema(pq.read_schema(out.path(rel), filesystem=out.fs), kind, where=rel)
                    continue
                files.setdefault(part, []).append(rel)
                if kind == "clip":
                    t = _read_clip_shard(out, rel)
                else:
                    t = read_table(out.path(rel), "ledger", filesystem=out.fs)
                schema = clip_schema() if kind == "clip" else ledger_schema()
                tables[kind].append(_drop_contract_nulls(t, schema, rel, problems))
            except SchemaError as e:
                problems.append(SchemaProblem(rel, str(e)))
            except (OSError, pa.ArrowException) as e:  # schema fine, data pages broken (or gone)
                problems.append(SchemaProblem(rel, f"unreadable shard: {e}"))
    run, run_problem = {}, None
    if not out.exists(RUN_JSON):
        run_problem = "run.json is missing"
    else:
        try:
            run = out.read_json(RUN_JSON)
            if not isinstance(run, dict):
                run, run_problem = {}, "run.json does not hold a JSON object"
        except (OSError, ValueError) as e:
            run_problem = f"run.json is not valid JSON ({e})"
    empty_ledger = pa.schema([f.with_nullable(True) for f in ledger_schema()]).empty_table()
    return AuditData(
        output_dir=str(output_dir),
        clips=_concat(tables["clip"], _empty_clips()),
        ledger=_concat(tables["ledger"], empty_ledger),
        run=run,
        run_problem=run_problem,
        schema_problems=problems,
        shard_files=files,
        uncommitted_files=uncommitted,
        output=out,
    )


def read_videos(output_dir: str | Path, picks: list[tuple[str, int]]) -> dict[tuple[str, int], bytes]:
    """Video bytes of the given (shard, row) pairs, reading each shard's video column once."""
    out = Output.open(str(output_dir))
    by_shard: dict[str, list[int]] = {}
    for shard, row in picks:
        by_shard.setdefault(shard, []).append(row)
    got = {}
    for shard, rows in by_shard.items():
        path = out.path(shard)
        check_schema(pq.read_schema(path, filesystem=out.fs), "clip", where=shard)
        pf = pq.ParquetFile(out.fs.open_input_file(path))
        # Walk row groups so only those holding a picked row are decompressed.
        want = sorted(set(rows))
        start = 0
        for g in range(pf.num_row_groups):
            n = pf.metadata.row_group(g).num_rows
            inside = [r for r in want if start <= r < start + n]
            if inside:
                col = pf.read_row_group(g, columns=["video"]).column(0)
                for r in inside:
                    got[(shard, r)] = col[r - start].as_py()
            start += n
    return got
