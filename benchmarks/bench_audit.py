"""Audit time for 10,000 synthetic rows and for shards curated from ../shared/data/real.

    .venv/bin/python benchmarks/bench_audit.py [--rows 10000] [--emb-frames 50] [--real-output DIR]

Synthetic rows carry a tiny real mp4 and (st2v) a 768-dim float16 embedding per video frame
(50 frames = a 2 s clip at 25 fps), so reading the embedding column's validity is measured at
a realistic size. Without --real-output the real part curates three short files first
(curation time printed apart, not counted in the audit time)."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.audit import plots, report  # noqa: E402
from pipeline.audit.checks import run_checks  # noqa: E402
from pipeline.audit.load import load_output  # noqa: E402
from tests.helpers.synthetic_shards import synthetic_output  # noqa: E402

REAL_INPUTS = ("closeup_talk_hdtf_katiehill.mp4", "face_no_audio_stream_lp_d13.mp4",
               "cuts_movie_goldeneye_vfr_noaudio.mp4")


def timed(label: str, fn, *a, **kw):
    t = time.perf_counter()
    out = fn(*a, **kw)
    dt = time.perf_counter() - t
    print(f"  {label:<28s} {dt:8.2f} s")
    return out, dt


def phases(out: Path, report_dir: Path) -> None:
    data, _ = timed("load (schema-checked)", load_output, out)
    timed("checks", run_checks, data)
    (summary, series), _ = timed("summary (incl. checks)", report.summarize, data)
    timed("funnel chart", plots.funnel_chart, summary["funnel"]["steps"])
    timed("score histograms", plots.histograms, series, report.SCORE_UNITS)
    timed("gallery (thumbnails)", report._gallery, data, 4)
    res, total = timed("TOTAL write_report", report.write_report, out, report_dir)
    t = res.summary["totals"]
    size = res.html_path.stat().st_size / 1e6
    print(f"  -> {t['clips']} kept clips, {res.summary['funnel']['clip_rows']} ledger clip rows, "
          f"report {size:.2f} MB, checks ok={res.summary['ok']}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10_000, help="ledger clip rows (kept + rejected)")
    ap.add_argument("--emb-frames", type=int, default=50)
    ap.add_argument("--real-output", type=Path, default=None, help="an existing `mocha curate` output dir")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        print(f"synthetic: {args.rows} rows, {args.emb_frames}x768 embeddings per st2v row")
        t = time.perf_counter()
        out = synthetic_output(tmp / "syn", args.rows, dim=768, emb_frames=args.emb_frames, sources=200)
        mb = sum(f.stat().st_size for f in out.rglob("*.parquet")) / 1e6
        print(f"  (built in {time.perf_counter() - t:.1f} s, {mb:.0f} MB of parquet)")
        phases(out, tmp / "syn_audit")

        real_out = args.real_output
        real_dir = Path(os.environ.get("MOCHA_SHARED_DIR", ROOT.parent / "shared")) / "data" / "real"
        if real_out is None and (real_dir / "MANIFEST.md").is_file():
            real_out = tmp / "real"
            t = time.perf_counter()
            mocha = Path(sys.executable).with_name("mocha")
            r = subprocess.run([str(mocha), "curate", *[str(real_dir / f) for f in REAL_INPUTS],
                                "--output", str(real_out), "--no-progress"], capture_output=True, text=True)
            if r.returncode != 0:
                print(f"real: mocha curate failed ({r.returncode}): {r.stderr[-800:]}")
                return 1
            print(f"real: {len(REAL_INPUTS)} files of {real_dir} (curated in {time.perf_counter() - t:.1f} s)")
        elif real_out is None:
            print("real: skipped (no ../shared/data/real and no --real-output)")
            return 0
        else:
            print(f"real: {real_out}")
        phases(real_out, tmp / "real_audit")
    return 0


if __name__ == "__main__":
    sys.exit(main())
