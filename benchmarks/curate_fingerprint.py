"""Fingerprint of a curation run: every ledger row and clip with its ids, routing and scores,
and digests of the stored media, as sorted JSON. Two runs of the same code on the same inputs
give the same file, so a refactor that keeps behaviour can be shown to keep it:

    .venv/bin/python benchmarks/curate_fingerprint.py ../shared/data/real --json before.json
    ... change the code ...
    .venv/bin/python benchmarks/curate_fingerprint.py ../shared/data/real --json after.json
    diff before.json after.json

It runs `mocha curate` in a subprocess and reads the Parquet files with pyarrow only, so it
depends on the output contract, not on the package's internals.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
SCORES = ("status", "reject_stage", "reject_reason", "route_reason", "start_s", "end_s", "start_frame",
          "end_frame", "speech_ratio", "music_ratio", "num_faces", "shot_size", "sync_offset", "sync_conf",
          "sync_dist", "motion_score")
MEDIA = ("video", "audio", "audio_emb", "caption", "prompt", "faces", "speech_segments", "sync_shift_frames")


def _digest(v) -> str | None:
    if v is None:
        return None
    if isinstance(v, (bytes, bytearray)):
        return hashlib.sha256(v).hexdigest()[:16]
    return hashlib.sha256(json.dumps(v, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _tables(folder: Path):
    for f in sorted(folder.glob("*.parquet")) if folder.is_dir() else []:
        yield pq.read_table(f).to_pylist()


def fingerprint(out: Path) -> dict:
    ledger = [r for t in _tables(out / "ledger") for r in t]
    rows = sorted(({"source": Path(r["source_uri"]).name, "clip_id": r["clip_id"],
                    **{k: r.get(k) for k in SCORES}} for r in ledger),
                  key=lambda r: (r["source"], r["clip_id"] or "", r["reject_reason"] or ""))
    clips = {}
    for track in ("st2v", "t2v"):
        for t in _tables(out / track):
            for r in t:
                clips[r["clip_id"]] = {"track": track, **{k: _digest(r.get(k)) for k in MEDIA if k in r}}
    return {"ledger": rows, "clips": dict(sorted(clips.items()))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("inputs", nargs="+", help="what to curate (files, folders)")
    ap.add_argument("--json", required=True, help="write the fingerprint here")
    ap.add_argument("--runner", default="ray", choices=["ray", "local"])
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        cmd = [sys.executable, "-m", "mocha.cli", "curate", *a.inputs, "--output", str(out), "--no-progress",
               "--runner", a.runner, *[x for s in a.overrides for x in ("--set", s)]]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                              env={**os.environ, "RAY_AUTH_MODE": "disabled", "HF_HUB_OFFLINE": "1"})
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            return proc.returncode
        fp = fingerprint(out)
    Path(a.json).write_text(json.dumps(fp, indent=1, sort_keys=True))
    print(f"{len(fp['ledger'])} ledger rows, {len(fp['clips'])} clips -> {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
