"""The media fuzz corpus through `mocha curate`, figures printed, never asserted.

Builds the seeded hostile corpus of ``tests/helpers/fuzz_corpus.py`` (``--size`` inputs,
``--seed``) from the synthetic bases and, when the real data is there, one real close-up;
curates it in one run while killing ``--kill`` per-source sandbox children with SIGKILL in the
middle of their work (what the OOM killer does to a decoder), then reruns the same command
so the killed sources are retried. Prints: inputs, how many became clips (st2v / t2v),
rejects and errors by reason code, timeouts and crashes survived, segments marked for retry
and what the rerun left of them, wall time and cost per input, and the outcome of each family.

usage: .venv/bin/python benchmarks/bench_fuzz.py [--size 300] [--seed 0] [--kill 3]
           [--runner ray|local] [--real DIR] [--keep DIR] [--set KEY=VALUE ...]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

REAL_CLIP = "closeup_talk_hdtf_katiehill.mp4"
RANK = {"st2v": 0, "t2v": 1, "rejected": 2, "error": 3}


def code(reason: str) -> str:
    """The reason's code: `unreadable_media: cannot open ...` -> `unreadable_media`."""
    m = re.match(r"[A-Za-z0-9_]+", reason or "")
    return m.group(0) if m else repr((reason or "")[:30])


def table(title: str, counts: Counter, total: int | None = None) -> None:
    print(f"\n{title}")
    for k, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        share = f"  {100 * n / total:5.1f} %" if total else ""
        print(f"  {n:5d}  {k}{share}")


def sandbox_children(root_pid: int) -> list:
    """Live processes under ``root_pid`` whose parent is a multiprocessing forkserver: the
    sandbox's per-call children (hash and probe, scene scan, clip cut)."""
    import psutil

    try:
        procs = psutil.Process(root_pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    out = []
    for p in procs:
        try:
            if "forkserver" in " ".join(p.parent().cmdline()) and "forkserver" in " ".join(p.cmdline()):
                out.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, AttributeError):
            pass
    return out


def killer(root_pid: int, n: int, killed: list, stop: threading.Event, gap_s: float = 3.0, min_age_s: float = 0.5) -> None:
    """SIGKILL ``n`` sandbox children that have been at work at least ``min_age_s``, ``gap_s``
    apart. A child that has sent its result but not yet exited dies without a trace."""
    import psutil

    while len(killed) < n and not stop.wait(0.05):
        for p in sandbox_children(root_pid):
            try:
                age = time.time() - p.create_time()
                if age >= min_age_s:
                    p.send_signal(signal.SIGKILL)
                    killed.append((p.pid, round(age, 2)))
                    stop.wait(gap_s)
                    break
            except psutil.NoSuchProcess:
                pass


