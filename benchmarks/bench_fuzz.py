"""The media fuzz corpus through `mocha curate`, figures printed, never asserted.

Builds the seeded hostile corpus of ``tests/helpers/fuzz_corpus.py`` (``--size`` inputs,
``--seed``) from the synthetic bases and, when the real data is there, one real close-up; adds
``--hang`` named pipes that never get data (a decode that never ends: the per-source time limit
must stop it); curates everything in one run and prints: inputs, how many became clips
(st2v / t2v), rejects and errors by reason code, timeouts and crashes survived and segments
left for a rerun to retry, wall time and cost per input, and the outcome of each family.

usage: .venv/bin/python benchmarks/bench_fuzz.py [--size 300] [--seed 0] [--hang 2]
           [--runner ray|local] [--real DIR] [--keep DIR] [--set KEY=VALUE ...]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=300, help="hostile inputs (at least)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hang", type=int, default=2, help="named pipes that never get data")
    ap.add_argument("--runner", default="ray", choices=["ray", "local"])
    ap.add_argument("--real", default=str(ROOT.parent / "shared" / "data" / "real"))
    ap.add_argument("--keep", help="build the corpus and the output here (kept) instead of a temp dir")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="passed to mocha curate")
    args = ap.parse_args()

    from common.output import Output
    from pipeline.engine.writer import read_ledger
    from tests.helpers.fuzz_corpus import build_corpus

    base = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_fuzz_"))
    corpus_dir, out = base / "corpus", base / "out"
    real = Path(args.real) / REAL_CLIP
    t0 = time.perf_counter()
    corpus = build_corpus(corpus_dir, args.size, args.seed, real=[real] if real.is_file() else None)
    build_s = time.perf_counter() - t0
    kinds = {str(f.path.resolve()): f.kind for f in corpus.inputs}
    kinds.update({str(p.resolve()): "good" for p in corpus.good})
    for k in range(args.hang):
        fifo = corpus_dir / "fuzz" / f"zz_hang_{k}.mp4"
        if not fifo.exists():
            os.mkfifo(fifo)
        kinds[str(fifo.resolve())] = "hang (named pipe)"

    cmd = [sys.executable, "-m", "mocha.cli", "curate", str(corpus_dir), "--output", str(out), "--no-progress",
           "--runner", args.runner] + [x for kv in args.set for x in ("--set", kv)]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        print(proc.stdout[-3000:], proc.stderr[-3000:])
        raise SystemExit(f"mocha curate exited {proc.returncode}")

    rows = defaultdict(list)
    for r in read_ledger(out).to_pylist():
        rows[r["source_uri"]].append(r)
    run = json.loads((out / "run.json").read_text())
    n = len(kinds)
    missing = sorted(u for u in kinds if u not in rows)
    no_reason = [u for u, rs in rows.items() for r in rs if r["status"] in ("rejected", "error") and not r["reject_reason"]]
    outcome = {u: min((r["status"] for r in rs), key=RANK.get) for u, rs in rows.items()}
    by_status = Counter(r["status"] for rs in rows.values() for r in rs)
    rejects = Counter(f"{r['reject_stage']}/{code(r['reject_reason'])}" for rs in rows.values() for r in rs if r["status"] == "rejected")
    errors = Counter(f"{r['reject_stage']}/{code(r['reject_reason'])}" for rs in rows.values() for r in rs if r["status"] == "error")
    timeouts = sorted({u for u, rs in rows.items() for r in rs if (r["reject_reason"] or "").startswith("timeout:")})
    crashes = sorted({u for u, rs in rows.items() for r in rs if (r["reject_reason"] or "").startswith("crashed:")})
    retry_segments = sum(1 for rec in Output.open(str(out)).commit_records() for s in rec["segments"] if s.get("retry"))

    print(f"fuzz corpus: seed {args.seed}, {len(corpus.inputs)} hostile inputs + {args.hang} hanging pipes "
          f"+ {len(corpus.good)} well-formed sources ({'with' if real.is_file() else 'without'} the real clip); "
          f"runner {args.runner}, {os.cpu_count()} cores")
    print(f"inputs: {n}; in the ledger: {sum(1 for u in kinds if u in rows)}; missing: {len(missing)}; "
          f"rows without a reason: {len(no_reason)}; mocha curate exit status {proc.returncode}")
    for u in missing:
        print(f"  MISSING {u}")
    clip_sources = Counter(outcome[u] for u in kinds if u in rows)
    print(f"inputs that became clips: {clip_sources['st2v'] + clip_sources['t2v']} "
          f"(st2v {clip_sources['st2v']}, t2v {clip_sources['t2v']}); clips stored: st2v {by_status['st2v']}, "
          f"t2v {by_status['t2v']}; rejected rows {by_status['rejected']}, error rows {by_status['error']}")
    print(f"duplicates dropped: exact {run['duplicates']['exact_dropped']}, near {run['duplicates']['near_dropped']}")
    print(f"timeouts survived: {len(timeouts)} inputs; crashes survived: {len(crashes)} inputs; "
          f"segments marked for a rerun to retry: {retry_segments}")
    for u in timeouts + crashes:
        print(f"  {Path(u).name}: {next(r['reject_reason'] for r in rows[u] if r['reject_reason'])[:140]}")
    print(f"wall: corpus build {build_s:.1f} s; curate {wall:.1f} s ({run.get('timings')}); "
          f"{wall / n:.2f} s per input")
    table("rejects by stage/reason code (rows)", rejects, by_status["rejected"])
    table("errors by stage/reason code (rows)", errors, by_status["error"])
    fam = defaultdict(Counter)
    for u, k in kinds.items():
        fam[k][outcome.get(u, "MISSING")] += 1
    print("\noutcome per family (inputs; best row of each input)")
    for k in sorted(fam):
        print(f"  {k:18s} " + "  ".join(f"{s} {c}" for s, c in sorted(fam[k].items(), key=lambda kv: RANK.get(kv[0], 9))))
    print(f"\noutput kept in {base}" if args.keep else "")


if __name__ == "__main__":
    main()
