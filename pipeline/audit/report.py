"""Summary numbers, the self-contained HTML page and the JSON summary of an audit."""
from __future__ import annotations

import html
import json
import math
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from common.fs import ensure_dir, filesystem, is_uri, join, write_bytes
from pipeline.audit import plots
from pipeline.audit.checks import CHECKS, Finding, caption_validator, flatten_backends, parse_backends, run_checks
from pipeline.audit.load import AuditData, load_output, read_videos
from schemas.rows import SCHEMA_VERSION, SHOT_SIZES

# Pipeline order of stages, so the funnel reads top to bottom as the data
# flowed; stages a run reports under other names are appended after these.
STAGE_ORDER = ("ingest", "probe", "scenes", "split", "clips", "cut", "motion", "speech", "music", "audio_embed",
               "faces", "sync", "lipsync", "speakers", "character", "caption", "route", "finalize", "write")
SCORES = ("speech_ratio", "music_ratio", "sync_offset", "sync_conf", "sync_dist", "motion_score",
          "num_faces", "face_height_ratio", "speech_attribution", "duration_s")
SCORE_UNITS = {"sync_offset": "frames @25fps", "motion_score": "px/frame", "duration_s": "s",
               "face_height_ratio": "face h / frame h", "speech_attribution": "speech share by an on-screen face"}
# Findings kept per check in the JSON/HTML; the count is always complete.
MAX_FINDINGS_SHOWN = 50
# Sources listed in the HTML table (a large crawl has thousands; the JSON keeps them all).
MAX_SOURCES_SHOWN = 100


@dataclass
class AuditResult:
    summary: dict
    html_path: Path
    json_path: Path
    failed: list[str] = field(default_factory=list)  # checks named in fail_on that have findings


def _hours(seconds) -> float:
    return round(float(seconds) / 3600.0, 4)


def _durations(starts, ends) -> list[float]:
    return [max(0.0, (e - s)) if s is not None and e is not None else 0.0 for s, e in zip(starts, ends)]


def _totals(data: AuditData) -> dict:
    t = data.clips
    tracks = t.column("track").to_pylist()
    shots = [s or "unknown" for s in t.column("shot_size").to_pylist()]
    sources = t.column("source_uri").to_pylist()
    dur = _durations(t.column("start_s").to_pylist(), t.column("end_s").to_pylist())
    by_track = {k: {"clips": 0, "hours": 0.0} for k in ("st2v", "t2v")}
    by_shot: dict = {}
    by_source: dict = {}
    for tr, sh, src, d in zip(tracks, shots, sources, dur):
        for table, key in ((by_track, tr), (by_shot, sh), (by_source, src)):
            e = table.setdefault(key, {"clips": 0, "hours": 0.0})
            e["clips"] += 1
            e["hours"] += d
            if table is not by_track:
                e[tr] = e.get(tr, 0) + 1
    led = data.ledger
    rejected_by_source = Counter(src for src, st in zip(led.column("source_uri").to_pylist(),
                                                        led.column("status").to_pylist()) if st in ("rejected", "error"))
    for src, n in rejected_by_source.items():
        by_source.setdefault(src, {"clips": 0, "hours": 0.0})["dropped"] = n
    for table in (by_track, by_shot, by_source):
        for e in table.values():
            e["hours"] = _hours(e["hours"])
    order = {s: i for i, s in enumerate(SHOT_SIZES)}
    by_shot = dict(sorted(by_shot.items(), key=lambda kv: order.get(kv[0], len(order))))
    inputs = set(led.column("source_uri").to_pylist()) | set(sources)
    return {
        "inputs": len(inputs),
        "clips": t.num_rows,
        "hours": _hours(sum(dur)),
        "by_track": by_track,
        "by_shot_size": by_shot,
        "by_source": dict(sorted(by_source.items())),
        "ledger_status": dict(Counter(led.column("status").to_pylist())),
    }


