"""Arrow schemas of the curated shards: clip rows (st2v/ and t2v/) and ledger rows (ledger/).

This module is the single source of truth for the output contract (the README's "Curate" section lists it). The
writer builds tables with these schemas, readers call :func:`read_table` / :func:`check_schema`,
and the tests compare against them. The version goes into every file's schema metadata under
``mocha.schema_version``; a reader refuses a file with a missing or different major version.
"""
from __future__ import annotations

from typing import Iterable

import pyarrow as pa
import pyarrow.parquet as pq

SCHEMA_VERSION = "1.3"
META_VERSION = b"mocha.schema_version"
META_KIND = b"mocha.kind"
META_EMB_DIM = b"mocha.audio_emb_dim"

TRACKS = ("st2v", "t2v")
# Shot sizes of a clip with a face, from the tightest (mouth most visible) to the widest: the
# order in which MoCha's curriculum adds them. ``no_face`` is the value for clips without one.
FACE_SHOT_SIZES = ("close_up", "medium_close_up", "medium", "wide")
SHOT_SIZES = FACE_SHOT_SIZES + ("no_face",)
# Wav2Vec2-base hidden size; a run with another model records its own dim in the metadata.
DEFAULT_AUDIO_EMB_DIM = 768


class SchemaError(ValueError):
    """A shard whose schema is missing, foreign or of another version."""


def audio_emb_type(dim: int) -> pa.DataType:
    return pa.list_(pa.list_(pa.float16(), dim))


# One turn of the speaking timeline: the character's caption tag, its face track, the span in
# clip seconds, the mean speaking score over it and the face's mean horizontal centre (0..1).
SPEAKING_TURN = pa.struct([
    pa.field("person", pa.string()),
    pa.field("track", pa.int32()),
    pa.field("start_s", pa.float32()),
    pa.field("end_s", pa.float32()),
    pa.field("score", pa.float32()),
    pa.field("x", pa.float32()),
])


# Scores shared by clip rows and ledger rows (the ledger keeps "the scores computed so far").
_SCORE_FIELDS = [
    pa.field("speech_ratio", pa.float32()),
    pa.field("music_ratio", pa.float32()),
    pa.field("num_faces", pa.int16()),
    pa.field("shot_size", pa.string()),
    pa.field("sync_offset", pa.int16()),
    pa.field("sync_conf", pa.float32()),
    pa.field("sync_dist", pa.float32()),
    pa.field("motion_score", pa.float32()),
    # who speaks when, in time order (empty: no on-screen face speaks; null: not measured)
    pa.field("speaking_turns", pa.list_(SPEAKING_TURN)),
]

# Required columns of a clip row, in file order. Nullable unless marked otherwise.
_CLIP_REQUIRED = [
    pa.field("clip_id", pa.string(), nullable=False),
    pa.field("source_uri", pa.string(), nullable=False),
    pa.field("source_sha256", pa.string(), nullable=False),
    pa.field("start_s", pa.float64(), nullable=False),
    pa.field("end_s", pa.float64(), nullable=False),
    pa.field("start_frame", pa.int64(), nullable=False),
    pa.field("end_frame", pa.int64(), nullable=False),
    pa.field("fps", pa.float32(), nullable=False),
    pa.field("width", pa.int32(), nullable=False),
    pa.field("height", pa.int32(), nullable=False),
    pa.field("track", pa.string(), nullable=False),
    *_SCORE_FIELDS,
    pa.field("caption", pa.string()),
    pa.field("prompt", pa.string()),
    pa.field("video", pa.binary(), nullable=False),
    pa.field("audio", pa.binary()),
    # audio_emb is inserted here by clip_schema(dim)
    pa.field("backends", pa.string(), nullable=False),
]

# Extra clip columns (the contract allows more than the required ones). Kept in the same schema so that every
# writer and reader agrees on them too.
_CLIP_EXTRA = [
    pa.field("num_frames", pa.int32()),
    pa.field("audio_sample_rate", pa.int32()),
    pa.field("speech_segments", pa.string()),  # JSON [[start_s, end_s], ...] relative to the clip
    pa.field("face_height_ratio", pa.float32()),
    pa.field("faces", pa.string()),  # JSON: per-track statistics from the face stage
    pa.field("motion_class", pa.string()),
    # Frames the audio was delayed by at curation (negative: advanced); 0 when the measured
    # sync_offset was not applied (inside the backend's error, or st2v blocked), null when sync
    # did not run.
    pa.field("sync_shift_frames", pa.int16()),
    # share of the clip's speech frames an on-screen face was found speaking (speakers stage)
    pa.field("speech_attribution", pa.float32()),
    pa.field("character_verdict", pa.string()),  # JSON from the prominent-character filter
    pa.field("scene_index", pa.int32()),
    pa.field("window_index", pa.int32()),
    # Multi-clip samples: consecutive shots of one source with the same characters share a
    # group_id; group_prompt is the structured prompt of the whole group.
    pa.field("group_id", pa.string()),
    pa.field("group_index", pa.int16()),
    pa.field("group_size", pa.int16()),
    pa.field("group_prompt", pa.string()),
    pa.field("latents", pa.binary()),  # optional precomputed VAE latents (npy bytes)
]

