"""Curation on a local multi-node Ray cluster (two nodes on 127.0.0.1, `ray.cluster_utils`):
work runs on both nodes, a worker node removed mid-run still gives the identical clip set with no
duplicate, and the README's `ray job submit` form produces the same output."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common.media import encode_mp4
from common.output import COMMITS, Output
from common.synth import speech_envelope, synth_speech, synth_talking_frames
from pipeline.engine.writer import read_ledger
from tests.conftest import ROOT, run_mocha

pytestmark = pytest.mark.slow
FPS = 25


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _inputs(folder: Path, n: int = 6) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(n):
        speech = synth_speech(4.0, k) if k % 2 == 0 else None
        mouth = speech_envelope(speech, FPS, 4 * FPS) if speech is not None else None
        p = folder / f"clip{k}.mp4"
        p.write_bytes(encode_mp4(synth_talking_frames(4.0, 240, 180, (60 + 20 * k, 110, 90), mouth, k), FPS, audio=speech))
        paths.append(str(p))
    return paths


def _ids(out) -> list[str]:
    return [i for i in read_ledger(str(out)).column("clip_id").to_pylist() if i]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from ray.cluster_utils import Cluster

    # the nodes' processes run this environment's Python (what `ray job submit` entrypoints use)
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    # every node on loopback: Ray must not rewrite 127.0.0.1 to the host's network address
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    dash = _free_port()
    c = Cluster(initialize_head=True, connect=False, head_node_args={
        "num_cpus": 3, "node_ip_address": "127.0.0.1", "include_dashboard": True, "dashboard_host": "127.0.0.1",
        "dashboard_port": dash, "object_store_memory": 300 * 1024**2})
    worker = c.add_node(num_cpus=3, node_ip_address="127.0.0.1", object_store_memory=300 * 1024**2)
    c.wait_for_nodes()
    inputs = _inputs(tmp_path_factory.mktemp("cluster_inputs"))
    ref = tmp_path_factory.mktemp("cluster_ref") / "out"
    run_mocha("curate", *inputs, "--output", str(ref), "--runner", "local", "--no-progress")
    yield {"cluster": c, "worker": worker, "dashboard": f"http://127.0.0.1:{dash}", "inputs": inputs, "ref": ref}
    c.shutdown()


def test_job_runs_on_both_nodes_and_matches_a_local_run(cluster, tmp_path):
    import ray
    from ray.util.state import list_tasks

    out = tmp_path / "out"
    run_mocha("curate", *cluster["inputs"], "--output", str(out), "--ray-address", cluster["cluster"].address,
              "--no-progress")
    ids = _ids(out)
    assert len(ids) == len(set(ids)) and set(ids) == set(_ids(cluster["ref"]))
    nodes = {t.node_id for t in list_tasks(address=cluster["dashboard"], limit=10000, raise_on_missing_output=False)
             if t.node_id and t.state == "FINISHED"}
    alive = {n["NodeID"] for n in ray.nodes()} if ray.is_initialized() else None
    assert len(nodes) >= 2, f"tasks ran on {len(nodes)} node(s): {nodes} (alive {alive})"


def test_a_worker_node_removed_mid_run_loses_and_doubles_nothing(cluster, tmp_path):
    c = cluster["cluster"]
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "mocha.cli", "curate", *cluster["inputs"], "--output", str(out), "--ray-address",
           c.address, "--no-progress", "--set", "resources.finalize.batch_size=1"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 900
    while time.time() < deadline and not list((out / COMMITS).glob("*.json")):
        assert proc.poll() is None, "job ended before its first commit:\n" + proc.stdout.read()[-3000:]
        time.sleep(0.1)
    c.remove_node(cluster["worker"], allow_graceful=False)
    log, _ = proc.communicate(timeout=1200)
    assert proc.returncode == 0, log[-4000:]
    ids = _ids(out)
    assert len(ids) == len(set(ids)), "duplicate clip after the node loss"
    assert set(ids) == set(_ids(cluster["ref"]))
    committed = {f for r in Output.open(str(out)).commit_records() for f in r["files"]}
    assert {str(p.relative_to(out)) for p in out.glob("*/*.parquet")} >= committed
    cluster["worker"] = c.add_node(num_cpus=3, node_ip_address="127.0.0.1", object_store_memory=300 * 1024**2)
    c.wait_for_nodes()


def test_readme_ray_job_submit_form(cluster, tmp_path):
    out = tmp_path / "out"
    ray_cli = Path(sys.executable).with_name("ray")
    proc = subprocess.run([str(ray_cli), "job", "submit", "--address", cluster["dashboard"], "--working-dir", ".", "--",
                           "python", "-m", "mocha", "curate", *cluster["inputs"], "--output", str(out),
                           "--ray-address", "auto", "--no-progress"],
                          cwd=ROOT, capture_output=True, text=True, timeout=1500,
                          env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ids = _ids(out)
    assert len(ids) == len(set(ids)) and set(ids) == set(_ids(cluster["ref"]))
