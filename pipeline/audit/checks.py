"""Checks over a loaded output directory. Each returns a list of findings; an empty list means
the check passed. ``mocha audit --fail-on`` turns findings of the named checks into a non-zero
exit, so CI can refuse a dataset that breaks the output contract."""
from __future__ import annotations

import importlib
import json
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from typing import Callable, Optional

from pipeline.audit.load import AuditData

# Embedding backends that mean "deliberately not computed, and labelled as such".
_EMB_SKIPPED = frozenset({"none", "skipped", "disabled"})
# Keys that name what produced a stage's output (media stages name an encoder, not a model).
_LABEL_KEYS = ("backend", "model", "encoder")


@dataclass
class Finding:
    check: str
    message: str
    where: str = ""  # shard path, "ledger" or "run.json"
    clip_id: Optional[str] = None

    def to_dict(self) -> dict:
        return asdict(self)


def _parse_json_object(text: str) -> dict:
    obj = json.loads(text)
    if not isinstance(obj, dict):
        raise ValueError(f"caption JSON is a {type(obj).__name__}, expected an object")
    return obj


def caption_validator() -> tuple[Callable[[str], object], str]:
    """The function that validates one caption string (raises when invalid) and its name.

    The caption model lives in ``schemas.caption``; imported lazily so the audit still runs
    (checking "is a JSON object" only, and saying so) where that module is absent."""
    try:
        mod = importlib.import_module("schemas.caption")
    except ImportError:
        return _parse_json_object, "JSON object only (schemas.caption not importable)"
    for name in ("validate_caption", "parse_caption"):
        fn = getattr(mod, name, None)
        if callable(fn):
            return fn, f"schemas.caption.{name}"
    model = getattr(mod, "Caption", None)
    if model is not None and hasattr(model, "model_validate_json"):
        return model.model_validate_json, "schemas.caption.Caption"
    return _parse_json_object, "JSON object only (schemas.caption has no Caption model)"


def parse_backends(text: Optional[str]) -> Optional[dict]:
    """The ``backends`` JSON of a row as a dict, or None when it is missing or not an object."""
    if not text:
        return None
    try:
        obj = json.loads(text)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def flatten_backends(b: dict, prefix: str = "") -> dict[str, dict]:
    """stage -> entry with grouped stages expanded ({"visual": {"faces": {...}, "motion": "x"}}
    gives "visual.faces" and "visual.motion"); a bare string is the backend's name."""
    out: dict[str, dict] = {}
    for k, v in b.items():
        name = f"{prefix}{k}"
        if isinstance(v, str) and v:
            out[name] = {"backend": v}
        elif isinstance(v, dict) and not any(v.get(n) for n in _LABEL_KEYS) and v \
                and all(isinstance(x, (dict, str)) for x in v.values()):
            out.update(flatten_backends(v, name + "."))
        else:
            out[name] = v if isinstance(v, dict) else {}
    return out


def is_labelled(entry: dict) -> bool:
    """The entry names what produced the scores and says whether that is a fallback."""
    return any(entry.get(n) for n in _LABEL_KEYS) and isinstance(entry.get("fallback"), bool)


def check_foreign_schema(data: AuditData) -> list[Finding]:
    return [Finding("foreign_schema", p.message, where=p.path) for p in data.schema_problems]


def check_output_layout(data: AuditData) -> list[Finding]:
    out = []
    if data.run_problem:
        out.append(Finding("output_layout", data.run_problem, where="run.json"))
    if not data.shard_files.get("ledger"):
        out.append(Finding("output_layout", "no ledger shards under ledger/: every input and clip must have a "
                           "ledger row", where="ledger"))
    return out


def check_duplicate_clip_ids(data: AuditData) -> list[Finding]:
    out = []
    ids = data.clips.column("clip_id").to_pylist()
    shards = data.clips.column("_shard").to_pylist()
    where = defaultdict(list)
    for cid, shard in zip(ids, shards):
        where[cid].append(shard)
    for cid, places in where.items():
        if len(places) > 1:
            out.append(Finding("duplicate_clip_ids", f"clip_id appears in {len(places)} clip rows",
                               where=", ".join(sorted(set(places))), clip_id=cid))
    counts = Counter(c for c in data.ledger.column("clip_id").to_pylist() if c is not None)
    for cid, n in counts.items():
        if n > 1:
            out.append(Finding("duplicate_clip_ids", f"clip_id has {n} ledger rows", where="ledger", clip_id=cid))
    return out