def _stage_sort_key(stage: str, first_seen: dict) -> tuple:
    for part in reversed(stage.split(".")):  # "visual.faces" sorts as "faces"
        if part in STAGE_ORDER:
            return (STAGE_ORDER.index(part), stage)
    return (len(STAGE_ORDER), first_seen.get(stage, 0), stage)


def _funnel(data: AuditData) -> dict:
    led = data.ledger
    rows = zip(led.column("clip_id").to_pylist(), led.column("status").to_pylist(),
               led.column("reject_stage").to_pylist(), led.column("reject_reason").to_pylist(),
               led.column("route_reason").to_pylist())
    inputs_dropped: dict = defaultdict(Counter)
    removed: dict = defaultdict(Counter)
    first_seen: dict = {}
    kept = Counter()
    route = Counter()
    n_clip_rows = 0
    for cid, status, stage, reason, route_reason in rows:
        label = (reason or "no reason given")
        if status == "error":
            label = "error: " + label
        stage = stage or "unknown"
        if cid is None:
            if status in ("rejected", "error"):
                inputs_dropped[stage][label] += 1
            continue
        n_clip_rows += 1
        if status in ("rejected", "error"):
            first_seen.setdefault(stage, len(first_seen))
            removed[stage][label] += 1
        elif status in ("st2v", "t2v"):
            kept[status] += 1
            if status == "t2v":
                route[route_reason or "no route_reason given"] += 1
    if n_clip_rows == 0 and data.clips.num_rows:  # no ledger: the shards are all we know
        n_clip_rows = data.clips.num_rows
        kept = Counter(data.clips.column("track").to_pylist())
    steps = [{"stage": "clips cut", "remaining": n_clip_rows, "removed": 0, "reasons": {}}]
    remaining = n_clip_rows
    for stage in sorted(removed, key=lambda s: _stage_sort_key(s, first_seen)):
        n = sum(removed[stage].values())
        remaining -= n
        steps.append({"stage": stage, "remaining": remaining, "removed": n,
                      "reasons": dict(removed[stage].most_common())})
    for track in ("st2v", "t2v"):
        steps.append({"stage": f"kept: {track}", "remaining": kept.get(track, 0), "removed": 0, "reasons": {}})
    return {
        "inputs_dropped": {s: dict(c.most_common()) for s, c in inputs_dropped.items()},
        "clip_rows": n_clip_rows,
        "steps": steps,
        "t2v_route_reasons": dict(route.most_common()),
    }


def _score_series(data: AuditData) -> dict[str, dict[str, list]]:
    """score -> status -> values. Ledger rows carry the scores of every clip (kept or not), so
    a threshold can be judged against what it removed; shard-only columns come from the shards."""
    led = data.ledger
    clip_rows = [i for i, c in enumerate(led.column("clip_id").to_pylist()) if c is not None]
    series: dict = {}
    if clip_rows:
        sub = led.take(clip_rows)
        status = sub.column("status").to_pylist()
        cols = {n: sub.column(n).to_pylist() for n in SCORES if n in sub.column_names}
        cols["duration_s"] = _durations(sub.column("start_s").to_pylist(), sub.column("end_s").to_pylist())
    else:
        status = []
        cols = {}
    t = data.clips
    shard_cols = {n: t.column(n).to_pylist() for n in SCORES if n in t.column_names}
    shard_cols["duration_s"] = _durations(t.column("start_s").to_pylist(), t.column("end_s").to_pylist())
    tracks = t.column("track").to_pylist()
    for name in SCORES:
        groups: dict = defaultdict(list)
        if name in cols:
            for st, v in zip(status, cols[name]):
                groups[st].append(v)
        else:
            for tr, v in zip(tracks, shard_cols.get(name, [])):
                groups[tr].append(v)
        series[name] = {k: groups[k] for k in sorted(groups, key=lambda s: list(plots.STATUS_COLOURS).index(s)
                                                        if s in plots.STATUS_COLOURS else 99)}
    return series


