"""``mocha data inspect``: check a curriculum against the shards before a long run.

Draws K samples through the real sampler for one stage (metadata only, nothing is decoded)
and prints the observed mix per track and st2v shot size next to the configured one, plus the
shards' totals.
"""
from __future__ import annotations

import json
import sys

from schemas.rows import SchemaError
from training.data.config import DataConfigError
from training.data.curriculum import CurriculumError
from training.data.inspect import inspect_mix
from training.data.shards import ShardError


def _print(rep: dict) -> None:
    print(f"stage {rep['stage']}: {rep['samples']} draws through the curriculum sampler")
    for title, part in (("track", rep["track"]), ("st2v shot size", rep["st2v_shot"])):
        if not part:
            continue
        print(f"{title:<22}{'configured':>12}{'effective':>11}{'drawn':>10}")
        for k, v in part.items():
            print(f"{k:<22}{v['configured']:>12.3f}{v['effective']:>11.3f}{v['drawn']:>10.3f}")
    t = rep["totals"]
    print(f"shards: {t['files']} files, {t['row_groups']} row groups, {t['rows']} rows, {t['samples']} samples "
          f"({t['groups']} multi-clip groups)")
    for k, n in t["per_track_shot"].items():
        print(f"  {k:<28}{n:>8}")


def _run(args) -> int:
    try:
        rep = inspect_mix(args.shards, args.stage, args.samples, args.config, args.set or [])
    except (DataConfigError, CurriculumError, ShardError, SchemaError) as e:
        print(f"mocha data inspect: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(rep, indent=2))
    else:
        _print(rep)
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("data", help="trainer data: inspect the curriculum over shards")
    sub = p.add_subparsers(dest="data_command", metavar="ACTION")
    sub.required = True
    q = sub.add_parser("inspect", help="draw samples for a stage and compare the mix with the configured one")
    q.add_argument("shards", nargs="+", help="shard roots (curate output dirs, folders or Parquet files)")
    q.add_argument("--stage", type=int, required=True, help="curriculum stage to draw for")
    q.add_argument("--samples", type=int, default=10000, help="number of draws (default 10000)")
    q.add_argument("--config", default=None, help="data YAML (default: embedded defaults)")
    q.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a data config field")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=_run)
