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
    f = msub.add_parser("fetch", help="download models into the cache and record their checksums")
    f.add_argument("names", nargs="+", metavar="NAME")
    f.set_defaults(func=_fetch)
    v = msub.add_parser("verify", help="check cached files against their recorded sha256")
    v.add_argument("names", nargs="*", metavar="NAME", help="default: every fetched model")
    v.set_defaults(func=_verify)


def _list(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from common.weights import REGISTRY, is_fetched, models_dir

    t = Table(title=f"models (cache: {models_dir(args.models_dir)})")
    for col in ("name", "kind", "source", "licence", "used by", "status"):
        t.add_column(col)
    for e in REGISTRY.values():
        status = "in package" if e.kind == "package" else ("fetched" if is_fetched(e, args.models_dir) else "missing")
        t.add_row(e.name, e.kind, e.source, e.licence, e.used_by, status)
    Console().print(t)
    return 0


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
            print(f"{name}: fetched into {dest} (licence: {REGISTRY[name].licence})")
        except Exception as e:  # network errors, checksum mismatch
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
