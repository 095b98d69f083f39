import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.engine.writer import clip_table, ledger_table
from schemas.rows import SCHEMA_VERSION, SchemaError, check_schema, clip_schema, ledger_schema, read_table


def _clip_row(i=0, emb=None):
    return {"clip_id": f"c{i}", "source_uri": "s.mp4", "source_sha256": "ab", "start_s": 0.0, "end_s": 2.0,
            "start_frame": 0, "end_frame": 50, "fps": 25.0, "width": 64, "height": 64, "track": "st2v",
            "video": b"\x00", "backends": "{}", "audio_emb": emb}


def test_version_and_kind_are_written_to_file_metadata(tmp_path):
    p = tmp_path / "a.parquet"
    pq.write_table(clip_table([_clip_row()], 8), p)
    meta = pq.read_schema(p).metadata
    assert meta[b"mocha.schema_version"] == SCHEMA_VERSION.encode()
    assert meta[b"mocha.kind"] == b"clip"
    assert meta[b"mocha.audio_emb_dim"] == b"8"
    assert read_table(str(p), "clip").num_rows == 1


def test_audio_emb_round_trips_as_float16_per_frame(tmp_path):
    emb = np.random.default_rng(0).standard_normal((5, 8)).astype(np.float16)
    p = tmp_path / "a.parquet"
    pq.write_table(clip_table([_clip_row(0, emb), _clip_row(1, None)], 8), p)
    t = read_table(str(p), "clip")
    assert t.schema.field("audio_emb").type == pa.list_(pa.list_(pa.float16(), 8))
    got = t.column("audio_emb").to_pylist()
    assert got[1] is None
    np.testing.assert_array_equal(np.array(got[0], dtype=np.float16), emb)


def test_missing_metadata_is_a_clear_error(tmp_path):
    p = tmp_path / "foreign.parquet"
    pq.write_table(pa.table({"clip_id": ["x"]}), p)
    with pytest.raises(SchemaError, match="schema_version"):
        read_table(str(p), "clip")


def test_wrong_version_kind_and_columns_are_errors(tmp_path):
    s = clip_schema(8)
    with pytest.raises(SchemaError, match="not compatible"):
        check_schema(s.with_metadata({**s.metadata, b"mocha.schema_version": b"9.0"}), "clip")
    with pytest.raises(SchemaError, match="expected a 'ledger'"):
        check_schema(s, "ledger")
    broken = s.remove(s.get_field_index("track"))
    with pytest.raises(SchemaError, match="missing column 'track'"):
        check_schema(broken, "clip")
    retyped = s.set(s.get_field_index("fps"), pa.field("fps", pa.string()))
    with pytest.raises(SchemaError, match="column 'fps' is string"):
        check_schema(retyped, "clip")


def test_not_parquet_is_a_schema_error(tmp_path):
    p = tmp_path / "x.parquet"
    p.write_bytes(b"not parquet")
    with pytest.raises(SchemaError, match="not a readable Parquet"):
        read_table(str(p), "ledger")


def test_ledger_table_matches_schema():
    t = ledger_table([{"source_uri": "a", "status": "error", "reject_stage": "ingest", "reject_reason": "empty_file"}])
    assert t.schema.equals(ledger_schema(), check_metadata=True)
    check_schema(t.schema, "ledger")


def test_speaking_turns_round_trip_in_clip_and_ledger_shards(tmp_path):
    turns = [{"person": "Person1", "track": 3, "start_s": 0.1, "end_s": 2.0, "score": 2.5, "x": 0.25},
             {"person": None, "track": 5, "start_s": 2.04, "end_s": 4.0, "score": 1.25, "x": 0.75}]
    rows = [{**_clip_row(0), "speaking_turns": turns}, {**_clip_row(1), "speaking_turns": []}, _clip_row(2)]
    p = tmp_path / "a.parquet"
    pq.write_table(clip_table(rows, 8), p)
    got = read_table(str(p), "clip").column("speaking_turns").to_pylist()
    assert got[1] == [] and got[2] is None  # measured, nobody speaks / not measured
    assert [t["person"] for t in got[0]] == ["Person1", None] and got[0][1]["track"] == 5
    assert got[0][0]["start_s"] == pytest.approx(0.1) and got[0][1]["x"] == pytest.approx(0.75)
    led = ledger_table([{"source_uri": "a", "clip_id": "c0", "status": "t2v", "speaking_turns": turns}])
    assert led.column("speaking_turns").to_pylist()[0][0]["score"] == pytest.approx(2.5)


def test_files_of_an_older_minor_version_still_read(tmp_path):
    # 1.1 had no speaking_turns: still readable; a file of a later version without it breaks the contract
    s = clip_schema(8)
    old = s.remove(s.get_field_index("speaking_turns"))
    check_schema(old.with_metadata({**s.metadata, b"mocha.schema_version": b"1.1"}), "clip")
    with pytest.raises(SchemaError, match="missing column 'speaking_turns'"):
        check_schema(old, "clip")
    # 1.2 ledgers had no duplicate_of
    led = ledger_schema()
    old_led = led.remove(led.get_field_index("duplicate_of"))
    check_schema(old_led.with_metadata({**led.metadata, b"mocha.schema_version": b"1.2"}), "ledger")
    with pytest.raises(SchemaError, match="missing column 'duplicate_of'"):
        check_schema(old_led, "ledger")
    assert SCHEMA_VERSION == "1.3"
