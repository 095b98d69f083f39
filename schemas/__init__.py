"""Data contracts: Arrow schemas of clip and ledger rows (rows.py), caption JSON models and the
structured prompt template. Imports only pyarrow and pydantic."""
from schemas.rows import (  # noqa: F401
    CLIP_REQUIRED_COLUMNS,
    DEFAULT_AUDIO_EMB_DIM,
    LEDGER_COLUMNS,
    SCHEMA_VERSION,
    SHOT_SIZES,
    TRACKS,
    SchemaError,
    check_schema,
    clip_schema,
    ledger_schema,
    read_table,
)
