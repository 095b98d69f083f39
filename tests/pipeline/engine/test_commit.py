"""The commit protocol: workers write shards under unique names, only the driver's commit record
makes them part of the dataset, and every reader trusts the records alone."""
from __future__ import annotations

import pyarrow.parquet as pq

from common.output import COMMITS, Output
from pipeline.audit.load import load_output
from pipeline.engine.writer import CommitLog, read_ledger, write_shards
from training.data.shards import discover


def _row(source: str, i: int, status: str = "rejected") -> dict:
    return {"source_uri": source, "source_sha256": "ab" * 32, "clip_id": f"{source}-{i}", "status": status,
            "reject_stage": "scenes", "reject_reason": "too_short", "start_s": float(i), "end_s": i + 1.0,
            "backends": "{}"}


def _seg(source: str, index: int = 0, count: int = 1) -> dict:
    return {"source": source, "index": index, "count": count, "start_s": 0.0, "end_s": 1.0, "duration_s": 1.0}


def test_only_committed_files_are_read_and_orphans_are_removed(tmp_path):
    out = Output.open(str(tmp_path))
    log = CommitLog(out)
    rec = write_shards(out, [_row("a", 0), _row("a", 1)], [_seg("a")])
    assert read_ledger(out).num_rows == 0  # written, not yet committed
    assert log.commit(rec)
    assert len(list((tmp_path / COMMITS).glob("*.json"))) == 1
    # a worker killed after writing, before its record reached the driver
    orphan = write_shards(out, [_row("b", 0)], [_seg("b")])
    assert sorted(read_ledger(out).column("clip_id").to_pylist()) == ["a-0", "a-1"]
    assert load_output(tmp_path).uncommitted_files == orphan["files"]
    log2 = CommitLog(Output.open(str(tmp_path)))
    assert log2.remove_orphans() == orphan["files"]
    assert not (tmp_path / orphan["files"][0]).exists() and (tmp_path / rec["files"][0]).exists()


def test_a_segment_is_never_committed_twice(tmp_path):
    out = Output.open(str(tmp_path))
    log = CommitLog(out)
    assert log.commit(write_shards(out, [_row("a", 0)], [_seg("a", 0, 2)]))
    # a retried task delivering the same segment again
    assert not log.commit(write_shards(out, [_row("a", 0)], [_seg("a", 0, 2)]))
    assert log.commit(write_shards(out, [_row("a", 1)], [_seg("a", 1, 2)]))
    assert sorted(read_ledger(out).column("clip_id").to_pylist()) == ["a-0", "a-1"]
    prog = CommitLog(Output.open(str(tmp_path))).progress()
    assert prog["a"].complete and prog["a"].segments_done == {0, 1}


def test_source_done_only_when_all_segments_are(tmp_path):
    out = Output.open(str(tmp_path))
    log = CommitLog(out)
    log.commit(write_shards(out, [_row("film", 0)], [_seg("film", 0, 3)]))
    log.commit(write_shards(out, [_row("film", 2)], [_seg("film", 2, 3)]))
    sp = CommitLog(Output.open(str(tmp_path))).progress()["film"]
    assert not sp.complete and sp.segments_done == {0, 2} and sp.count == 3


def test_trainer_discovers_committed_clip_shards_only(tmp_path):
    out = Output.open(str(tmp_path))
    log = CommitLog(out)
    clip = {**_row("a", 0, "t2v"), "track": "t2v", "start_frame": 0, "end_frame": 25, "fps": 25.0, "width": 32,
            "height": 32, "video": b"x"}
    rec = write_shards(out, [clip], [_seg("a")])
    assert log.commit(rec)
    write_shards(out, [{**clip, "clip_id": "stray"}], [_seg("b")])  # never committed
    files = [p for _fs, p in discover([str(tmp_path)])]
    assert [p.split("/")[-2:] for p in files] == [rec["files"][0].split("/")]
    assert pq.read_table(files[0]).column("clip_id").to_pylist() == ["a-0"]