def _score_stats(series: dict) -> dict:
    out = {}
    for name, groups in series.items():
        vals = [v for vs in groups.values() for v in vs]
        arr = np.array([v for v in vals if v is not None and not (isinstance(v, float) and math.isnan(v))], float)
        e = {"count": int(len(arr)), "not_computed": int(len(vals) - len(arr))}
        if len(arr):
            e.update(min=float(arr.min()), median=float(np.median(arr)), mean=float(arr.mean()), max=float(arr.max()))
        out[name] = e
    return out


def _is_fallback(entry: dict) -> bool:
    # each stage declares it when it wrote the row; names are never guessed at
    return entry.get("fallback") is True


def _backends(data: AuditData) -> dict:
    """stage -> list of {backend, model, rows, fallback} over the kept clip rows."""
    per_stage: dict = defaultdict(Counter)
    meta: dict = {}
    unlabelled = 0
    for text in data.clips.column("backends").to_pylist():
        b = parse_backends(text)
        if b is None:
            unlabelled += 1
            continue
        for stage, entry in flatten_backends(b).items():
            key = (str(entry.get("backend") or entry.get("encoder") or "?"), str(entry.get("model", "") or ""))
            per_stage[stage][key] += 1
            fb = _is_fallback(entry)
            meta[(stage,) + key] = (fb, entry.get("reason"))
    stages = {}
    for stage in sorted(per_stage, key=lambda s: _stage_sort_key(s, {x: i for i, x in enumerate(sorted(per_stage))})):
        stages[stage] = [{"backend": k[0], "model": k[1], "rows": n, "fallback": meta[(stage,) + k][0],
                          "reason": meta[(stage,) + k][1]} for k, n in per_stage[stage].most_common()]
    fallback = sorted(s for s, lst in stages.items() if any(e["fallback"] for e in lst))
    return {"stages": stages, "fallback_stages": fallback, "rows_without_backends": unlabelled}


def _spread(rows: list[int], k: int) -> list[int]:
    if len(rows) <= k:
        return rows
    return [rows[int(j)] for j in np.linspace(0, len(rows) - 1, k).round().astype(int)]


def _pick_gallery(data: AuditData, per_shot: int) -> dict[str, list[int]]:
    """Row indices per shot size: st2v and t2v taken in turn, each spread evenly over its clips
    sorted by id, so reruns show the same samples, both tracks appear, and one long source does
    not fill the gallery."""
    t = data.clips
    groups: dict = defaultdict(lambda: defaultdict(list))
    for i, (cid, sh, tr) in enumerate(zip(t.column("clip_id").to_pylist(), t.column("shot_size").to_pylist(),
                                          t.column("track").to_pylist())):
        groups[sh or "unknown"][tr].append((cid, i))
    picks = {}
    for sh in [s for s in SHOT_SIZES if s in groups] + sorted(s for s in groups if s not in SHOT_SIZES):
        per_track = [_spread([i for _, i in sorted(groups[sh][tr])], per_shot) for tr in sorted(groups[sh])]
        rows = []
        for k in range(per_shot):
            rows += [lst[k] for lst in per_track if k < len(lst)]
        if per_shot > 0:
            picks[sh] = rows[:per_shot]
    return picks


def _gallery(data: AuditData, per_shot: int) -> dict[str, list[dict]]:
    t = data.clips
    picks = _pick_gallery(data, per_shot)
    wanted = [(t.column("_shard")[i].as_py(), t.column("_row")[i].as_py()) for rows in picks.values() for i in rows]
    try:
        videos = read_videos(data.output_dir, wanted)
        video_error = None
    except Exception as e:  # a shard that vanished or broke after loading: show it, do not crash
        videos, video_error = {}, str(e)
    score_cols = [c for c in SCORES if c in t.column_names]
    out = {}
    for sh, rows in picks.items():
        items = []
        for i in rows:
            row = {c: t.column(c)[i].as_py() for c in
                   ("clip_id", "track", "source_uri", "start_s", "end_s", "caption", "prompt", "_shard", "_row")}
            row["speaking_turns"] = t.column("speaking_turns")[i].as_py() if "speaking_turns" in t.column_names else None
            row["scores"] = {c: t.column(c)[i].as_py() for c in score_cols}
            video = videos.get((row["_shard"], row["_row"]))
            try:
                if video is None:
                    raise ValueError(video_error or "no video bytes")
                row["thumbnail"] = plots.keyframe_thumbnail(video)
            except Exception as e:  # undecodable clip: the gallery says so next to the row
                row["thumbnail"] = None
                row["thumbnail_error"] = str(e)
            items.append(row)
        out[sh] = items
    return out


