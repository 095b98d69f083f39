"""``mocha audit OUTPUT_DIR``: write the audit report and exit non-zero on failed checks."""
from __future__ import annotations

import argparse
import json
import sys

from pipeline.audit.checks import CHECKS, parse_fail_on


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "audit",
        help="report what a curated output dir holds and check it",
        description="Read the st2v/t2v/ledger shards of OUTPUT_DIR (schema-checked) and write a "
                    "self-contained report.html plus summary.json. Checks: " + ", ".join(CHECKS) + ".",
    )
    p.add_argument("output_dir", metavar="OUTPUT_DIR", help="output dir of `mocha curate`")
    p.add_argument("--out", metavar="DIR", default=None, help="where to write the report (default OUTPUT_DIR/audit)")
    p.add_argument("--fail-on", metavar="CHECK,...", default="",
                   help="exit 1 when any of these checks has findings; 'all' for every check")
    p.add_argument("--json", action="store_true", help="also print the JSON summary to stdout")
    p.add_argument("--samples", type=int, default=4, metavar="N", help="gallery clips per shot size (default 4)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        fail_on = parse_fail_on(args.fail_on)
    except ValueError as e:
        print(f"mocha audit: {e}", file=sys.stderr)
        return 2
    if args.samples < 0:
        print("mocha audit: --samples must be >= 0", file=sys.stderr)
        return 2
    # matplotlib etc. only when actually auditing
    from pipeline.audit.report import write_report

    try:
        result = write_report(args.output_dir, args.out, fail_on, args.samples)
    except FileNotFoundError as e:
        print(f"mocha audit: {e}", file=sys.stderr)
        return 2
    s = result.summary
    if args.json:
        print(json.dumps(s, indent=1, default=str))
    t = s["totals"]
    print(f"audit: {t['inputs']} inputs, {t['clips']} clips, {t['hours']:.3f} h; report {result.html_path}",
          file=sys.stderr)
    for name, c in s["checks"].items():
        if not c["ok"]:
            first = c["findings"][0]
            print(f"  {'FAIL' if name in fail_on else 'warn'} {name}: {c['count']} finding(s), e.g. "
                  f"{first['clip_id'] or first['where']}: {first['message']}", file=sys.stderr)
    if s["backends"]["fallback_stages"]:
        print("  fallback backends: " + ", ".join(s["backends"]["fallback_stages"]), file=sys.stderr)
    if result.failed:
        print(f"mocha audit: failing checks: {', '.join(result.failed)}", file=sys.stderr)
        return 1
    return 0
