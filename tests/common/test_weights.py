"""The weights registry: every entry pinned; fetch verifies every file before it becomes usable
(a real TLS server on 127.0.0.1 serves the files) and refuses a mismatch; verify re-checks the
cache; weights load without running pickled code."""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import zipfile
from pathlib import Path

import pytest
import torch

from common import weights
from common.weights import (
    LOCK_FILE,
    REGISTRY,
    ChecksumMismatch,
    ModelEntry,
    UnpinnedModel,
    UnsafeWeights,
    fetch,
    git_blob_sha1,
    load_state_dict,
    model_file,
    pin_problems,
    resolve_model,
    verify,
)
from tests.helpers.https_files import HTTPSFiles

GOOD = b"weights " * 1000
BAD = b"tampered" * 1000


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def server(tmp_path, monkeypatch):
    srv = HTTPSFiles(tmp_path / "ca.pem").start()
    monkeypatch.setenv("SSL_CERT_FILE", str(srv.ca_file))  # trust the throwaway CA, as httpx does by default
    yield srv
    srv.stop()


def url_entry(name: str, srv: HTTPSFiles, files: dict[str, bytes], **kw) -> ModelEntry:
    for f, data in files.items():
        srv.files[f] = data
    e = ModelEntry(name, "url", "test files", "MIT", "tests", files={f: srv.url(f) for f in files},
                   sha256={f: sha(d) for f, d in files.items()})
    return dataclasses.replace(e, **kw)


def register(monkeypatch, entry: ModelEntry) -> None:
    monkeypatch.setitem(REGISTRY, entry.name, entry)


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith("."))


# -- pins -------------------------------------------------------------------------------------
def test_every_registry_entry_is_pinned():
    for e in REGISTRY.values():
        assert pin_problems(e) == [], e.name
        if e.kind == "url":
            assert all(u.startswith("https://") for u in e.files.values())
            assert set(e.sha256) >= set(e.files)
    assert {e.kind for e in REGISTRY.values()} == {"hf", "url", "package"}


@pytest.mark.parametrize("change, problem", [
    (dict(files={"w.bin": "http://example.org/w.bin"}), "not an https URL"),
    (dict(sha256={"w.bin": "955717e8"}), "not a full 64-hex digest"),
    (dict(sha256={}), "no sha256 pinned"),
])
def test_pin_problems_name_each_gap_of_a_url_entry(change, problem):
    e = ModelEntry("x", "url", "s", "MIT", "t", files={"w.bin": "https://example.org/w.bin"},
                   sha256={"w.bin": sha(GOOD)})
    assert pin_problems(e) == []
    assert any(problem in p for p in pin_problems(dataclasses.replace(e, **change)))


@pytest.mark.parametrize("revision", [None, "main", "22aad52d", "v1.0"])
def test_a_hub_entry_needs_a_full_commit_hash(revision):
    e = ModelEntry("x", "hf", "org/repo", "MIT", "t", revision=revision)
    assert any("not a full commit hash" in p for p in pin_problems(e))


def test_fetch_refuses_an_unpinned_entry_before_downloading(tmp_path, monkeypatch):
    register(monkeypatch, ModelEntry("loose", "url", "s", "MIT", "t", files={"w.bin": "http://127.0.0.1:9/w.bin"}))
    monkeypatch.setattr(weights, "_download", lambda *a, **k: pytest.fail("downloaded an unpinned file"))
    with pytest.raises(UnpinnedModel, match="loose is not pinned.*not an https URL.*no sha256 pinned"):
        fetch("loose", str(tmp_path))
    assert list(tmp_path.iterdir()) == []


# -- fetch over https -------------------------------------------------------------------------
def test_fetch_verifies_records_and_resolves(tmp_path, server, monkeypatch):
    register(monkeypatch, url_entry("tiny", server, {"w.bin": GOOD}))
    dest = fetch("tiny", str(tmp_path))
    assert (dest / "w.bin").read_bytes() == GOOD and server.requests == ["w.bin"]
    lock = json.loads((dest / LOCK_FILE).read_text())
    assert lock["files"] == {"w.bin": sha(GOOD)} and lock["urls"]["w.bin"].startswith("https://127.0.0.1:")
    assert resolve_model("tiny", str(tmp_path)) == str(dest)
    assert verify("tiny", str(tmp_path)) == []
    assert leftovers(tmp_path) == []


