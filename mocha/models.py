"""`mocha models list|fetch|verify`: the weights registry on the command line."""
from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser("models", help="list, fetch and verify model weights",
                       description="Model weights used by the pipeline and the trainer. Nothing is "
                       "downloaded at run time: fetch once (needs network), then runs are offline.")
    p.add_argument("--models-dir", help="cache dir (default: $MOCHA_MODELS_DIR or ~/.cache/mocha/models)")
    msub = p.add_subparsers(dest="models_cmd", metavar="ACTION")
    msub.required = True
    ls = msub.add_parser("list", help="show the registry, licences and what is in the cache")
    ls.set_defaults(func=_list)
    f = msub.add_parser("fetch", help="download pinned models into the cache, verifying every file before use")
    f.add_argument("names", nargs="+", metavar="NAME")
    f.set_defaults(func=_fetch)
    v = msub.add_parser("verify", help="re-check cached files against their recorded and pinned sha256")
    v.add_argument("names", nargs="*", metavar="NAME", help="default: every fetched model")
    v.set_defaults(func=_verify)


def _list(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from common.weights import REGISTRY, is_fetched, models_dir, pin_problems

    t = Table(title=f"models (cache: {models_dir(args.models_dir)})")
    for col in ("name", "kind", "source", "pin", "licence", "used by", "status"):
        t.add_column(col)
    for e in REGISTRY.values():
        status = "in package" if e.kind == "package" else ("fetched" if is_fetched(e, args.models_dir) else "missing")
        t.add_row(e.name, e.kind, e.source, _pin(e, pin_problems(e)), e.licence, e.used_by, status)
    Console().print(t)
    return 0


def _pin(entry, problems) -> str:
    if problems:
        return "UNPINNED"
    if entry.kind == "hf":
        return f"commit {entry.revision[:12]}"
    if entry.kind == "url":
        return f"sha256 of {len(entry.files)} file{'s' if len(entry.files) > 1 else ''}"
    return "-"


def _fetch(args) -> int:
    from common.weights import REGISTRY, fetch

    rc = 0
    for name in args.names:
        if name not in REGISTRY:
            print(f"error: unknown model {name!r}; `mocha models list` shows the registry", file=sys.stderr)
            rc = 2
            continue
        try:
            dest = fetch(name, args.models_dir)
            print(f"{name}: fetched and verified into {dest} (licence: {REGISTRY[name].licence})")
        except Exception as e:  # network errors, an unpinned entry, a checksum mismatch (nothing is kept)
            print(f"error: {name}: fetch failed: {e}", file=sys.stderr)
            rc = 1
    return rc


def _verify(args) -> int:
    from common.weights import REGISTRY, is_fetched, verify

    names = args.names or [n for n, e in REGISTRY.items() if e.kind != "package" and is_fetched(e, args.models_dir)]
    if not names:
        print("no fetched models to verify")
        return 0
    bad = 0
    for n in names:
        problems = verify(n, args.models_dir)
        print(f"{n}: " + ("ok" if not problems else "; ".join(problems)))
        bad += bool(problems)
    return 1 if bad else 0
