"""Run a curation job: preflight, Ray (or in-process) execution, shard writing, run.json, summary."""
from __future__ import annotations

import json
import logging
import os
import platform
import sys
import time
from collections import Counter
from importlib import metadata
from pathlib import Path
from typing import Optional

from pipeline.config import CurateConfig
from pipeline.ingest import expand_inputs
from pipeline.models import ModelMissing, resolve_model
from pipeline.writer import ShardWriter, read_ledger
from schemas.rows import DEFAULT_AUDIO_EMB_DIM, SCHEMA_VERSION

log = logging.getLogger(__name__)

_VERSIONED = ["torch", "ray", "pyarrow", "av", "scenedetect", "silero-vad", "transformers", "diffusers",
              "onnxruntime", "opencv-python-headless", "demucs", "insightface", "mocha-data"]


class CurateError(RuntimeError):
    pass


def versions() -> dict:
    out = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def resolve_visual_models(cfg: CurateConfig):
    """The visual config with its model fields (paths or registry names) resolved to files.
    Raises ModelMissing naming the fix when a configured one is absent."""
    from pipeline.models import model_file

    v = cfg.visual.model_copy(deep=True)
    if v.faces.scrfd_onnx:
        # a fetched insightface pack holds the detector (det_*.onnx) beside recognition models
        v.faces.scrfd_onnx = model_file(v.faces.scrfd_onnx, "det_*.onnx", cfg.run.models_dir)
    if v.faces.yunet_onnx:
        v.faces.yunet_onnx = model_file(v.faces.yunet_onnx, "*.onnx", cfg.run.models_dir)
    if v.sync.syncnet_checkpoint:
        v.sync.syncnet_checkpoint = model_file(v.sync.syncnet_checkpoint, "*.model", cfg.run.models_dir)
    return v


def model_checks(cfg: CurateConfig) -> list[tuple[str, str]]:
    """(stage, problem) for every configured model that is not available locally. A model the
    config names explicitly (visual detectors, SyncNet) is an error when missing."""
    try:
        resolve_visual_models(cfg)
    except ModelMissing as e:
        raise CurateError(f"visual: {e}") from None
    missing = []
    if cfg.audio_embed.enabled:
        try:
            resolve_model(cfg.audio_embed.model, cfg.run.models_dir)
        except ModelMissing as e:
            missing.append(("audio_embed", str(e)))
    if cfg.music.backend != "snr":
        try:
            resolve_model(cfg.music.demucs_model, cfg.run.models_dir)
        except ModelMissing as e:
            if cfg.music.backend == "demucs":
                raise CurateError(f"music.backend=demucs but {e}") from None
            missing.append(("music", str(e)))
    return missing


def audio_emb_dim(cfg: CurateConfig) -> int:
    """Hidden size of the configured Wav2Vec2 (from its config, no weights loaded)."""
    try:
        path = resolve_model(cfg.audio_embed.model, cfg.run.models_dir)
        with open(Path(path) / "config.json") as f:
            return int(json.load(f)["hidden_size"])
    except (ModelMissing, OSError, KeyError, ValueError):
        return DEFAULT_AUDIO_EMB_DIM


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


def summarize(out: Path) -> dict:
    t = read_ledger(out).to_pylist()
    status = Counter(r["status"] for r in t)
    hours = Counter()
    for r in t:
        if r["status"] in ("st2v", "t2v") and r["start_s"] is not None:
            hours[r["status"]] += (r["end_s"] - r["start_s"]) / 3600.0
    rejects = Counter((r["reject_stage"] or "?", _reason_key(r["reject_reason"])) for r in t
                      if r["status"] in ("rejected", "error"))
    routes = Counter(_reason_key(r["route_reason"]) for r in t if r["status"] == "t2v")
    backends: dict[str, Counter] = {}
    for r in t:
        for stage, label in _backend_labels(json.loads(r["backends"] or "{}")):
            backends.setdefault(stage, Counter())[label] += 1
    return {
        "inputs": len({r["source_uri"] for r in t}),
        "clips": sum(1 for r in t if r["clip_id"] is not None),
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

    rows_iter = _rows(todo, cfg, runner) if todo else iter(())
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
        "command": sys.argv,
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
    from pipeline.captioning import load_tokenizer
    from pipeline.grouping import group_clips

    tokenizer = load_tokenizer(cfg.caption.tokenizer, cfg.run.models_dir) if cfg.caption.tokenizer else None

    def hook(rows: list[dict]) -> list[dict]:
        kept = [r for r in rows if r.get("status") in ("st2v", "t2v")]
        group_clips(kept, cfg.caption.max_group_clips, tokenizer=tokenizer, cfg=cfg.caption)
        return rows

    return hook


def local_cpus(cfg: CurateConfig) -> int:
    """Logical CPUs for the embedded Ray: at least what every actor pool plus one split task and
    one finalize task reserve at once. Actors hold their reservation for the whole run, so on a
    small machine a plan needing more than the core count would wait forever for a split slot;
    the OS shares the real cores instead."""
    import math

    from pipeline.plan import stage_plan

    r = cfg.resources
    need = r.split.num_cpus + r.finalize.num_cpus
    need += sum(res.num_cpus * max(1, res.actors) for _n, _f, res in stage_plan(cfg))
    return max(os.cpu_count() or 1, math.ceil(need))


def _rows(items: list[dict], cfg: CurateConfig, runner: str):
    from pipeline import plan

    if runner == "local":
        yield from plan.iter_local(items, cfg)
        return
    import ray

    if not ray.is_initialized():
        if cfg.run.ray_address:
            ray.init(address=cfg.run.ray_address, log_to_driver=False)
        else:
            ray.init(num_cpus=cfg.run.num_cpus or local_cpus(cfg), include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # our own progress display reports sources and clips
    ctx.print_on_execution_start = False
    yield from plan.iter_ray(items, cfg)
