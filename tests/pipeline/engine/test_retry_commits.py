"""Rows of work to retry (a time limit, a dead worker): committed so the ledger shows them, not
counted as done, and replaced by the rows of the retried work."""
from __future__ import annotations

from common.output import Output
from pipeline.engine.config import load_config
from pipeline.engine.runners import write_segments
from pipeline.engine.writer import CommitLog, read_ledger
from pipeline.source.clips import failed_source_row
from pipeline.source.split import Segment


def _seg(uri: str, index: int, count: int, status: str, reason: str, retry: bool = False) -> Segment:
    src = {"source_uri": uri, "source_sha256": "ab" * 32}
    return Segment(src, index, count, rows=[failed_source_row(src, status, "clips", reason)], retry=retry)


def _commit(log: CommitLog, segs: list[Segment]) -> list[dict]:
    recs = write_segments(log.out, segs, load_config(), 768)
    for r in recs:
        assert log.commit(r)
    return recs


def _reasons(out) -> list[tuple[str, str]]:
    return sorted((r["source_uri"], r["reject_reason"]) for r in read_ledger(out).to_pylist())


def test_a_retry_segment_is_its_own_record_and_not_done(tmp_path):
    log = CommitLog(Output.open(str(tmp_path)))
    recs = _commit(log, [_seg("/v/a.mp4", 0, 1, "rejected", "too_short"),
                         _seg("/v/b.mp4", 0, 1, "error", "timeout: the clip cut did not finish", retry=True)])
    assert len(recs) == 2 and [s.get("retry", False) for r in recs for s in r["segments"]] == [False, True]
    progress = CommitLog(Output.open(str(tmp_path))).progress()
    assert progress["/v/a.mp4"].complete and "/v/b.mp4" not in progress
    assert ("/v/b.mp4", "timeout: the clip cut did not finish") in _reasons(tmp_path)


def test_the_retried_segment_supersedes_the_retry_rows_and_nothing_else(tmp_path):
    log = CommitLog(Output.open(str(tmp_path)))
    _commit(log, [_seg("/v/long.mp4", 0, 3, "rejected", "first"), _seg("/v/long.mp4", 1, 3, "error", "crashed: x", retry=True),
                  _seg("/v/long.mp4", 2, 3, "rejected", "third")])
    # a rerun does segment 1 again; the later segments' rows stay
    log = CommitLog(Output.open(str(tmp_path)))
    assert not log.progress()["/v/long.mp4"].complete
    _commit(log, [_seg("/v/long.mp4", 1, 3, "rejected", "second")])
    assert log.records[-1]["supersedes"]
    assert _reasons(tmp_path) == [("/v/long.mp4", "first"), ("/v/long.mp4", "second"), ("/v/long.mp4", "third")]
    again = CommitLog(Output.open(str(tmp_path)))
    assert again.progress()["/v/long.mp4"].complete
    # the superseded record's shard is an orphan now: removed by the next run
    assert len(again.remove_orphans()) == 1 and _reasons(tmp_path)[1] == ("/v/long.mp4", "second")


def test_another_segment_of_the_source_does_not_supersede_its_retry_row(tmp_path):
    log = CommitLog(Output.open(str(tmp_path)))
    _commit(log, [_seg("/v/long.mp4", 1, 3, "error", "crashed: y", retry=True)])
    _commit(log, [_seg("/v/long.mp4", 2, 3, "rejected", "third")])
    assert ("/v/long.mp4", "crashed: y") in _reasons(tmp_path)


def test_a_new_retry_row_replaces_the_old_one(tmp_path):
    log = CommitLog(Output.open(str(tmp_path)))
    _commit(log, [_seg("/v/b.mp4", 0, 1, "error", "timeout: first run", retry=True)])
    _commit(log, [_seg("/v/b.mp4", 0, 1, "error", "timeout: second run", retry=True)])
    assert _reasons(tmp_path) == [("/v/b.mp4", "timeout: second run")]