_LEDGER_FIELDS = [
    pa.field("source_uri", pa.string(), nullable=False),
    pa.field("source_sha256", pa.string()),
    pa.field("clip_id", pa.string()),  # null for whole-video failures
    pa.field("status", pa.string(), nullable=False),
    pa.field("reject_stage", pa.string()),
    pa.field("reject_reason", pa.string()),
    # why a clip that was not rejected went to t2v rather than st2v (e.g. "no_audio_stream")
    pa.field("route_reason", pa.string()),
    pa.field("start_s", pa.float64()),
    pa.field("end_s", pa.float64()),
    pa.field("start_frame", pa.int64()),
    pa.field("end_frame", pa.int64()),
    *_SCORE_FIELDS,
    pa.field("backends", pa.string()),
    pa.field("shard", pa.string()),  # relative path of the st2v/t2v file holding the clip
    # the source URI of the kept copy, on the row of a source dropped as its exact or near
    # duplicate (reject_reason says which)
    pa.field("duplicate_of", pa.string()),
]

# Required columns added by a minor version: required only in files of that version or later,
# so a reader of this version still reads older files of the same major version.
_REQUIRED_SINCE = {"speaking_turns": (1, 2), "duplicate_of": (1, 3)}


def _with_meta(fields: list[pa.Field], kind: str, extra: dict[bytes, bytes] | None = None) -> pa.Schema:
    meta = {META_VERSION: SCHEMA_VERSION.encode(), META_KIND: kind.encode()}
    meta.update(extra or {})
    return pa.schema(fields, metadata=meta)


def clip_schema(audio_emb_dim: int = DEFAULT_AUDIO_EMB_DIM) -> pa.Schema:
    fields = list(_CLIP_REQUIRED)
    at = [f.name for f in fields].index("backends")
    fields.insert(at, pa.field("audio_emb", audio_emb_type(audio_emb_dim)))
    return _with_meta(fields + _CLIP_EXTRA, "clip", {META_EMB_DIM: str(audio_emb_dim).encode()})


def ledger_schema() -> pa.Schema:
    return _with_meta(list(_LEDGER_FIELDS), "ledger")


CLIP_REQUIRED_COLUMNS = tuple(f.name for f in _CLIP_REQUIRED) + ("audio_emb",)
LEDGER_COLUMNS = tuple(f.name for f in _LEDGER_FIELDS)


def schema_for(kind: str, metadata: dict[bytes, bytes] | None = None) -> pa.Schema:
    if kind == "ledger":
        return ledger_schema()
    if kind == "clip":
        dim = int((metadata or {}).get(META_EMB_DIM, str(DEFAULT_AUDIO_EMB_DIM).encode()))
        return clip_schema(dim)
    raise ValueError(f"unknown shard kind {kind!r}; expected 'clip' or 'ledger'")


def check_schema(schema: pa.Schema, kind: str, where: str = "shard") -> None:
    """Raise SchemaError naming the problem if ``schema`` is not a valid ``kind`` schema."""
    meta = schema.metadata or {}
    version = meta.get(META_VERSION)
    if version is None:
        raise SchemaError(
            f"{where}: no {META_VERSION.decode()} in the file metadata; not a shard written by "
            f"mocha (expected a {kind} shard, schema version {SCHEMA_VERSION})"
        )
    version = version.decode()
    if version.split(".")[0] != SCHEMA_VERSION.split(".")[0]:
        raise SchemaError(
            f"{where}: schema version {version} is not compatible with this reader "
            f"(version {SCHEMA_VERSION}); re-curate or use a matching release"
        )
    got_kind = meta.get(META_KIND, b"?").decode()
    if got_kind != kind:
        raise SchemaError(f"{where}: is a {got_kind!r} shard, expected a {kind!r} shard")
    expected = schema_for(kind, meta)
    required = CLIP_REQUIRED_COLUMNS if kind == "clip" else LEDGER_COLUMNS
    file_version = _version_tuple(version)
    problems = []
    for name in required:
        if file_version < _REQUIRED_SINCE.get(name, (0, 0)):
            continue
        want = expected.field(name).type
        if name not in schema.names:
            problems.append(f"missing column {name!r} ({want})")
        elif not schema.field(name).type.equals(want):
            problems.append(f"column {name!r} is {schema.field(name).type}, expected {want}")
    if problems:
        raise SchemaError(f"{where}: " + "; ".join(problems))


def _version_tuple(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in version.split("."))
    except ValueError:
        return (0,)


def read_table(path: str, kind: str, columns: Iterable[str] | None = None, filesystem=None) -> pa.Table:
    """Read one shard after checking its schema (raises SchemaError with the file's name)."""
    try:
        schema = pq.read_schema(path, filesystem=filesystem)
    except Exception as e:  # not parquet at all
        raise SchemaError(f"{path}: not a readable Parquet file ({e})") from e
    check_schema(schema, kind, where=str(path))
    return pq.read_table(path, columns=list(columns) if columns else None, filesystem=filesystem)
