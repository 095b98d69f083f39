"""The training half of `mocha demo`: shards -> DataModule -> tiny DiT steps -> checkpoint ->
`mocha generate` path -> mp4 with speech, offline."""
from __future__ import annotations

import json
import math
from pathlib import Path

from common.media import decode_video, probe
from tests.helpers.datashards import colour_clip, mixed_rows, write_shards


def test_run_training_demo_on_shards(tmp_path):
    from training.demo import run_training_demo

    n = 20
    rows = mixed_rows({("st2v", "close_up"): 3, ("t2v", "medium"): 2}, colour_clip(40, n=n, step=5), n=n)
    write_shards(tmp_path / "shards", rows)
    res = run_training_demo(str(tmp_path / "shards"), str(tmp_path / "out"), steps=3, gen_steps=2)
    assert res["steps"] == 3 and len(res["losses"]) == 3 and all(math.isfinite(x) for x in res["losses"])
    assert Path(res["checkpoint"]).is_file() and res["audio_emb_in_shards"] is True
    info = probe(res["generated_mp4"])
    assert info.has_video and info.has_audio
    frames, _ = decode_video(res["generated_mp4"])
    assert abs(len(frames) / 25.0 - res["speech_seconds"]) <= 1 / 25.0
    assert all("tiny" in v for k, v in res["backends"].items() if k in ("vae", "text_encoder", "wav2vec2", "dit"))
    assert json.loads((tmp_path / "out" / "training_demo.json").read_text())["checkpoint"] == res["checkpoint"]
