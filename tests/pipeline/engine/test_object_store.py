"""Curation from and to an S3-compatible object store (moto on 127.0.0.1): inputs are read from
the bucket, workers write the shards into it, and the audit, `mocha data inspect` and the
trainer's index read them back from there; nothing lands on local disk, no credential is
recorded, and a rerun after a hard kill finishes only the missing work."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from common.media import encode_mp4
from common.output import COMMITS, Output
from common.synth import speech_envelope, synth_speech, synth_talking_frames
from pipeline.engine.writer import read_ledger
from tests.conftest import ROOT, run_mocha
from tests.helpers.s3_server import s3_server

pytestmark = pytest.mark.slow
FPS = 25


def _inputs(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    speech = synth_speech(8.0, 1)
    mouth = speech_envelope(speech, FPS, 8 * FPS)
    talk = folder / "talk.mp4"
    talk.write_bytes(encode_mp4(synth_talking_frames(8.0, 320, 240, (130, 110, 90), mouth, 1), FPS, audio=speech))
    silent = folder / "character_no_audio.mp4"
    silent.write_bytes(encode_mp4(synth_talking_frames(4.0, 320, 240, (100, 120, 100), None, 3), FPS))
    empty = folder / "empty.mp4"
    empty.write_bytes(b"")
    return [talk, silent, empty]


@pytest.fixture(scope="module")
def s3():
    with s3_server(("bucket",)) as env:
        yield env


def _upload(fs: pafs.FileSystem, files: list[Path], prefix: str) -> None:
    for f in files:
        with fs.open_output_stream(f"{prefix}/{f.name}") as out:
            out.write(f.read_bytes())


def _keys(fs: pafs.FileSystem, prefix: str) -> list[str]:
    return sorted(i.path for i in fs.get_file_info(pafs.FileSelector(prefix, recursive=True, allow_not_found=True))
                  if i.type == pafs.FileType.File)


def test_curate_bucket_to_bucket_and_read_it_back(s3, tmp_path):
    fs = pafs.S3FileSystem(endpoint_override=s3["AWS_ENDPOINT_URL"], region="us-east-1")
    _upload(fs, _inputs(tmp_path / "local_inputs"), "bucket/in")
    work = tmp_path / "cwd"
    work.mkdir()
    proc = run_mocha("curate", "s3://bucket/in/", "--output", "s3://bucket/out", "--no-progress", env=s3)
    keys = _keys(fs, "bucket/out")
    rel = [k[len("bucket/out/"):] for k in keys]
    assert "run.json" in rel
    assert any(k.startswith("ledger/") for k in rel) and any(k.startswith(COMMITS + "/") for k in rel)
    assert any(k.startswith(("st2v/", "t2v/")) for k in rel)
    # every shard in the bucket is named by a commit record, and nothing was written locally
    out = Output.open("s3://bucket/out")
    committed = {f for r in out.commit_records() for f in r["files"]}
    assert {k for k in rel if k.endswith(".parquet")} == committed
    for root in (ROOT, work, Path.cwd()):
        assert not list(Path(root).glob("s3:*")), f"a local folder named s3: appeared in {root}"
    # the ledger accounts for every input, read from the bucket
    ledger = read_ledger("s3://bucket/out").to_pylist()
    assert {Path(r["source_uri"]).name for r in ledger} == {"talk.mp4", "character_no_audio.mp4", "empty.mp4"}
    assert all(r["source_uri"].startswith("s3://bucket/in/") for r in ledger)
    # no credential in run.json, the logs or the rows
    run = json.loads(fs.open_input_stream("bucket/out/run.json").read())
    # the driver received commit records only, never clip media
    shard_bytes = sum(fs.get_file_info(k).size for k in keys if k.endswith(".parquet"))
    received = run["execution"]["driver_bytes_received"]
    assert 0 < received < 2048 * len(out.commit_records()) and received < shard_bytes / 20
    blob = json.dumps(run) + proc.stdout + proc.stderr + json.dumps(ledger, default=str)
    assert s3["AWS_SECRET_ACCESS_KEY"] not in blob and s3["AWS_ACCESS_KEY_ID"] not in blob

    # the audit reads the bucket and writes its report beside the data
    run_mocha("audit", "s3://bucket/out", "--fail-on", "foreign_schema", env=s3)
    assert {"bucket/out/audit/report.html", "bucket/out/audit/summary.json"} <= set(_keys(fs, "bucket/out/audit"))
    # the trainer's view of the same shards
    inspect = run_mocha("data", "inspect", "s3://bucket/out", "--stage", "0", "--samples", "50", "--json",
                        "--set", "curriculum.allow_missing_pools=true", env=s3)
    assert json.loads(inspect.stdout)["totals"]["rows"] == sum(1 for r in ledger if r["status"] in ("st2v", "t2v"))
    assert not list(Path(ROOT).glob("s3:*"))


def test_rerun_after_a_hard_kill_finishes_only_the_missing_work(s3, tmp_path):
    fs = pafs.S3FileSystem(endpoint_override=s3["AWS_ENDPOINT_URL"], region="us-east-1")
    files = _inputs(tmp_path / "in")
    _upload(fs, files, "bucket/kill_in")
    ref = "s3://bucket/kill_ref"
    run_mocha("curate", "s3://bucket/kill_in/", "--output", ref, "--runner", "local", "--no-progress", env=s3)

    out = "s3://bucket/killed"
    cmd = [sys.executable, "-m", "mocha.cli", "curate", "s3://bucket/kill_in/", "--output", out, "--runner", "local",
           "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **s3}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 600
    while time.time() < deadline and not _keys(fs, f"bucket/killed/{COMMITS}"):
        assert proc.poll() is None, "job ended before its first commit"
        time.sleep(0.05)
    assert proc.poll() is None, "job finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first = len(_keys(fs, f"bucket/killed/{COMMITS}"))

    run_mocha("curate", "s3://bucket/kill_in/", "--output", out, "--runner", "local", "--no-progress", env=s3)
    run = json.loads(fs.open_input_stream("bucket/killed/run.json").read())
    assert run["inputs_skipped_resume"] >= 1 and run["inputs_this_run"] == len(files) - run["inputs_skipped_resume"]
    assert len(_keys(fs, f"bucket/killed/{COMMITS}")) - first == run["inputs_this_run"]  # one segment each
    ids = [r for r in read_ledger(out).column("clip_id").to_pylist() if r]
    assert len(ids) == len(set(ids)) and set(ids) == {r for r in read_ledger(ref).column("clip_id").to_pylist() if r}
