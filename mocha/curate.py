"""`mocha curate`: run the curation pipeline."""
from __future__ import annotations

import sys

HELP = """Curate raw videos into st2v / t2v Parquet shards plus a ledger that accounts for every input
and clip. Runs on an embedded local Ray by default; --ray-address joins a cluster. Every config
field can be set with --set section.key=value (see configs/curate.yaml for all of them).

examples:
  mocha curate videos/ --output out/
  mocha curate 's3://bucket/raw/*.mp4' --config configs/curate.yaml --output s3out/ --set scenes.max_clip_s=8
  ray job submit --address http://HEAD:8265 --working-dir . -- mocha curate s3://bucket/raw --output /mnt/out --ray-address auto
"""


def register(sub) -> None:
    import argparse

    p = sub.add_parser("curate", help="curate videos into training shards", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="*", help="files, directories, globs or pyarrow filesystem URIs")
    p.add_argument("-o", "--output", help="output directory (st2v/, t2v/, ledger/, run.json)")
    p.add_argument("-c", "--config", help="YAML config (default: embedded defaults)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set speech.min_speech_ratio=0.6 (repeatable)")
    p.add_argument("--ray-address", help="join this Ray cluster ('auto' inside `ray job submit`)")
    p.add_argument("--strict-models", action="store_true", default=None,
                   help="fail before any work if a configured model is missing (production runs)")
    p.add_argument("--runner", choices=["ray", "local"], default="ray",
                   help="ray (default) or local: the same stages in this process, for debugging")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs, CI)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")
    p.set_defaults(func=run)


def run(args) -> int:
    import yaml

    from common.config import ConfigError
    from pipeline.engine.config import load_config
    from pipeline.engine.curate import run_curate
    from pipeline.engine.preflight import CurateError

    overrides = list(args.overrides)
    if args.ray_address:
        overrides.append(f"run.ray_address={args.ray_address}")
    if args.strict_models:
        overrides.append("run.strict_models=true")
    if args.no_progress:
        overrides.append("run.progress=false")
    try:
        cfg = load_config(args.config, overrides, inputs=args.inputs or None, output=args.output)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.print_config:
        print(yaml.safe_dump(cfg.model_dump(), sort_keys=False))
        return 0
    try:
        run = run_curate(cfg, runner=args.runner)
    except CurateError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"shards written to {cfg.output} (st2v/, t2v/, ledger/, run.json)")
    return 0 if run else 1
