"""A source no longer than the fingerprint's span is scene-scanned in the decode that fingerprints
it: the plan then takes that scan (no decode of its own for scenes) and gives the windows of a
plan that scans by itself; the fingerprint still matches one made by its own decode. Longer
sources, and sources whose video outlasts their declared duration, keep the separate scan."""
from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.engine.config import load_config
from pipeline.source import split
from pipeline.source.dedup import compare
from pipeline.source.fingerprint import Fingerprint, fingerprint
from tests.helpers.fuzz_corpus import encode
from tests.helpers.long_source import make_long_source


def _cfg(*overrides: str):
    return load_config(None, ["ingest.sandbox.enabled=false", *overrides])


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("scanfacts") / "short.mkv"
    make_long_source(path, 1.0, seed=5)  # a minute of hard-cut scenes with PCM sound
    return path


def _spans(segs) -> list[tuple]:
    return [(s.index, w.scene_index, w.window_index, w.start_s, w.end_s, w.start_frame, w.end_frame)
            for s in segs for w in s.windows + s.short]


def _counting_scans(monkeypatch) -> list[str]:
    calls: list[str] = []
    real = split.detect_scenes

    def counted(src, cfg, threads=None, on_frame=None):
        calls.append("with facts" if on_frame is not None else "own")
        return real(src, cfg, threads, on_frame)

    monkeypatch.setattr(split, "detect_scenes", counted)
    return calls


def test_a_short_source_is_scanned_once_with_its_facts(source, monkeypatch):
    cfg = _cfg()
    calls = _counting_scans(monkeypatch)
    item = split.source_facts({"source_uri": str(source)}, cfg)
    assert calls == ["with facts"] and item["scene_scan"].scenes
    with_facts = list(split.plan_source(dict(item), cfg))
    assert calls == ["with facts"]  # the plan decoded nothing for scenes
    alone = list(split.plan_source({k: v for k, v in item.items() if k != "scene_scan"}, cfg))
    assert calls == ["with facts", "own"]
    assert _spans(with_facts) == _spans(alone) and len(with_facts[0].windows) >= 3
    # the audio each window gets does not depend on where the scan came from
    assert all((a == b).all() for s, t in zip(with_facts, alone) for a, b in zip(s.audio, t.audio))


def test_the_fingerprint_from_the_shared_scan_matches_its_own_decode(tmp_path):
    path = encode(tmp_path / "talk.mp4", seed=11, size=(160, 120), seconds=6.0)  # textured, B-frames
    cfg = _cfg()
    item = split.source_facts({"source_uri": str(path)}, cfg)
    assert "scene_scan" in item
    shared = Fingerprint.from_json(item["fingerprint"])
    own = fingerprint(str(path), True, cfg.ingest.near_duplicates.fingerprint)
    assert shared.clean and len(shared.video) == len(own.video) and shared.usable_video >= 20
    m = compare(shared, own, cfg.ingest.near_duplicates)
    assert m is not None and m.video_match >= 0.95 and m.offset_s == 0.0


def test_a_source_longer_than_the_span_keeps_its_own_scan(source, monkeypatch):
    cfg = _cfg("ingest.near_duplicates.fingerprint.span_s=20")
    calls = _counting_scans(monkeypatch)
    item = split.source_facts({"source_uri": str(source)}, cfg)
    assert "scene_scan" not in item and calls == []
    segs = list(split.plan_source(dict(item), cfg))
    assert calls == ["own"] and sum(len(s.windows) for s in segs) >= 3
    # the fingerprint is the one of its own decode, bit for bit
    fp = cfg.ingest.near_duplicates.fingerprint
    assert item["fingerprint"] == fingerprint(str(source), True, fp).to_json()


def test_video_past_the_declared_duration_ends_the_shared_scan(source):
    """A container that declares less than its video holds: the shared scan stops at the span
    (its scenes would cover only the start) and the plan scans the whole by itself."""
    cfg = _cfg("ingest.near_duplicates.fingerprint.span_s=20")
    src = {"source_uri": str(source), "duration_s": 15.0}
    assert split._scan_with_facts(src, cfg) is None and "scene_scan" not in src