def test_a_tampered_download_is_refused_and_the_cache_is_left_as_it_was(tmp_path, server, monkeypatch):
    entry = url_entry("tiny", server, {"w.bin": GOOD})
    register(monkeypatch, entry)
    fetch("tiny", str(tmp_path))
    server.files["w.bin"] = BAD  # the mirror now serves other bytes
    with pytest.raises(ChecksumMismatch, match=f"sha256 {sha(BAD)} .* does not match the pinned {sha(GOOD)}"):
        fetch("tiny", str(tmp_path))
    assert (tmp_path / "tiny" / "w.bin").read_bytes() == GOOD and verify("tiny", str(tmp_path)) == []
    assert leftovers(tmp_path) == []  # the temporary folder is gone
    # never fetched before: nothing usable appears
    register(monkeypatch, dataclasses.replace(entry, name="fresh"))
    with pytest.raises(ChecksumMismatch):
        fetch("fresh", str(tmp_path))
    assert not (tmp_path / "fresh").exists() and leftovers(tmp_path) == []
    with pytest.raises(weights.ModelMissing, match="mocha models fetch fresh"):
        resolve_model("fresh", str(tmp_path))


def test_a_download_larger_than_pinned_stops_early(tmp_path, server, monkeypatch):
    big = os.urandom(4 << 20)
    register(monkeypatch, url_entry("big", server, {"w.bin": big}, size={"w.bin": 1 << 20}))
    with pytest.raises(ChecksumMismatch, match="larger than the pinned 1048576 bytes"):
        fetch("big", str(tmp_path))
    assert not (tmp_path / "big").exists() and leftovers(tmp_path) == []


def test_a_redirect_to_plain_http_is_refused(tmp_path, server, monkeypatch):
    entry = url_entry("hop", server, {"w.bin": GOOD})
    server.redirects["w.bin"] = "http://127.0.0.1:9/w.bin"
    register(monkeypatch, entry)
    with pytest.raises(UnpinnedModel, match="refusing a non-https request"):
        fetch("hop", str(tmp_path))
    assert not (tmp_path / "hop").exists()


def test_a_zip_is_verified_then_unpacked_into_the_lock(tmp_path, server, monkeypatch):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("det_500m.onnx", b"det")
        z.writestr("w600k_mbf.onnx", b"rec")
    register(monkeypatch, url_entry("pack", server, {"pack.zip": buf.getvalue()}))
    dest = fetch("pack", str(tmp_path))
    lock = json.loads((dest / LOCK_FILE).read_text())["files"]
    assert set(lock) == {"pack.zip", "pack/det_500m.onnx", "pack/w600k_mbf.onnx"}
    assert open(model_file("pack", "det_*.onnx", str(tmp_path)), "rb").read() == b"det"
    (dest / "pack" / "det_500m.onnx").write_bytes(b"swapped")
    assert any("pack/det_500m.onnx: sha256" in p for p in verify("pack", str(tmp_path)))


def test_the_cli_fetches_and_refuses(tmp_path, server, monkeypatch, capsys):
    from mocha.cli import main

    register(monkeypatch, url_entry("tiny", server, {"w.bin": GOOD}))
    assert main(["models", "--models-dir", str(tmp_path), "fetch", "tiny"]) == 0
    assert "tiny: fetched and verified into" in capsys.readouterr().out
    assert main(["models", "--models-dir", str(tmp_path), "verify", "tiny"]) == 0
    server.files["w.bin"] = BAD
    assert main(["models", "--models-dir", str(tmp_path), "fetch", "tiny"]) == 1
    assert "does not match the pinned" in capsys.readouterr().err
    register(monkeypatch, ModelEntry("loose", "hf", "org/repo", "MIT", "t", revision="main"))
    assert main(["models", "--models-dir", str(tmp_path), "fetch", "loose"]) == 1
    assert "not pinned" in capsys.readouterr().err


# -- hub entries --------------------------------------------------------------------------------
HUB_FILES = {"config.json": b'{"hidden_size": 8}', "model.safetensors": b"\x08" * 4096}


@pytest.fixture
def fake_hub(monkeypatch):
    """The two hub calls, offline: the pinned commit's file records and the snapshot download."""
    served = dict(HUB_FILES)
    cfg, st = HUB_FILES["config.json"], HUB_FILES["model.safetensors"]
    records = {"config.json": ("git-sha1", hashlib.sha1(f"blob {len(cfg)}\0".encode() + cfg).hexdigest()),
               "model.safetensors": ("sha256", sha(st))}

    def digests(entry):
        return dict(records)

    def snapshot(entry, dest):
        for rel, data in served.items():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            (dest / rel).write_bytes(data)
        (dest / ".cache" / "huggingface").mkdir(parents=True)  # the hub client's bookkeeping
        (dest / ".cache" / "huggingface" / "x.metadata").write_text("etag")

    monkeypatch.setattr(weights, "_hub_digests", digests)
    monkeypatch.setattr(weights, "_hub_snapshot", snapshot)
    return served