def _checks_summary(results: dict[str, list[Finding]], fail_on: list[str]) -> dict:
    return {name: {"description": CHECKS[name][0], "ok": not f, "count": len(f), "fail_on": name in fail_on,
                   "findings": [x.to_dict() for x in f[:MAX_FINDINGS_SHOWN]]}
            for name, f in results.items()}


def summarize(data: AuditData, fail_on: list[str] = ()) -> tuple[dict, dict]:
    """The JSON summary and the score series (for the histograms)."""
    results = run_checks(data)
    series = _score_series(data)
    run = data.run
    summary = {
        "output_dir": str(data.output_dir),
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "schema_version": SCHEMA_VERSION,
        "caption_validation": caption_validator()[1],
        "shard_files": {k: len(v) for k, v in data.shard_files.items()},
        "run": {k: run[k] for k in ("command", "runner", "versions", "counts", "warnings", "started_at",
                                    "finished_at", "wall_s", "schema_version") if k in run},
        "run_problem": data.run_problem,
        "totals": _totals(data),
        "funnel": _funnel(data),
        "scores": _score_stats(series),
        "backends": _backends(data),
        "checks": _checks_summary(results, list(fail_on)),
    }
    summary["ok"] = all(c["ok"] for c in summary["checks"].values())
    summary["failed"] = [n for n in fail_on if not summary["checks"][n]["ok"]]
    return summary, series


