"""Two-person conversations built from the real talking clips (side by side, each face speaking
its own audio in its turns and listening in the other's, H.264 + PCM in Matroska), curated end
to end in this process: the timeline names the right face for each turn within 0.3 s, captions
and prompts give the turns in order with their Person tags, the shards and the ledger carry
the timeline and the audit page draws it."""
from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.helpers.speaker_clips import DEMO2, KATIE, conversation, write_mkv

TOLERANCE_S = 0.3
FPS = 25
# name -> (left face, right face, [(side, start_s, end_s)], where each face starts in its source)
COMPOSITES = {
    "three_turns": (KATIE, DEMO2, [("left", 0.0, 3.0), ("right", 3.0, 5.5), ("left", 5.5, 8.0)],
                    {"left": 0.0, "right": 10.44}),
    "two_turns": (DEMO2, KATIE, [("left", 0.0, 4.0), ("right", 4.0, 8.0)], {"left": 10.44, "right": 0.0}),
}

pytestmark = [pytest.mark.realdata, pytest.mark.slow]


@pytest.fixture(scope="module")
def curated(real_dir, weights_dir, tmp_path_factory):
    from pipeline.engine.config import load_config
    from pipeline.engine.curate import run_curate

    root = tmp_path_factory.mktemp("conversations")
    (root / "in").mkdir()
    truth = {}
    for name, (left, right, turns, start) in COMPOSITES.items():
        conv = conversation(real_dir, left, right, turns, start)
        write_mkv(root / "in" / f"{name}.mkv", conv.frames, conv.pcm)
        truth[name] = conv.turns
    cfg = load_config(None, [f"visual.faces.yunet_onnx={weights_dir / 'face_detection_yunet_2023mar.onnx'}",
                             f"speakers.checkpoint={weights_dir / 'lr_asd_pretrain_AVA.model'}",
                             "audio_embed.enabled=false", "run.progress=false"],
                      inputs=[str(root / "in")], output=str(root / "out"))
    run_curate(cfg, runner="local")
    return root / "out", truth


def _rows(out, folder: str) -> list[dict]:
    from schemas.rows import read_table

    rows = []
    for p in sorted((out / folder).glob("*.parquet")):
        cols = [c for c in pq.read_schema(p).names if c not in ("video", "audio", "audio_emb")]
        rows += read_table(str(p), "ledger" if folder == "ledger" else "clip", columns=cols).to_pylist()
    return rows


def _clip(out, name: str) -> dict:
    rows = [r for f in ("st2v", "t2v") for r in _rows(out, f) if r["source_uri"].endswith(f"{name}.mkv")]
    assert len(rows) == 1, f"{name}: expected one clip (one shot), got {len(rows)}"
    return rows[0]


def _side(turn: dict) -> str:
    return "left" if turn["x"] < 0.5 else "right"


@pytest.mark.parametrize("name", list(COMPOSITES))
def test_timeline_names_the_right_face_for_each_turn(curated, name):
    out, truth = curated
    row = _clip(out, name)
    turns = row["speaking_turns"]
    assert turns, "no speaking turns"
    # speakers in order, consecutive turns of one face counted once
    order = [s for i, s in enumerate(map(_side, turns)) if i == 0 or s != _side(turns[i - 1])]
    assert order == [s for s, _, _ in truth[name]]
    # every change of speaker within the tolerance of the true change
    got_changes = [t["start_s"] for a, t in zip(turns, turns[1:]) if _side(a) != _side(t)]
    true_changes = [t0 for (_, t0, _) in truth[name][1:]]
    assert np.allclose(got_changes, true_changes, atol=TOLERANCE_S), (got_changes, true_changes)
    # and at every speech frame away from a change, the speaking face is the true one
    segments = json.loads(row["speech_segments"])
    for t in np.arange(0, 8.0, 1 / FPS):
        if not any(a <= t < b for a, b in segments):
            continue
        if min(abs(t - c) for c in true_changes + [0.0, 8.0]) <= TOLERANCE_S:
            continue
        want = next(s for s, a, b in truth[name] if a <= t < b)
        said = [_side(x) for x in turns if x["start_s"] <= t < x["end_s"]]
        assert said == [want], f"{name} at {t:.2f} s: {said} instead of {want}"
    # tracks are consistent: one track per side
    assert len({(x["track"], _side(x)) for x in turns}) == 2


@pytest.mark.parametrize("name", list(COMPOSITES))
def test_caption_and_prompt_give_the_turns_in_order_with_tags(curated, name):
    out, truth = curated
    row = _clip(out, name)
    cap = json.loads(row["caption"])
    by_side = {c["position"]: c["tag"] for c in cap["characters"]}
    assert set(by_side) == {"left", "right"} and all(c["speaking"] for c in cap["characters"])
    want = [by_side[s] for s, _, _ in truth[name]]
    got = [t["tag"] for t in cap["turns"]]
    assert [g for i, g in enumerate(got) if i == 0 or g != got[i - 1]] == want
    # the row's timeline names the caption's tags
    assert [t["person"] for t in row["speaking_turns"]] == got
    sentence = f"{want[0]} speaks first, " + ", ".join(f"then {t}" for t in want[1:]) + "."
    assert sentence in row["prompt"], row["prompt"]
    for tag in by_side.values():
        assert f"{tag}: " in row["prompt"]  # each tag is defined under Characters


def test_ledger_and_audit_report_carry_the_timeline(curated):
    from pipeline.audit.report import write_report

    out, truth = curated
    ledger = {r["source_uri"].rsplit("/", 1)[-1]: r for r in _rows(out, "ledger") if r["clip_id"]}
    for name in COMPOSITES:
        assert ledger[f"{name}.mkv"]["speaking_turns"] == _clip(out, name)["speaking_turns"]
    res = write_report(out, samples_per_shot=4)
    html = res.html_path.read_text()
    assert html.count('class="speaking-timeline"') == len(COMPOSITES)
    assert res.summary["checks"]["speaking_turns"]["ok"]
    for name in COMPOSITES:
        for t in _clip(out, name)["speaking_turns"]:
            assert f'data-person="{t["person"]}" data-start="{t["start_s"]:.2f}"' in html
