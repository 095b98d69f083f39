"""The driver's passes around the plan: duplicates before it, lost sources after it.

Before: with the facts of every input (hash, probe, fingerprint: ``pipeline.engine.runners.FACTS``)
and what the output already holds, decide which inputs are copies (``pipeline.source.dedup``),
commit their ledger rows here in the driver, and hand the plan the rest. Fingerprints are kept
under ``_fingerprints/`` (one file per run, read only by later runs of the driver), so a later
run compares its new inputs with the sources committed before.

After: a source that neither committed nor got a retry row in this run (its task was dropped,
see ``max_errored_blocks`` in the Ray runner) gets an error row marked ``retry``.
"""
from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Optional

from common.fs import list_files, read_bytes, redact, write_bytes
from common.output import Output
from pipeline.engine.config import CurateConfig
from pipeline.engine.runners import write_segments
from pipeline.engine.writer import CommitLog
from pipeline.source.clips import failed_source_row
from pipeline.source.dedup import Candidate, Decision, exact_duplicates, near_duplicates
from pipeline.source.fingerprint import Fingerprint
from pipeline.source.ingest import source_problem
from pipeline.source.split import Segment

log = logging.getLogger(__name__)

FINGERPRINTS = "_fingerprints"


@dataclass
class DedupReport:
    exact: int = 0
    near: int = 0
    # near copies found but kept (ingest.near_duplicates.mode: keep): URI -> reason
    near_kept: dict[str, str] = field(default_factory=dict)
    fingerprinted: int = 0

    def to_json(self) -> dict:
        return {"exact_dropped": self.exact, "near_dropped": self.near, "near_kept": self.near_kept,
                "fingerprinted": self.fingerprinted}


def load_fingerprints(out: Output) -> dict[str, dict]:
    """URI -> fingerprint JSON of every source fingerprinted by earlier runs (latest wins)."""
    found: dict[str, dict] = {}
    for p in list_files(out.fs, out.path(FINGERPRINTS), ".json"):
        try:
            found.update(json.loads(read_bytes(out.fs, p)))
        except (OSError, ValueError) as e:  # a half-written file of a killed driver
            log.warning("ignoring unreadable fingerprint file %s: %s", p, e)
    return found


def save_fingerprints(out: Output, fps: dict[str, dict]) -> None:
    if fps:
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:12]}.json"
        write_bytes(out.fs, out.path(FINGERPRINTS, name), json.dumps(fps, separators=(",", ":")).encode())


def committed_sources(log_: CommitLog) -> dict[str, Optional[str]]:
    """URI -> sha256 of the sources holding curated work in the output (not copies' rows, not
    retry rows)."""
    out: dict[str, Optional[str]] = {}
    for r in log_.records:
        for s in r["segments"]:
            if s.get("retry") or s.get("duplicate"):
                continue
            out.setdefault(s["source"], s.get("source_sha256"))
            if s.get("source_sha256"):
                out[s["source"]] = s["source_sha256"]
    return out


def deduplicate(facts: list[dict], log_: CommitLog, cfg: CurateConfig, emb_dim: int,
                on_commit=None) -> tuple[list[dict], DedupReport]:
    """Commit the rows of the copies among ``facts``; returns the items left to curate (without
    their fingerprints) and what was found."""
    report = DedupReport()
    near_cfg = cfg.ingest.near_duplicates
    committed = committed_sources(log_)
    known = load_fingerprints(log_.out)
    cands: dict[str, Candidate] = {}
    for uri, sha in committed.items():
        fp = known.get(uri)
        cands[uri] = Candidate(uri, sha, True, fingerprint=Fingerprint.from_json(fp) if fp else None)
    fresh: dict[str, dict] = {}
    for item in facts:
        if source_problem(item) is not None or not item.get("source_sha256"):
            continue
        uri = redact(item["source_uri"])
        fp = item.get("fingerprint")
        if fp:
            fresh[uri] = fp
        prior = cands.get(uri)
        cands[uri] = Candidate(uri, item["source_sha256"], prior is not None,
                               pixels=int(item.get("src_width") or 0) * int(item.get("src_height") or 0),
                               duration_s=float(item.get("duration_s") or 0.0),
                               fingerprint=Fingerprint.from_json(fp) if fp else (prior.fingerprint if prior else None))
    report.fingerprinted = len(fresh)
    save_fingerprints(log_.out, fresh)

    decisions: dict[str, Decision] = exact_duplicates(cands.values())
    near = near_duplicates([c for u, c in cands.items() if u not in decisions], near_cfg)
    if near_cfg.mode == "drop":
        decisions.update(near)
    else:
        report.near_kept = {u: d.reason() for u, d in sorted(near.items())}

    todo, segs = [], []
    for item in facts:
        item = {k: v for k, v in item.items() if k != "fingerprint"}
        d = decisions.get(redact(item["source_uri"]))
        if d is None:
            todo.append(item)
            continue
        row = failed_source_row(item, "rejected", "ingest", d.reason())
        row["duplicate_of"] = d.of
        segs.append(Segment(item, 0, 1, rows=[row], duplicate=True))
        report.exact += d.kind == "exact"
        report.near += d.kind == "near"
    if segs:
        for rec in write_segments(log_.out, segs, cfg, emb_dim):
            if log_.commit(rec) and on_commit is not None:
                on_commit(rec)
    return todo, report


def lost_sources(todo: list[dict], log_: CommitLog, cfg: CurateConfig, emb_dim: int, this_run: list[dict],
                 on_commit=None) -> int:
    """Commit an error row (marked retry) for each item of ``todo`` that is not complete in the
    output and got no retry row from ``this_run`` (the records this run committed)."""
    progress = log_.progress()
    flagged = {s["source"] for r in this_run for s in r["segments"] if s.get("retry")}
    n = 0
    for item in todo:
        uri = redact(item["source_uri"])
        sp = progress.get(uri)
        if (sp is not None and sp.complete) or uri in flagged:
            continue
        index, count = 0, 1
        if sp is not None and sp.count:
            count = sp.count
            index = next(k for k in range(count) if k not in sp.segments_done)
        row = failed_source_row(item, "error", "ingest", "lost: no result came back for this source (its task failed or "
                                "its worker died; the Ray logs say why); a rerun retries it")
        seg = Segment(item, index, count, rows=[row], retry=True)
        for rec in write_segments(log_.out, [seg], cfg, emb_dim):
            if log_.commit(rec):
                n += 1
                if on_commit is not None:
                    on_commit(rec)
    return n
