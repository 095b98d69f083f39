"""LR-ASD: the published checkpoints load unchanged, and the batched windowed scoring (shared
encoder passes, windows of all tracks and durations batched) gives the published per-window
evaluation, checked against a straightforward reference written here from the state dict."""
from __future__ import annotations

import math

import cv2

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from common.weights import REGISTRY, sha256_file
from model.lr_asd import (
    LRASD,
    PUBLISHED_WINDOWS_S,
    REACH,
    load_lr_asd,
    usable_frames,
    windowed_scores,
)

AVA, TALKSET = "lr_asd_pretrain_AVA.model", "lr_asd_finetuning_TalkSet.model"


def _random_net(seed: int = 0) -> LRASD:
    torch.manual_seed(seed)
    net = LRASD()
    for m in net.modules():  # non-trivial BN statistics, so folding them is exercised
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return net.eval()


def _inputs(lengths, seed=0):
    rng = np.random.default_rng(seed)
    faces, mfccs = [], []
    for n in lengths:
        # smooth in time, so the temporal layers see structure and windows matter
        base = rng.integers(0, 255, (n // 5 + 2, 112, 112)).astype(np.float32)
        f = np.stack([base[i // 5] * (1 - (i % 5) / 5) + base[i // 5 + 1] * ((i % 5) / 5) for i in range(n)])
        faces.append(f.astype(np.uint8))
        mfccs.append((rng.standard_normal((4 * n + 2, 13)) * 8).astype(np.float32))
    return faces, mfccs


# --- a straightforward reference of the published network and evaluation, from the state dict

def _cbr(sd, x, pre, conv, stride, pad, fn):
    x = fn(x, sd[f"{pre}.{conv}.weight"], None, stride, pad)
    n = conv.replace("_", "_norm_")
    x = F.batch_norm(x, sd[f"{pre}.{n}.running_mean"], sd[f"{pre}.{n}.running_var"], sd[f"{pre}.{n}.weight"],
                     sd[f"{pre}.{n}.bias"], False, 0.0, 1e-3)
    return F.relu(x)


def _gate(sd, x, pre):
    x = x.transpose(1, 2)
    w = torch.sigmoid(F.batch_norm(F.conv1d(x, sd[pre + ".attention.weight"]), sd[pre + ".bn.running_mean"],
                                   sd[pre + ".bn.running_var"], sd[pre + ".bn.weight"], sd[pre + ".bn.bias"],
                                   False, 0.0, 1e-3))
    return (x * w).transpose(1, 2)


def _gru(sd, x, pre):
    g = torch.nn.GRU(x.shape[-1], 64, batch_first=True)
    g.load_state_dict({k[len(pre):]: v for k, v in sd.items() if k.startswith(pre)})
    return g(x)[0]


@torch.no_grad()
def reference_logits(sd: dict, mfcc: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """One window, as Light-ASD/LR-ASD's ASD_Model + lossAV compute it."""
    x = ((torch.from_numpy(faces).float() / 255 - 0.4161) / 0.1688)[None, None]
    for b in (1, 2, 3):
        pre = f"model.visualEncoder.block{b}"
        x = _cbr(sd, x, pre, "s_1", (1, 2, 2) if b == 1 else 1, (0, 2, 2), F.conv3d)
        x = _cbr(sd, x, pre, "s_2", 1, (0, 1, 1), F.conv3d)
        x = _cbr(sd, x, pre, "t_1", 1, (2, 0, 0), F.conv3d)
        x = _cbr(sd, x, pre, "t_2", 1, (1, 0, 0), F.conv3d)
        if b < 3:
            x = F.max_pool3d(x, (1, 3, 3), (1, 2, 2), (0, 1, 1))
    v = x.transpose(1, 2).reshape(-1, 128, x.shape[3], x.shape[4]).amax((2, 3))[None]
    y = torch.from_numpy(mfcc).float()[None, None].transpose(2, 3)
    for b in (1, 2, 3):
        pre = f"model.audioEncoder.block{b}"
        y = _cbr(sd, y, pre, "m_1", 1, (2, 0), F.conv2d)
        y = _cbr(sd, y, pre, "m_2", 1, (1, 0), F.conv2d)
        y = _cbr(sd, y, pre, "t_1", 1, (0, 2), F.conv2d)
        y = _cbr(sd, y, pre, "t_2", 1, (0, 1), F.conv2d)
        if b < 3:
            y = F.max_pool2d(y, (1, 3), (1, 2), (0, 1))
    a = y.mean(2).transpose(1, 2)
    z = _gate(sd, torch.cat((a, v), 2), "model.fusion")
    fwd = _gru(sd, z, "model.detector.gru_forward.")
    bwd = _gru(sd, z.flip(1), "model.detector.gru_backward.").flip(1)
    z = _gate(sd, torch.cat((fwd, bwd), 2), "model.detector.attention")
    return (z @ sd["lossAV.FC.weight"].T + sd["lossAV.FC.bias"])[0, :, 1].numpy()


def reference_scores(sd: dict, faces: np.ndarray, mfcc: np.ndarray, durations=PUBLISHED_WINDOWS_S) -> np.ndarray:
    """Columbia_test.evaluate_network: for each duration, consecutive windows scored one by
    one; the per-frame scores of all durations averaged."""
    length = min(len(mfcc) - len(mfcc) % 4, 4 * len(faces)) / 100
    all_scores = []
    for d in sorted(set(durations)):
        scores = []
        for i in range(math.ceil(length / d)):
            a = mfcc[i * d * 100:min((i + 1) * d * 100, int(round(length * 100)))]
            v = faces[i * d * 25:min((i + 1) * d * 25, int(round(length * 25)))]
            scores.extend(reference_logits(sd, a, v))
        all_scores.append(scores)
    return np.mean(np.array(all_scores), axis=0)


# --- without weights -------------------------------------------------------------------------

def test_state_dict_names_are_the_published_ones(tmp_path):
    net = _random_net()
    keys = set(net.state_dict())
    assert {"lossAV.FC.weight", "lossV.FC.bias", "model.fusion.attention.weight",
            "model.detector.gru_backward.weight_hh_l0", "model.detector.attention.bn.running_var",
            "model.visualEncoder.block1.s_1.weight", "model.audioEncoder.block3.t_norm_2.num_batches_tracked"} <= keys
    assert len(keys) == 168 and sum(p.numel() for p in net.parameters()) == 837156
    path = tmp_path / "w.model"
    torch.save(net.state_dict(), path)
    again = load_lr_asd(path)  # the loading path of the real checkpoints (weights_only)
    faces, mfccs = _inputs([16])
    with torch.no_grad():
        x = net(torch.from_numpy(mfccs[0][:64])[None], torch.from_numpy(faces[0])[None])
        y = again(torch.from_numpy(mfccs[0][:64])[None], torch.from_numpy(faces[0])[None])
    assert x.shape == (1, 16) and torch.allclose(x, y)


def test_eval_path_folds_batchnorm_without_changing_results():
    net = _random_net(1)
    sd = net.state_dict()
    faces, mfccs = _inputs([20], seed=1)
    with torch.no_grad():
        got = net(torch.from_numpy(mfccs[0][:80])[None], torch.from_numpy(faces[0])[None])[0].numpy()
    np.testing.assert_allclose(got, reference_logits(sd, mfccs[0][:80], faces[0]), atol=1e-4)


def test_window_ends_recomputed_layer_by_layer_equal_windows_encoded_alone():
    net = _random_net(4)
    faces, _ = _inputs([100], seed=4)
    x = torch.from_numpy(faces[0])[None]
    with torch.no_grad():
        full, first, last = net.model.embed_faces_with_edges(x, [25, 50], [50, 75])
        np.testing.assert_allclose(full.numpy(), net.model.embed_faces(x)[0].numpy(), atol=1e-5)
        assert first.shape == last.shape == (2, REACH, 128)
        for k, p in enumerate([25, 50]):  # a window starting at p, encoded on its own
            alone = net.model.embed_faces(x[:, p:p + 25])[0]
            np.testing.assert_allclose(first[k].numpy(), alone[:REACH].numpy(), atol=1e-5)
            assert not np.allclose(first[k].numpy(), full[p:p + REACH].numpy(), atol=1e-3)  # the padding shows
        for k, q in enumerate([50, 75]):  # a window ending at q
            alone = net.model.embed_faces(x[:, q - 25:q])[0]
            np.testing.assert_allclose(last[k].numpy(), alone[-REACH:].numpy(), atol=1e-5)
        # beyond REACH a window's outputs are the sequence's: what the recomputation relies on
        np.testing.assert_allclose(net.model.embed_faces(x[:, 25:50])[0, REACH:-REACH].numpy(),
                                   full[25 + REACH:50 - REACH].numpy(), atol=1e-5)


@pytest.mark.slow  # ~20 s of CPU convolutions
def test_shared_encoders_and_batching_equal_the_per_window_evaluation():
    # 1-3 s windows keep this quick; the real-clip test below runs the published 1-6 s
    net = _random_net(2)
    sd = net.state_dict()
    durations = (1, 2, 3)
    faces, mfccs = _inputs([60, 28, 10], seed=2)  # partial last windows, a track under 2 x REACH
    shared = windowed_scores(net, faces, mfccs, durations, max_batch_frames=200)
    direct = windowed_scores(net, faces, mfccs, durations, shared_encoders=False)
    for f, m, a, b in zip(faces, mfccs, shared, direct):
        assert len(a) == usable_frames(len(f), len(m)) == len(f)
        np.testing.assert_allclose(a, b, atol=1e-4)
    np.testing.assert_allclose(shared[1], reference_scores(sd, faces[1], mfccs[1], durations), atol=1e-4)


def test_per_window_scores_and_duplicate_durations():
    net = _random_net(3)
    faces, mfccs = _inputs([50], seed=3)
    means, per = windowed_scores(net, faces, mfccs, windows_s=(1, 1, 2), per_window=True)
    assert sorted(per) == [1, 2]  # a duration listed twice counts once, as published
    np.testing.assert_allclose(means[0], np.mean([per[d][0] for d in (1, 2)], axis=0), atol=1e-6)
    # 1 s windows end at frame 25; a 2 s window holds frames 0..49 in one: they differ there
    assert not np.allclose(per[1][0][20:30], per[2][0][20:30])


def test_registry_pins_the_published_commit():
    e = REGISTRY["lr-asd"]
    commit = "1b6dcd2d8fc2895683de6508ec6294ec47d388ca"
    assert set(e.files) == {"pretrain_AVA.model", "finetuning_TalkSet.model"}
    assert all(u == f"https://github.com/Junhua-Liao/LR-ASD/raw/{commit}/weight/{f}" for f, u in e.files.items())
    assert all(len(h) == 64 for h in e.sha256.values()) and e.licence == "MIT"


# --- the published weights -------------------------------------------------------------------

@pytest.mark.realdata
def test_published_checkpoints_load_and_match_the_registry(weights_dir):
    for local, name in ((AVA, "pretrain_AVA.model"), (TALKSET, "finetuning_TalkSet.model")):
        assert sha256_file(weights_dir / local) == REGISTRY["lr-asd"].sha256[name]
        net = load_lr_asd(weights_dir / local)
        assert sum(p.numel() for p in net.parameters()) == 837156
    ava = torch.load(weights_dir / AVA, map_location="cpu", weights_only=True)
    talk = torch.load(weights_dir / TALKSET, map_location="cpu", weights_only=True)
    assert not torch.equal(ava["lossAV.FC.weight"], talk["lossAV.FC.weight"])


@pytest.mark.realdata
@pytest.mark.parametrize("weights", [AVA, TALKSET])
def test_reproduces_the_published_scoring_on_a_real_clip(real_dir, weights_dir, weights):
    from pipeline.stages.visual.speakers import SpeakersConfig, crop_boxes, face_crop, track_audio
    from pipeline.stages.visual.faces import FacesConfig, detect_frames, make_detector
    from pipeline.stages.visual.sync import mfcc
    from pipeline.stages.visual.tracking import character_tracks, track_faces
    from tests.helpers.visual_clips import frames_25, pcm_for, real

    path = real(real_dir, "closeup_talk_hdtf_katiehill.mp4")
    frames = frames_25(path, 5.0)  # 125 frames: every duration has a partial or whole-clip window
    pcm = pcm_for(path, len(frames))
    det = make_detector(FacesConfig(yunet_onnx=str(weights_dir / "face_detection_yunet_2023mar.onnx")))
    tracks = track_faces(detect_frames(det, frames, 2, 24))
    track = character_tracks(tracks, 63, frames.shape[2], frames.shape[1], 5, 0.3)[0][0]
    params = crop_boxes(track.boxes_per_frame(len(frames)), SpeakersConfig().box_median_frames)
    gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    crops = np.stack([face_crop(g, *p) for g, p in zip(gray, params)])
    feats = mfcc(track_audio(pcm, 0, len(frames) - 1))
    assert len(feats) == 4 * len(frames)

    net = load_lr_asd(weights_dir / weights)
    ours = windowed_scores(net, [crops], [feats])[0]
    sd = torch.load(weights_dir / weights, map_location="cpu", weights_only=True)
    ref = reference_scores(sd, crops, feats)
    assert ours.shape == ref.shape == (125,)
    np.testing.assert_allclose(ours, ref, atol=1e-4)
    if weights == AVA:
        assert (ours >= 0).mean() > 0.8  # she talks throughout