def check_overlapping_spans(data: AuditData) -> list[Finding]:
    """Two kept clips of one source (same content hash) whose spans overlap: the same frames
    would be trained on twice. Source frame indices (required, end exclusive) decide: float
    seconds of back-to-back windows may differ from the cut point by rounding."""
    t = data.clips
    cols = {n: t.column(n).to_pylist() for n in
            ("clip_id", "source_sha256", "source_uri", "start_s", "end_s", "start_frame", "end_frame", "_shard")}
    by_source = defaultdict(list)
    for i, key in enumerate(cols["source_sha256"]):
        by_source[key or cols["source_uri"][i]].append(i)
    out = []
    for rows in by_source.values():
        rows.sort(key=lambda i: (cols["start_s"][i], cols["end_s"][i]))
        prev = None  # row with the latest end seen so far
        for i in rows:
            if prev is not None:
                overlap = cols["start_frame"][i] < cols["end_frame"][prev]
                if overlap:
                    out.append(Finding(
                        "overlapping_spans",
                        f"span {cols['start_s'][i]:.3f}-{cols['end_s'][i]:.3f}s overlaps clip "
                        f"{cols['clip_id'][prev]} ({cols['start_s'][prev]:.3f}-{cols['end_s'][prev]:.3f}s) "
                        f"of source {cols['source_uri'][i]}",
                        where=cols["_shard"][i], clip_id=cols["clip_id"][i]))
            if prev is None or cols["end_s"][i] > cols["end_s"][prev]:
                prev = i
    return out


def _error_text(e: Exception) -> str:
    errors = getattr(e, "errors", None)
    if callable(errors):  # pydantic ValidationError: name the first failing field
        try:
            errs = errors()
            first = errs[0]
            loc = ".".join(str(x) for x in first.get("loc", ())) or "caption"
            return f"{loc}: {first.get('msg')}" + (f" (+{len(errs) - 1} more)" if len(errs) > 1 else "")
        except Exception:  # a foreign validator's errors(): fall back to its text
            pass
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def check_invalid_captions(data: AuditData) -> list[Finding]:
    validate, how = caption_validator()
    out = []
    t = data.clips
    for cid, cap, shard in zip(t.column("clip_id").to_pylist(), t.column("caption").to_pylist(),
                               t.column("_shard").to_pylist()):
        if cap is None or not cap.strip():
            out.append(Finding("invalid_captions", "no caption", where=shard, clip_id=cid))
            continue
        try:
            validate(cap)
        except Exception as e:  # any validator error is a finding, never a crash of the audit
            msg = _error_text(e)
            out.append(Finding("invalid_captions", f"caption does not validate ({how}): {msg}",
                               where=shard, clip_id=cid))
    return out


def check_st2v_missing_media(data: AuditData) -> list[Finding]:
    """st2v rows must carry speech audio; an embedding may be missing only when the row's
    ``backends`` says the embedding stage was skipped (the loader can compute it later)."""
    t = data.clips
    out = []
    rows = zip(t.column("clip_id").to_pylist(), t.column("track").to_pylist(), t.column("has_audio").to_pylist(),
               t.column("has_emb").to_pylist(), t.column("backends").to_pylist(), t.column("_shard").to_pylist())
    for cid, track, has_audio, has_emb, backends, shard in rows:
        if track != "st2v" and not shard.startswith("st2v/"):
            continue
        if not has_audio:
            out.append(Finding("st2v_missing_media", "st2v row without audio", where=shard, clip_id=cid))
        if not has_emb:
            entry = (parse_backends(backends) or {}).get("audio_embed")
            label = entry.get("backend") if isinstance(entry, dict) else None
            if label not in _EMB_SKIPPED:
                out.append(Finding("st2v_missing_media",
                                   "st2v row without audio_emb and no skipped audio_embed backend in `backends`",
                                   where=shard, clip_id=cid))
    return out


def check_ledger_consistency(data: AuditData) -> list[Finding]:
    """Rows are never dropped silently: each kept clip has a ledger row with its track, each
    ledger row that says st2v/t2v has its clip in a shard, and a clip sits under its own track."""
    t, led = data.clips, data.ledger
    out = []
    status = {}
    for cid, st in zip(led.column("clip_id").to_pylist(), led.column("status").to_pylist()):
        if cid is not None:
            status[cid] = st
    kept = {}
    for cid, track, shard in zip(t.column("clip_id").to_pylist(), t.column("track").to_pylist(),
                                 t.column("_shard").to_pylist()):
        kept[cid] = track
        folder = shard.split("/", 1)[0]
        if track != folder:
            out.append(Finding("ledger_consistency", f"row says track {track!r} but sits under {folder}/",
                               where=shard, clip_id=cid))
        if not data.shard_files.get("ledger"):
            continue
        if cid not in status:
            out.append(Finding("ledger_consistency", "clip has no ledger row", where=shard, clip_id=cid))
        elif status[cid] != track:
            out.append(Finding("ledger_consistency", f"ledger status {status[cid]!r} but clip is in track {track!r}",
                               where=shard, clip_id=cid))
    for cid, st in status.items():
        if st in ("st2v", "t2v") and cid not in kept:
            out.append(Finding("ledger_consistency", f"ledger says {st} but no shard holds the clip",
                               where="ledger", clip_id=cid))
    return out


