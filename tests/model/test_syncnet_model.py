"""SyncNet v2 network: published checkpoint key layout, loading (weights only: a pickle that would
run code is refused), and the published scoring end
to end on a real clip (random weights: the numbers are meaningless, the plumbing is not)."""
from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from common.weights import UnsafeWeights
from model.syncnet import SyncNet, load_syncnet
from pipeline.stages.visual.sync import SyncConfig, SyncScorer
from tests.helpers.visual_clips import frames_25, pcm_for, real

# Parameter shapes of syncnet_v2.model (joonson/syncnet_python), stated independently of our
# module: conv layers at Sequential indices 0, 4, 8, 11, 14, 18 with BatchNorm right after each.
_AUD_CONV = {0: (64, 1, 3, 3), 4: (192, 64, 3, 3), 8: (384, 192, 3, 3), 11: (256, 384, 3, 3),
             14: (256, 256, 3, 3), 18: (512, 256, 5, 4)}
_LIP_CONV = {0: (96, 3, 5, 7, 7), 4: (256, 96, 1, 5, 5), 8: (256, 256, 1, 3, 3), 11: (256, 256, 1, 3, 3),
             14: (256, 256, 1, 3, 3), 18: (512, 256, 1, 6, 6)}


def published_shapes() -> dict:
    shapes = {}
    for net, convs in (("netcnnaud", _AUD_CONV), ("netcnnlip", _LIP_CONV)):
        for i, w in convs.items():
            shapes[f"{net}.{i}.weight"] = w
            shapes[f"{net}.{i}.bias"] = (w[0],)
            for p in ("weight", "bias", "running_mean", "running_var"):
                shapes[f"{net}.{i + 1}.{p}"] = (w[0],)
    for fc in ("netfcaud", "netfclip"):
        shapes.update({f"{fc}.0.weight": (512, 512), f"{fc}.0.bias": (512,), f"{fc}.3.weight": (1024, 512),
                       f"{fc}.3.bias": (1024,)})
        for p in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{fc}.1.{p}"] = (512,)
    return shapes


def random_checkpoint(seed: int = 0, prefix: str = "") -> dict:
    g = torch.Generator().manual_seed(seed)
    state = {}
    for k, shape in published_shapes().items():
        if k.endswith("running_var"):
            state[prefix + k] = torch.rand(shape, generator=g) + 0.5
        else:
            state[prefix + k] = torch.randn(shape, generator=g) * 0.05
    return state


def test_module_layout_matches_published_checkpoint():
    own = {k: tuple(v.shape) for k, v in SyncNet().state_dict().items() if not k.endswith("num_batches_tracked")}
    assert own == published_shapes()


def test_embedding_shapes():
    net = SyncNet().eval()
    with torch.no_grad():
        a, v = net(torch.zeros(2, 1, 13, 20), torch.zeros(2, 3, 5, 224, 224))
    assert a.shape == v.shape == (2, 1024)


def test_loads_published_layout_from_file(tmp_path):
    state = random_checkpoint(prefix="__S__.")  # as saved from a SyncNetInstance
    path = tmp_path / "syncnet_v2.model"
    torch.save(state, path)
    net = load_syncnet(path)
    assert torch.equal(net.state_dict()["netcnnlip.18.weight"], state["__S__.netcnnlip.18.weight"])
    assert not net.training


def test_loads_the_published_pre_1_6_format_and_safetensors(tmp_path):
    # syncnet_v2.model predates torch's zip format: the weights-only unpickler reads it too
    state = random_checkpoint(seed=2)
    legacy = tmp_path / "syncnet_v2.model"
    torch.save(state, legacy, _use_new_zipfile_serialization=False)
    assert not zipfile.is_zipfile(legacy)
    net = load_syncnet(legacy)
    assert torch.equal(net.state_dict()["netfcaud.3.weight"], state["netfcaud.3.weight"])
    from safetensors.torch import save_file

    st = tmp_path / "syncnet_v2.safetensors"
    save_file(state, str(st))
    assert torch.equal(load_syncnet(st).state_dict()["netcnnaud.0.weight"], state["netcnnaud.0.weight"])


class _RunsCode:
    """Unpickling this runs a shell command: what a tampered checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("legacy", [False, True])
def test_a_checkpoint_that_would_run_code_is_refused_and_nothing_runs(tmp_path, legacy):
    marker = tmp_path / "pwned"
    state = random_checkpoint()
    state["netcnnaud.0.bias"] = _RunsCode(marker)  # hidden among real tensors
    path = tmp_path / "syncnet_v2.model"
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)
    with pytest.raises(UnsafeWeights, match="system"):
        load_syncnet(path)
    assert not marker.exists()
    # the same bytes unpickled the unsafe way would have run the command: the test is real
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_a_file_that_is_no_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "syncnet_v2.model"
    path.write_bytes(b"<html>404 not found</html>")
    with pytest.raises(ValueError, match="not a torch checkpoint"):
        load_syncnet(path)


def test_rejects_a_checkpoint_of_another_network(tmp_path):
    state = random_checkpoint()
    state["netcnnaud.18.weight"] = torch.zeros(512, 256, 3, 3)
    del state["netfclip.3.bias"]
    with pytest.raises(ValueError, match="netfclip.3.bias"):
        load_syncnet(state)
    with pytest.raises(FileNotFoundError, match="syncnet_checkpoint"):
        load_syncnet(tmp_path / "missing.model")


@pytest.mark.realdata
def test_published_scoring_end_to_end_on_real_clip(tmp_path, real_dir):
    path = tmp_path / "syncnet_v2.model"
    torch.save(random_checkpoint(seed=1), path)
    scorer = SyncScorer(SyncConfig(syncnet_checkpoint=str(path)))
    assert scorer.info()["backend"] == "syncnet-v2" and scorer.min_conf == SyncConfig().syncnet_min_conf
    assert scorer.realign_deadband == 0  # SyncNet offsets are applied as measured
    name = real(real_dir, "closeup_talk_hdtf_katiehill.mp4")
    frames = frames_25(name, 1.6)
    h, w = frames.shape[1:3]
    boxes = np.tile(np.array([[0.2 * w, 0.15 * h, 0.8 * w, 0.85 * h]], np.float32), (len(frames), 1))
    r = scorer.score(frames, boxes, pcm_for(name, len(frames)))
    assert r.backend == "syncnet-v2"
    assert r.curve.shape == (31,)
    assert np.isfinite(r.curve).all() and r.dist == pytest.approx(float(r.curve.min()))
    assert r.offset == 15 - int(np.argmin(r.curve))
    assert r.conf == pytest.approx(float(np.median(r.curve) - r.curve.min()))