def curate(cmd: list[str], env: dict, kill: int) -> tuple[subprocess.CompletedProcess, float, list[tuple[int, float]]]:
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed: list[tuple[int, float]] = []
    stop = threading.Event()
    th = threading.Thread(target=killer, args=(proc.pid, kill, killed, stop), daemon=True)
    th.start()
    stdout, stderr = proc.communicate()
    stop.set()
    th.join()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        print(stdout[-3000:], stderr[-3000:])
        raise SystemExit(f"mocha curate exited {proc.returncode}")
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr), wall, killed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=300, help="hostile inputs (at least)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--kill", type=int, default=3, help="sandbox children to kill with SIGKILL mid-run")
    ap.add_argument("--runner", default="ray", choices=["ray", "local"])
    ap.add_argument("--real", default=str(ROOT.parent / "shared" / "data" / "real"))
    ap.add_argument("--keep", help="build the corpus and the output here (kept) instead of a temp dir")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="passed to mocha curate")
    args = ap.parse_args()

    from tests.helpers.fuzz_corpus import build_corpus

    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_fuzz_"))
    corpus_dir, out = base / "corpus", base / "out"
    real = Path(args.real) / REAL_CLIP
    t0 = time.perf_counter()
    corpus = build_corpus(corpus_dir, args.size, args.seed, real=[real] if real.is_file() else None)
    build_s = time.perf_counter() - t0
    kinds = {str(f.path.resolve()): f.kind for f in corpus.inputs}
    kinds.update({str(p.resolve()): "good" for p in corpus.good})

    cmd = [sys.executable, "-m", "mocha.cli", "curate", str(corpus_dir), "--output", str(out), "--no-progress",
           "--runner", args.runner] + [x for kv in args.set for x in ("--set", kv)]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
    proc, wall, killed = curate(cmd, env, args.kill)

    first = ledger_facts(out)
    run = json.loads((out / "run.json").read_text())
    n = len(kinds)
    rows, by_status = first["rows"], first["by_status"]
    missing = sorted(u for u in kinds if u not in rows)
    outcome = {u: min((r["status"] for r in rs), key=RANK.get) for u, rs in rows.items()}
    rejects = Counter(f"{r['reject_stage']}/{code(r['reject_reason'])}" for rs in rows.values() for r in rs if r["status"] == "rejected")
    errors = Counter(f"{r['reject_stage']}/{code(r['reject_reason'])}" for rs in rows.values() for r in rs if r["status"] == "error")

    print(f"fuzz corpus: seed {args.seed}, {len(corpus.inputs)} hostile inputs + {len(corpus.good)} well-formed sources "
          f"({'with' if real.is_file() else 'without'} the real clip); runner {args.runner}, {os.cpu_count()} cores")
    print(f"inputs: {n}; in the ledger: {n - len(missing)}; missing: {len(missing)}; "
          f"rows without a reason: {first['no_reason']}; mocha curate exit status {proc.returncode}")
    for u in missing:
        print(f"  MISSING {u}")
    clip_sources = Counter(outcome[u] for u in kinds if u in rows)
    print(f"inputs that became clips: {clip_sources['st2v'] + clip_sources['t2v']} "
          f"(st2v {clip_sources['st2v']}, t2v {clip_sources['t2v']}); clips stored: st2v {by_status['st2v']}, "
          f"t2v {by_status['t2v']}; rejected rows {by_status['rejected']}, error rows {by_status['error']}")
    print(f"duplicates dropped: exact {run['duplicates']['exact_dropped']}, near {run['duplicates']['near_dropped']}")
    print(f"sandbox children killed with SIGKILL during the run: {len(killed)} "
          f"(their age when killed, s: {[a for _, a in killed]})")
    print(f"timeouts survived: {len(first['timeouts'])} inputs; crashes survived: {len(first['crashes'])} inputs; "
          f"segments marked for a rerun to retry: {first['retry_segments']}")
    for u in first["timeouts"] + first["crashes"]:
        print(f"  {Path(u).name}: {next(r['reject_reason'] for r in rows[u] if r['reject_reason'])[:160]}")
    print(f"wall: corpus build {build_s:.1f} s; curate {wall:.1f} s ({run.get('timings')}); "
          f"{wall / n:.2f} s per input")
    if first["retry_segments"]:
        _, wall2, _ = curate(cmd, env, 0)
        again = ledger_facts(out)
        left = sorted(u for u in kinds if u not in again["rows"])
        fixed = [u for u in first["crashes"] + first["timeouts"] if not any(
            (r["reject_reason"] or "").startswith(("crashed:", "timeout:")) for r in again["rows"].get(u, []))]
        print(f"rerun ({wall2:.1f} s): segments still marked for retry {again['retry_segments']}; "
              f"retried inputs now without a crash/timeout row {len(fixed)} of {len(first['crashes'] + first['timeouts'])}; "
              f"inputs missing from the ledger {len(left)}; clips stored: st2v {again['by_status']['st2v']}, "
              f"t2v {again['by_status']['t2v']}")
    table("rejects by stage/reason code (rows, first run)", rejects, by_status["rejected"])
    table("errors by stage/reason code (rows, first run)", errors, by_status["error"])
    fam = defaultdict(Counter)
    for u, k in kinds.items():
        fam[k][outcome.get(u, "MISSING")] += 1
    print("\noutcome per family (inputs; best row of each input; first run)")
    for k in sorted(fam):
        print(f"  {k:18s} " + "  ".join(f"{s} {c}" for s, c in sorted(fam[k].items(), key=lambda kv: RANK.get(kv[0], 9))))
    if args.keep:
        print(f"\noutput kept in {base}")


def ledger_facts(out: Path) -> dict:
    from common.output import Output
    from pipeline.engine.writer import read_ledger

    rows = defaultdict(list)
    for r in read_ledger(out).to_pylist():
        rows[r["source_uri"]].append(r)
    reasons = [(u, r["reject_reason"] or "") for u, rs in rows.items() for r in rs]
    return {
        "rows": rows,
        "by_status": Counter(r["status"] for rs in rows.values() for r in rs),
        "no_reason": sum(1 for rs in rows.values() for r in rs if r["status"] in ("rejected", "error") and not r["reject_reason"]),
        "timeouts": sorted({u for u, why in reasons if why.startswith("timeout:")}),
        "crashes": sorted({u for u, why in reasons if why.startswith("crashed:")}),
        "retry_segments": sum(1 for rec in Output.open(str(out)).commit_records() for s in rec["segments"] if s.get("retry")),
    }


if __name__ == "__main__":
    main()
