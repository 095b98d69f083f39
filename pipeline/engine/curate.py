"""Run a curation job: preflight, the plan on a runner, shard writing, run.json, summary."""
from __future__ import annotations

import json
import logging
import os
import platform
import sys
import time
from importlib import metadata
from pathlib import Path

from pipeline.engine.config import CurateConfig
from pipeline.engine.preflight import CurateError, audio_emb_dim, model_checks
from pipeline.engine.runners import RUNNERS
from pipeline.engine.summary import print_summary, summarize
from pipeline.engine.writer import ShardWriter
from pipeline.finalize.grouping import group_clips
from pipeline.source.ingest import expand_inputs
from pipeline.stages.language.caption import load_tokenizer
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
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = console or Console(stderr=True)
    if not cfg.inputs:
        raise CurateError("no inputs: pass files, directories, globs or URIs (or set `inputs:` in the config)")
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()

    missing = model_checks(cfg)
    if missing and cfg.run.strict_models:
        raise CurateError("--strict-models: missing models:\n  " + "\n  ".join(f"{s}: {m}" for s, m in missing))
    warnings = [f"{s}: {m} -> running the embedded fallback, labelled in `backends`" for s, m in missing]
    for w in warnings:
        console.print(f"[yellow]warning:[/yellow] {w}")

    items = expand_inputs(cfg.inputs, cfg.ingest)
    writer = ShardWriter(out, audio_emb_dim(cfg), cfg.run.max_shard_bytes, cfg.run.max_shard_rows,
                         on_source=_source_hook(cfg))
    if cfg.run.resume:
        todo = [i for i in items if i["source_uri"] not in writer.done]
    else:
        if writer.done:
            raise CurateError(f"{out} already holds committed shards; use another --output or enable run.resume")
        todo = items
    skipped = len(items) - len(todo)
    if skipped:
        console.print(f"resume: {skipped} of {len(items)} inputs already committed in {out}, skipping them")

    rows_iter = RUNNERS[runner](todo, cfg) if todo else iter(())
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[clips]} clips"),
                  TimeElapsedColumn(), console=console, disable=not cfg.run.progress, transient=False) as prog:
        task = prog.add_task("sources", total=len(todo), clips=0)
        nclips = 0
        for row in rows_iter:
            done = writer.add(row)
            if row.get("clip_id") is not None:
                nclips += 1
            if done is not None:
                prog.update(task, advance=1, clips=nclips)
        writer.close()

    summary = summarize(out)
    run = {
        "schema_version": SCHEMA_VERSION,
        "config": json.loads(cfg.model_dump_json()),
        "versions": versions(),
        "runner": runner,
        "command": mask_secret_args(sys.argv),
        "started_at": started,
        "finished_at": time.time(),
        "wall_s": round(time.time() - started, 3),
        "inputs_this_run": len(todo),
        "inputs_skipped_resume": skipped,
        "warnings": warnings,
        "counts": summary,
    }
    tmp = out / "run.json.tmp"
    tmp.write_text(json.dumps(run, indent=1))
    os.replace(tmp, out / "run.json")
    print_summary(summary, warnings, console)
    return run


def _source_hook(cfg: CurateConfig):
    """Called by the writer with all rows of one finished source: multi-clip grouping of
    consecutive shots with the same characters (only kept clips are grouped)."""
    tokenizer = load_tokenizer(cfg.caption.tokenizer, cfg.run.models_dir) if cfg.caption.tokenizer else None

    def hook(rows: list[dict]) -> list[dict]:
        kept = [r for r in rows if r.get("status") in ("st2v", "t2v")]
        group_clips(kept, cfg.caption.max_group_clips, tokenizer=tokenizer, cfg=cfg.caption)
        return rows

    return hook
