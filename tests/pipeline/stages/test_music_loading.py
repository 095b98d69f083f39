"""Demucs packages load without running pickled code: what a published package holds (the model
class, a Fraction segment, numpy scalars) loads; anything that would execute is refused."""
from __future__ import annotations

import os
from fractions import Fraction

import numpy as np
import pytest
import torch

from common.weights import UnsafeWeights
from pipeline.stages.music import load_demucs


def _tiny_package(**extra_kwargs) -> dict:
    from demucs.htdemucs import HTDemucs
    from demucs.states import get_state

    torch.manual_seed(0)
    net = HTDemucs(sources=["drums", "bass", "other", "vocals"], channels=8, depth=2, t_layers=1, nfft=512,
                   dconv_comp=2, segment=Fraction(39, 5), bottom_channels=0)
    args, kwargs = net._init_args_kwargs
    return {"klass": HTDemucs, "args": args, "kwargs": {**kwargs, **extra_kwargs},
            "state": get_state(net, None, False), "training_args": {"epochs": 360}, "version": "4.1.0"}


def test_a_published_style_package_loads_weights_only(tmp_path):
    path = tmp_path / "tiny.th"
    pkg = _tiny_package(t_dropout=np.float64(0.0))
    torch.save(pkg, path)
    net, name = load_demucs(str(path))
    assert name == "tiny.th" and net.segment == Fraction(39, 5) and not net.training
    key = next(iter(pkg["state"]))
    assert torch.equal(net.state_dict()[key], pkg["state"][key])


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_package_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    pkg = _tiny_package()
    pkg["training_args"] = {"hook": _RunsCode(marker)}
    path = tmp_path / "evil.th"
    torch.save(pkg, path)
    with pytest.raises(UnsafeWeights, match="system"):
        load_demucs(str(path))
    assert not marker.exists()
