"""The end-of-run summary: counts, hours, rejects by reason, and which backend produced each
stage's scores, from the committed ledger."""
from __future__ import annotations

import json
from collections import Counter
from typing import Optional

from common.output import Output
from pipeline.engine.writer import iter_ledger

_COLUMNS = ("status", "clip_id", "start_s", "end_s", "reject_stage", "reject_reason", "route_reason", "backends")


def _reason_key(reason: Optional[str]) -> str:
    if not reason:
        return "?"
    return reason.split(":")[0].split(" ")[0]


def _backend_labels(backends: dict, prefix: str = ""):
    """(stage, backend name) pairs; a composite stage (visual: {faces: ..., sync: ...}) yields
    one pair per sub-stage."""
    for stage, info in backends.items():
        name = f"{prefix}{stage}"
        if isinstance(info, dict) and "backend" not in info and any(isinstance(v, dict) for v in info.values()):
            yield from _backend_labels(info, f"{name}.")
        elif isinstance(info, dict):
            yield name, str(info.get("backend") or info.get("model") or "?")
        else:
            yield name, str(info)


def summarize(out: Output) -> dict:
    """Counts over the committed ledger, read one file at a time (the driver's memory does not
    grow with the number of clips)."""
    records = out.commit_records()
    status, hours, rejects, routes = Counter(), Counter(), Counter(), Counter()
    backends: dict[str, Counter] = {}
    clips = 0
    for table in iter_ledger(out, _COLUMNS, records):
        for r in table.to_pylist():
            status[r["status"]] += 1
            clips += r["clip_id"] is not None
            if r["status"] in ("st2v", "t2v") and r["start_s"] is not None:
                hours[r["status"]] += (r["end_s"] - r["start_s"]) / 3600.0
            if r["status"] in ("rejected", "error"):
                rejects[(r["reject_stage"] or "?", _reason_key(r["reject_reason"]))] += 1
            if r["status"] == "t2v":
                routes[_reason_key(r["route_reason"])] += 1
            for stage, label in _backend_labels(json.loads(r["backends"] or "{}")):
                backends.setdefault(stage, Counter())[label] += 1
    return {
        "inputs": len({seg["source"] for rec in records for seg in rec["segments"]}),
        "clips": clips,
        "status": dict(status),
        "hours": {k: round(v, 6) for k, v in hours.items()},
        "rejects": {f"{s}/{k}": n for (s, k), n in sorted(rejects.items())},
        "t2v_reasons": dict(routes),
        "backends": {s: dict(c) for s, c in backends.items()},
    }


def print_summary(summary: dict, warnings: list[str], console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console(stderr=True)
    t = Table(title="curation summary")
    t.add_column("what")
    t.add_column("value", justify="right")
    t.add_row("inputs", str(summary["inputs"]))
    t.add_row("clips", str(summary["clips"]))
    for track in ("st2v", "t2v"):
        t.add_row(f"{track} clips", str(summary["status"].get(track, 0)))
        t.add_row(f"{track} hours", f"{summary['hours'].get(track, 0.0):.4f}")
    for k in ("rejected", "error"):
        t.add_row(k, str(summary["status"].get(k, 0)))
    console.print(t)
    if summary["rejects"]:
        r = Table(title="rejects by stage / reason")
        r.add_column("stage/reason")
        r.add_column("rows", justify="right")
        for k, n in summary["rejects"].items():
            r.add_row(k, str(n))
        console.print(r)
    if summary["t2v_reasons"]:
        console.print("t2v (no usable speech) because: " + ", ".join(f"{k}={n}" for k, n in summary["t2v_reasons"].items()))
    if summary["backends"]:
        # what produced the scores, so a fallback-built dataset is obvious at the end of the run
        console.print("backends: " + "; ".join(f"{stage}: " + ", ".join(f"{label} x{n}" for label, n in c.items())
                                               for stage, c in sorted(summary["backends"].items())))
    for w in warnings:
        console.print(f"[yellow]warning:[/yellow] {w}")