def hub_entry(**kw) -> ModelEntry:
    return ModelEntry("hubby", "hf", "org/hubby", "Apache-2.0", "tests", **{"revision": "a" * 40, **kw})


def test_a_hub_snapshot_is_checked_against_the_pinned_commit(tmp_path, fake_hub, monkeypatch):
    register(monkeypatch, hub_entry())
    dest = fetch("hubby", str(tmp_path))
    lock = json.loads((dest / LOCK_FILE).read_text())
    assert set(lock["files"]) == set(HUB_FILES) and lock["revision"] == "a" * 40
    assert not (dest / ".cache").exists() and verify("hubby", str(tmp_path)) == []


def test_git_blob_id_is_gits_own(tmp_path):
    (tmp_path / "hello").write_bytes(b"hello\n")
    assert git_blob_sha1(tmp_path / "hello") == "ce013625030ba8dba906f756967f9e9ca394464a"  # `git hash-object`


@pytest.mark.parametrize("rel", ["model.safetensors", "config.json"])
def test_a_tampered_hub_file_is_refused(tmp_path, fake_hub, monkeypatch, rel):
    fake_hub[rel] = fake_hub[rel] + b" "
    register(monkeypatch, hub_entry())
    with pytest.raises(ChecksumMismatch, match=f"hubby/{rel}: .* recorded by commit a{{40}}"):
        fetch("hubby", str(tmp_path))
    assert not (tmp_path / "hubby").exists() and leftovers(tmp_path) == []


def test_a_hub_file_outside_the_commit_is_refused(tmp_path, fake_hub, monkeypatch):
    fake_hub["pytorch_model.bin"] = b"pickle"
    register(monkeypatch, hub_entry())
    with pytest.raises(ChecksumMismatch, match="pytorch_model.bin: not a file of commit"):
        fetch("hubby", str(tmp_path))


def test_a_registry_pin_of_a_hub_file_is_enforced_too(tmp_path, fake_hub, monkeypatch):
    register(monkeypatch, hub_entry(sha256={"model.safetensors": sha(b"something else")}))
    with pytest.raises(ChecksumMismatch, match="does not match the registry"):
        fetch("hubby", str(tmp_path))


# -- verify -------------------------------------------------------------------------------------
def test_verify_finds_every_kind_of_drift(tmp_path, fake_hub, monkeypatch):
    register(monkeypatch, hub_entry())
    dest = fetch("hubby", str(tmp_path))
    (dest / "model.safetensors").write_bytes(b"flipped")
    (dest / "config.json").unlink()
    (dest / "extra.pt").write_bytes(b"dropped in later")
    problems = verify("hubby", str(tmp_path))
    assert any("model.safetensors: sha256" in p and "!= recorded" in p for p in problems)
    assert any("config.json: missing" in p for p in problems)
    assert any("extra.pt: not part of the fetch" in p for p in problems)
    register(monkeypatch, hub_entry(revision="b" * 40))  # the registry moved on
    assert any("fetched at revision aaaa" in p and "pins bbbb" in p for p in verify("hubby", str(tmp_path)))


# -- loading ------------------------------------------------------------------------------------
class _RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_load_state_dict_reads_tensors_and_refuses_code(tmp_path):
    state = {"w": torch.arange(6.0).reshape(2, 3)}
    torch.save(state, tmp_path / "ok.pt")
    assert torch.equal(load_state_dict(tmp_path / "ok.pt")["w"], state["w"])
    from safetensors.torch import save_file

    save_file(state, str(tmp_path / "ok.safetensors"))
    assert torch.equal(load_state_dict(tmp_path / "ok.safetensors")["w"], state["w"])
    marker = tmp_path / "ran"
    torch.save({"w": state["w"], "x": _RunsCode(marker)}, tmp_path / "evil.pt")
    with pytest.raises(UnsafeWeights, match="names posix.system"):
        load_state_dict(tmp_path / "evil.pt")
    assert not marker.exists()


def test_an_allow_list_admits_only_what_it_names(tmp_path):
    from fractions import Fraction

    torch.save({"segment": Fraction(39, 5), "w": torch.ones(1)}, tmp_path / "f.pt")
    with pytest.raises(UnsafeWeights, match="fractions.Fraction"):
        load_state_dict(tmp_path / "f.pt")
    assert load_state_dict(tmp_path / "f.pt", allow=[Fraction])["segment"] == Fraction(39, 5)
    with pytest.raises(UnsafeWeights):  # the allow-list was for that call only
        load_state_dict(tmp_path / "f.pt")
