"""Arrow tables of exactly the project's schemas from plain row dicts, for tests that write shards
by hand."""
from __future__ import annotations

import json

import pyarrow as pa


def rows_to_table(rows: list[dict], schema: pa.Schema) -> pa.Table:
    """Build a table of exactly ``schema`` from row dicts; missing keys become nulls."""
    cols = {f.name: [r.get(f.name) for r in rows] for f in schema}
    return pa.Table.from_pydict(cols, schema=schema)


def backends_json(backends: dict) -> str:
    return json.dumps(backends, sort_keys=True, separators=(",", ":"))