# ---------------------------------------------------------------- HTML

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:1.5rem;color:#222;max-width:1300px}
h1{margin-bottom:.2rem} h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0;font-size:.9rem} td,th{border:1px solid #ddd;padding:.2rem .5rem;text-align:left}
th{background:#f4f4f4} td.num{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#1a7f37;font-weight:600} .fail{color:#c62828;font-weight:600} .warn{color:#b26a00;font-weight:600}
.banner{padding:.6rem 1rem;border-radius:6px;margin:.6rem 0}
.banner.fallback{background:#fff4e5;border:1px solid #f0b35a} .banner.clean{background:#e8f5e9;border:1px solid #8bc34a}
.banner.bad{background:#fdecea;border:1px solid #e57373}
.gallery{display:flex;flex-wrap:wrap;gap:1rem}
figure.gallery-item{width:300px;margin:0;border:1px solid #ddd;border-radius:6px;padding:.5rem;font-size:.8rem}
figure.gallery-item figcaption{word-break:break-all}
figure.gallery-item img.thumb{max-width:100%;display:block;margin:0 auto .3rem}
pre{white-space:pre-wrap;word-break:break-word;background:#f8f8f8;padding:.3rem;max-height:14rem;overflow:auto}
img.chart{max-width:100%}
"""


def _e(x) -> str:
    return html.escape("" if x is None else str(x))


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 1000 else f"{v:.1f}"
    return _e(v)


def _table(headers: list[str], rows: list[list], cls: str = "") -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f'<td class="num">{_fmt(c)}</td>' if isinstance(c, (int, float)) else
                                    f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _html_checks(summary: dict) -> str:
    rows = []
    for name, c in summary["checks"].items():
        state = '<span class="ok">pass</span>' if c["ok"] else '<span class="fail">FAIL</span>'
        detail = ""
        if c["findings"]:
            items = "".join(f"<li>{_e(f['clip_id'] or '')} <code>{_e(f['where'])}</code>: {_e(f['message'])}</li>"
                            for f in c["findings"])
            more = f"<li>... and {c['count'] - len(c['findings'])} more</li>" if c["count"] > len(c["findings"]) else ""
            detail = f"<details><summary>{c['count']} finding(s)</summary><ul>{items}{more}</ul></details>"
        rows.append(f'<tr data-check="{_e(name)}"><td><code>{_e(name)}</code></td><td>{state}</td>'
                    f'<td class="num">{c["count"]}</td><td>{"yes" if c["fail_on"] else ""}</td>'
                    f"<td>{_e(c['description'])}{detail}</td></tr>")
    return ('<table id="checks-table"><thead><tr><th>check</th><th>result</th><th>findings</th><th>--fail-on</th>'
            f'<th>what it guards</th></tr></thead><tbody>{"".join(rows)}</tbody></table>')


def _html_backends(b: dict) -> str:
    if b["fallback_stages"]:
        banner = ('<div class="banner fallback" id="fallback-banner"><b>Built with fallback backends</b> for: '
                  + ", ".join(f"<code>{_e(s)}</code>" for s in b["fallback_stages"])
                  + ". Scores of these stages come from embedded defaults, not the production models.</div>")
    elif b["stages"]:
        banner = '<div class="banner clean" id="fallback-banner">Every stage ran its production backend.</div>'
    else:
        banner = '<div class="banner bad" id="fallback-banner">No row says which backends produced it.</div>'
    rows = [[stage, e["backend"], e["model"], e["rows"], "FALLBACK" if e["fallback"] else "", e["reason"] or ""]
            for stage, lst in b["stages"].items() for e in lst]
    extra = (f'<p class="warn">{b["rows_without_backends"]} row(s) without a valid <code>backends</code> JSON.</p>'
             if b["rows_without_backends"] else "")
    return banner + _table(["stage", "backend", "model", "rows", "fallback", "reason"], rows) + extra


def _html_run(run: dict, problem: Optional[str]) -> str:
    if problem:
        return f'<p class="fail">{_e(problem)}</p>'
    parts = []
    if run.get("command"):
        cmd = run["command"] if isinstance(run["command"], str) else " ".join(map(str, run["command"]))
        parts.append(f"<p>Command: <code>{_e(cmd)}</code></p>")
    if run.get("runner") or run.get("wall_s") is not None:
        parts.append(f"<p>Runner: {_e(run.get('runner', '?'))}, wall time {_fmt(run.get('wall_s'))} s</p>")
    if run.get("warnings"):
        parts.append('<ul class="run-warnings">' + "".join(f'<li class="warn">{_e(w)}</li>' for w in run["warnings"])
                     + "</ul>")
    if isinstance(run.get("versions"), dict):
        parts.append("<details><summary>versions</summary>"
                     + _table(["package", "version"], [[k, str(v)] for k, v in run["versions"].items()]) + "</details>")
    return "".join(parts) or "<p>run.json holds no run details.</p>"


def _html_totals(t: dict) -> str:
    parts = [f'<p id="totals-line"><b>{t["inputs"]}</b> inputs, <b>{t["clips"]}</b> clips kept, '
             f'<b>{t["hours"]:.3f}</b> hours. Ledger: '
             + ", ".join(f"{_e(k)} {v}" for k, v in sorted(t["ledger_status"].items(), key=lambda kv: str(kv[0])))
             + "</p>"]
    parts.append("<h3>Per track</h3>" + _table(["track", "clips", "hours"],
                                               [[k, v["clips"], v["hours"]] for k, v in t["by_track"].items()]))
    parts.append("<h3>Per shot size</h3>" + _table(
        ["shot size", "clips", "hours", "st2v", "t2v"],
        [[k, v["clips"], v["hours"], v.get("st2v", 0), v.get("t2v", 0)] for k, v in t["by_shot_size"].items()]))
    srcs = sorted(t["by_source"].items(), key=lambda kv: (-kv[1]["clips"], kv[0]))
    note = (f"<p>Showing the {MAX_SOURCES_SHOWN} sources with most clips of {len(srcs)}; summary.json has all.</p>"
            if len(srcs) > MAX_SOURCES_SHOWN else "")
    parts.append("<h3>Per source</h3>" + note + _table(
        ["source", "clips", "hours", "st2v", "t2v", "dropped rows"],
        [[k, v["clips"], v["hours"], v.get("st2v", 0), v.get("t2v", 0), v.get("dropped", 0)]
         for k, v in srcs[:MAX_SOURCES_SHOWN]]))
    return "".join(parts)


def _html_funnel(f: dict, chart: str) -> str:
    rows = []
    for s in f["steps"]:
        for reason, n in (s["reasons"] or {}).items():
            rows.append([s["stage"], reason, n])
    out = [f'<img class="chart" id="funnel-chart" alt="filter funnel chart" src="{chart}">']
    out.append("<h3>Clips removed, by stage and reason</h3>"
               + (_table(["stage", "reason", "clips"], rows, "funnel-reasons") if rows else "<p>None.</p>"))
    if f["inputs_dropped"]:
        rows = [[s, r, n] for s, c in f["inputs_dropped"].items() for r, n in c.items()]
        out.append("<h3>Whole inputs dropped</h3>" + _table(["stage", "reason", "inputs"], rows))
    if f["t2v_route_reasons"]:
        out.append("<h3>Why clips went to t2v</h3>"
                   + _table(["route reason", "clips"], [[r, n] for r, n in f["t2v_route_reasons"].items()]))
    return "".join(out)


def _pretty_caption(text: Optional[str]) -> str:
    if not text:
        return "(no caption)"
    try:
        return json.dumps(json.loads(text), indent=1, ensure_ascii=False)
    except ValueError:
        return text


def _caption_tags(text: Optional[str]) -> list[str]:
    try:
        chars = json.loads(text or "{}").get("characters") or []
        return [c["tag"] for c in chars if isinstance(c, dict) and c.get("tag")]
    except (ValueError, AttributeError, TypeError):
        return []


def _html_timeline(it: dict) -> str:
    """Who speaks when, one strip per character (every caption character gets a row, so a
    silent one shows as an empty strip); a line when the timeline was not measured."""
    turns = it.get("speaking_turns")
    if turns is None:
        return '<p class="timeline-none">speaking timeline: not measured</p>'
    dur = (it.get("end_s") or 0.0) - (it.get("start_s") or 0.0)
    svg = plots.speaking_timeline(turns, dur, _caption_tags(it.get("caption")))
    order = " &rarr; ".join(_e(t.get("person") or f"track {t.get('track')}") for t in turns) or "nobody on screen speaks"
    return f'<div class="timeline" data-turns="{len(turns)}">{svg}<br><small>{order}</small></div>'


def _html_gallery(gallery: dict) -> str:
    if not gallery:
        return "<p>No clips shown (no kept clips, or --samples 0).</p>"
    out = []
    for shot, items in gallery.items():
        figs = []
        for it in items:
            img = (f'<img class="thumb" alt="keyframe of {_e(it["clip_id"])}" src="{it["thumbnail"]}">'
                   if it.get("thumbnail") else f'<p class="warn">no thumbnail: {_e(it.get("thumbnail_error"))}</p>')
            scores = "".join(f"<tr><td>{_e(k)}</td><td class=\"num\">{_fmt(v)}</td></tr>"
                             for k, v in it["scores"].items())
            timeline = _html_timeline(it)
            figs.append(
                f'<figure class="gallery-item" data-clip-id="{_e(it["clip_id"])}">{img}'
                f'<figcaption><b>{_e(it["track"])}</b> <code>{_e(it["clip_id"])}</code><br>'
                f'{_e(it["source_uri"])} {_fmt(it["start_s"])}-{_fmt(it["end_s"])} s</figcaption>{timeline}'
                f'<details open><summary>prompt</summary><pre class="prompt">{_e(it["prompt"] or "(no prompt)")}</pre></details>'
                f'<details><summary>caption</summary><pre class="caption">{_e(_pretty_caption(it["caption"]))}</pre></details>'
                f'<details><summary>scores</summary><table>{scores}</table></details></figure>')
        out.append(f'<div class="shot-size" data-shot-size="{_e(shot)}"><h3>{_e(shot)} ({len(items)} shown)</h3>'
                   f'<div class="gallery">{"".join(figs)}</div></div>')
    return "".join(out)


def render_html(summary: dict, funnel_chart: str, hist_chart: str, gallery: dict) -> str:
    verdict = ('<span class="ok">all checks pass</span>' if summary["ok"] else
               '<span class="fail">checks failing: ' + ", ".join(
                   _e(n) for n, c in summary["checks"].items() if not c["ok"]) + "</span>")
    stats = [[n, s["count"], s["not_computed"], s.get("min", ""), s.get("median", ""), s.get("mean", ""),
              s.get("max", "")] for n, s in summary["scores"].items()]
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>mocha audit: {_e(summary["output_dir"])}</title>
<style>{_CSS}</style></head>
<body>
<h1>Dataset audit</h1>
<p><code>{_e(summary["output_dir"])}</code>, generated {_e(summary["generated_at"])}, schema {_e(summary["schema_version"])}.
Captions checked with: {_e(summary["caption_validation"])}. Verdict: {verdict}</p>
<section id="run"><h2>Run</h2>{_html_run(summary["run"], summary["run_problem"])}</section>
<section id="backends"><h2>Backends</h2>{_html_backends(summary["backends"])}</section>
<section id="checks"><h2>Checks</h2>{_html_checks(summary)}</section>
<section id="totals"><h2>Totals</h2>{_html_totals(summary["totals"])}</section>
<section id="funnel"><h2>Filter funnel</h2>{_html_funnel(summary["funnel"], funnel_chart)}</section>
<section id="scores"><h2>Scores</h2>
<img class="chart" id="score-histograms" alt="histograms of every score" src="{hist_chart}">
{_table(["score", "values", "not computed", "min", "median", "mean", "max"], stats)}</section>
<section id="gallery"><h2>Sample gallery per shot size</h2>{_html_gallery(gallery)}</section>
</body></html>
"""


def write_report(output_dir: str | Path, out_dir: Optional[str | Path] = None, fail_on: list[str] = (),
                 samples_per_shot: int = 4) -> AuditResult:
    """Audit ``output_dir``; write ``report.html`` and ``summary.json`` into ``out_dir``
    (default OUTPUT_DIR/audit)."""
    data = load_output(output_dir)
    summary, series = summarize(data, fail_on)
    funnel_png = plots.funnel_chart(summary["funnel"]["steps"])
    hist_png = plots.histograms(series, SCORE_UNITS)
    gallery = _gallery(data, samples_per_shot)
    summary["gallery"] = {sh: [it["clip_id"] for it in items] for sh, items in gallery.items()}
    # beside the data by default, on whatever filesystem the output lives (a bucket included)
    dest = str(out_dir) if out_dir else join(str(output_dir), "audit")
    fs, root = filesystem(dest)
    ensure_dir(fs, root)
    write_bytes(fs, join(root, "report.html"), render_html(summary, funnel_png, hist_png, gallery).encode("utf-8"))
    write_bytes(fs, join(root, "summary.json"), json.dumps(summary, indent=1, sort_keys=False, default=str).encode("utf-8"))
    html, js = join(dest, "report.html"), join(dest, "summary.json")
    return AuditResult(summary=summary, html_path=Path(html) if not is_uri(dest) else html,
                       json_path=Path(js) if not is_uri(dest) else js, failed=summary["failed"])
