"""Run a curation job: preflight, the plan on a runner, shard writing, run.json, summary."""
from __future__ import annotations

import json
import logging
import platform
import sys
import time
from importlib import metadata

from common.fs import redact, write_bytes
from common.output import RUN_JSON, Output
from pipeline.engine.config import CurateConfig
from pipeline.engine.duplicates import deduplicate, lost_sources
from pipeline.engine.preflight import CurateError, audio_emb_dim, model_checks
from pipeline.engine.progress import CurateProgress
from pipeline.engine.runners import FACTS, RUNNERS
from pipeline.engine.summary import print_summary, summarize
from pipeline.engine.writer import CommitLog
from pipeline.source.ingest import expand_inputs
from pipeline.stages.language.config import mask_secret_args
from schemas.rows import SCHEMA_VERSION

log = logging.getLogger(__name__)

_VERSIONED = ["torch", "ray", "pyarrow", "av", "scenedetect", "silero-vad", "transformers", "diffusers",
              "onnxruntime", "opencv-python-headless", "demucs", "insightface", "mocha-data"]


def versions() -> dict:
    out = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def run_curate(cfg: CurateConfig, runner: str = "ray", console=None) -> dict:
    from rich.console import Console

    console = console or Console(stderr=True)
    if not cfg.inputs:
        raise CurateError("no inputs: pass files, directories, globs or URIs (or set `inputs:` in the config)")
    out = Output.open(cfg.output)
    started = time.time()

    missing = model_checks(cfg)
    if missing and cfg.run.strict_models:
        raise CurateError("--strict-models: missing models:\n  " + "\n  ".join(f"{s}: {m}" for s, m in missing))
    warnings = [f"{s}: {m} -> running the embedded fallback, labelled in `backends`" for s, m in missing]
    for w in warnings:
        console.print(f"[yellow]warning:[/yellow] {w}")

    items = expand_inputs(cfg.inputs, cfg.ingest)
    log_ = CommitLog(out)
    progress = log_.progress()
    if progress and not cfg.run.resume:
        raise CurateError(f"{redact(cfg.output)} already holds committed shards; use another --output or enable run.resume")
    orphans = log_.remove_orphans()
    if orphans:
        console.print(f"removed {len(orphans)} uncommitted shard file(s) left by an earlier run")
    todo, skipped = [], 0
    for item in items:
        sp = progress.get(redact(item["source_uri"]))
        if sp is not None and sp.complete:
            skipped += 1
        else:
            todo.append({**item, "done_segments": sorted(sp.segments_done)} if sp else item)
    if skipped:
        console.print(f"resume: {skipped} of {len(items)} inputs already committed in {redact(cfg.output)}, skipping them")

    stats: dict = {}
    dim = audio_emb_dim(cfg)
    this_run: list[dict] = []
    with CurateProgress(console, len(todo), progress, enabled=cfg.run.progress) as prog:
        def committed(rec: dict) -> None:
            this_run.append(rec)
            prog.committed(rec)

        # every input hashed, probed and fingerprinted first, so copies are known before any
        # is curated; the plan reuses these facts
        t0 = time.time()
        facts = FACTS[runner](todo, cfg) if todo else []
        t1 = time.time()
        plan, dedup = deduplicate(facts, log_, cfg, dim, on_commit=committed)
        t2 = time.time()
        for rec in RUNNERS[runner](plan, cfg, dim, stats) if plan else ():
            if log_.commit(rec):
                committed(rec)
        lost = lost_sources(plan, log_, cfg, dim, this_run, on_commit=committed)
        timings = {"facts_s": round(t1 - t0, 3), "dedup_s": round(t2 - t1, 3), "plan_s": round(time.time() - t2, 3)}
    if dedup.exact or dedup.near:
        console.print(f"duplicates: {dedup.exact} exact and {dedup.near} near copies of other inputs left out "
                      "(ledger rows duplicate_of / near_duplicate_of)")

    summary = summarize(out)
    run = {
        "schema_version": SCHEMA_VERSION,
        "config": redact_config(json.loads(cfg.model_dump_json())),
        "versions": versions(),
        "runner": runner,
        "command": [redact(a) for a in mask_secret_args(sys.argv)],
        "started_at": started,
        "finished_at": time.time(),
        "wall_s": round(time.time() - started, 3),
        "timings": timings,
        "inputs_this_run": len(todo),
        "inputs_skipped_resume": skipped,
        "duplicates": dedup.to_json(),
        "sources_lost": lost,
        "orphans_removed": len(orphans),
        "execution": stats,
        "warnings": warnings,
        "counts": summary,
    }
    write_bytes(out.fs, out.path(RUN_JSON), json.dumps(run, indent=1).encode())
    print_summary(summary, warnings, console)
    return run


_SECRET_WORDS = ("key", "secret", "token", "password", "credential")


def redact_config(node):
    """The config as recorded in run.json: URIs without inline credentials, and no value of a
    field whose name says it is a secret (names of environment variables are kept)."""
    if isinstance(node, dict):
        return {k: ("**********" if isinstance(v, str) and v and any(w in k.lower() for w in _SECRET_WORDS)
                    and not k.lower().endswith("_env") else redact_config(v)) for k, v in node.items()}
    if isinstance(node, list):
        return [redact_config(v) for v in node]
    return redact(node) if isinstance(node, str) else node