def check_unlabelled_backends(data: AuditData) -> list[Finding]:
    """Every score must say what produced it: ``backends`` is a JSON object of stage -> object
    naming a backend, model or encoder, or a group of such stages."""
    t = data.clips
    out = []
    for cid, text, shard in zip(t.column("clip_id").to_pylist(), t.column("backends").to_pylist(),
                                t.column("_shard").to_pylist()):
        b = parse_backends(text)
        if b is None:
            out.append(Finding("unlabelled_backends", "`backends` is missing or not a JSON object",
                               where=shard, clip_id=cid))
            continue
        bad = [k for k, v in flatten_backends(b).items() if not is_labelled(v)]
        if bad:
            out.append(Finding("unlabelled_backends", f"stages without a backend label: {', '.join(sorted(bad))}",
                               where=shard, clip_id=cid))
    return out


def check_speaking_turns(data: AuditData) -> list[Finding]:
    """The speaking timeline of every kept clip is well formed: turns inside the clip, in time
    order, not overlapping, and naming characters of the clip's caption."""
    t = data.clips
    if "speaking_turns" not in t.column_names:
        return []
    out = []
    one_frame = 1.0 / 25.0
    for cid, turns, start, end, cap, shard in zip(
            t.column("clip_id").to_pylist(), t.column("speaking_turns").to_pylist(), t.column("start_s").to_pylist(),
            t.column("end_s").to_pylist(), t.column("caption").to_pylist(), t.column("_shard").to_pylist()):
        if not turns:
            continue
        dur = (end or 0.0) - (start or 0.0)
        try:
            tags = {c.get("tag") for c in json.loads(cap or "{}").get("characters") or [] if isinstance(c, dict)}
        except (ValueError, AttributeError):
            tags = set()
        problems = []
        for k, tr in enumerate(turns):
            a, b = tr.get("start_s"), tr.get("end_s")
            if a is None or b is None or not (-1e-6 <= a <= b <= dur + one_frame):
                problems.append(f"turn {k} spans {a}-{b} s outside the clip's {dur:.2f} s")
            if k and a is not None and turns[k - 1].get("end_s") is not None and a < turns[k - 1]["end_s"] - 1e-3:
                problems.append(f"turn {k} starts at {a} s before turn {k - 1} ends")
            if tags and tr.get("person") is not None and tr["person"] not in tags:
                problems.append(f"turn {k} names {tr['person']}, not a character of the caption")
        for p in problems:
            out.append(Finding("speaking_turns", p, where=shard, clip_id=cid))
    return out


# name -> (what it guards, function); the order is the order of the report.
CHECKS: dict[str, tuple[str, Callable[[AuditData], list[Finding]]]] = {
    "foreign_schema": ("every shard is readable, has the mocha schema of its kind and version, and no nulls "
                       "where the contract forbids them", check_foreign_schema),
    "output_layout": ("run.json is present and valid; a ledger exists", check_output_layout),
    "duplicate_clip_ids": ("no clip_id twice among clip rows or ledger rows", check_duplicate_clip_ids),
    "overlapping_spans": ("no two kept clips of one source share frames", check_overlapping_spans),
    "invalid_captions": ("every kept clip has a caption that validates", check_invalid_captions),
    "st2v_missing_media": ("st2v rows have audio, and an embedding unless its skip is labelled",
                           check_st2v_missing_media),
    "ledger_consistency": ("shards and ledger agree on every kept clip", check_ledger_consistency),
    "unlabelled_backends": ("every row says which backend produced its scores", check_unlabelled_backends),
    "speaking_turns": ("speaking timelines lie inside their clip, in time order, naming caption characters",
                       check_speaking_turns),
}


def run_checks(data: AuditData, only: Optional[list[str]] = None) -> dict[str, list[Finding]]:
    names = list(CHECKS) if only is None else only
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        raise ValueError(f"unknown check(s) {', '.join(unknown)}; known: {', '.join(CHECKS)}")
    return {n: CHECKS[n][1](data) for n in names}


def parse_fail_on(text: Optional[str]) -> list[str]:
    """``--fail-on`` value -> check names ("all" = every check; empty = none)."""
    if not text:
        return []
    names = [n.strip() for n in text.split(",") if n.strip()]
    if "all" in names:
        return list(CHECKS)
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        raise ValueError(f"unknown check(s) in --fail-on: {', '.join(unknown)}; known: all, {', '.join(CHECKS)}")
    return names
