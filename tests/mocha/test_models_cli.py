import json

import pytest

from common.weights import LOCK_FILE, REGISTRY, ModelMissing, resolve_model, sha256_file, verify
from tests.conftest import run_mocha


def test_list_shows_registry_and_licences(tmp_path):
    out = run_mocha("models", "--models-dir", str(tmp_path), "list", env={"COLUMNS": "250"}).stdout
    for name in ("wav2vec2-base-960h", "htdemucs", "scrfd-500m", "syncnet-v2"):
        assert name in out
    assert "non-commercial" in out and "missing" in out


def test_missing_model_error_names_the_fix(tmp_path):
    with pytest.raises(ModelMissing, match="mocha models fetch wav2vec2-base-960h"):
        resolve_model("wav2vec2-base-960h", str(tmp_path))
    with pytest.raises(ModelMissing, match="mocha models fetch htdemucs"):
        resolve_model("htdemucs", str(tmp_path))


def test_fetched_model_resolves_and_verifies_then_detects_tampering(tmp_path):
    d = tmp_path / "htdemucs"
    d.mkdir()
    f = d / "955717e8-8726e21a.th"
    f.write_bytes(b"weights")
    (d / LOCK_FILE).write_text(json.dumps({"files": {f.name: sha256_file(f)}}))
    assert resolve_model("htdemucs", str(tmp_path)) == str(d)
    # the registry pins demucs' sha256 prefix: these bytes do not match it
    assert any("does not match the registry" in p for p in verify("htdemucs", str(tmp_path)))
    f.write_bytes(b"tampered")
    assert any("!= recorded" in p for p in verify("htdemucs", str(tmp_path)))
    proc = run_mocha("models", "--models-dir", str(tmp_path), "verify", "htdemucs", check=False)
    assert proc.returncode == 1


def test_fetch_offline_fails_cleanly(tmp_path):
    proc = run_mocha("models", "--models-dir", str(tmp_path), "fetch", "nonexistent-model", check=False)
    assert proc.returncode == 2 and "unknown model" in proc.stderr
    assert "yunet-2023mar" in REGISTRY and REGISTRY["scrfd-500m"].licence.startswith("non-commercial")


def test_strict_models_fails_before_work(tmp_path):
    proc = run_mocha("curate", str(tmp_path), "--output", str(tmp_path / "o"), "--strict-models", "--no-progress",
                     "--runner", "local", "--set", f"run.models_dir={tmp_path}", check=False)
    assert proc.returncode == 2 and "--strict-models" in proc.stderr and "mocha models fetch" in proc.stderr
    assert not (tmp_path / "o" / "ledger").exists()


def test_model_file_finds_the_detector_inside_a_fetched_zip(tmp_path):
    import zipfile

    from common.weights import model_file

    d = tmp_path / "scrfd-500m"
    d.mkdir()
    with zipfile.ZipFile(d / "buffalo_sc.zip", "w") as z:
        z.writestr("buffalo_sc/det_500m.onnx", b"det")
        z.writestr("buffalo_sc/w600k_mbf.onnx", b"rec")
    (d / LOCK_FILE).write_text("{}")
    got = model_file("scrfd-500m", "det_*.onnx", str(tmp_path))
    assert got.endswith("det_500m.onnx") and open(got, "rb").read() == b"det"
    assert model_file(str(d / "buffalo_sc.zip"), "*.onnx") == str(d / "buffalo_sc.zip")  # a file is itself


def test_configured_but_missing_visual_model_stops_the_run(tmp_path):
    proc = run_mocha("curate", str(tmp_path), "--output", str(tmp_path / "o"), "--no-progress", "--runner", "local",
                     "--set", f"run.models_dir={tmp_path}", "--set", "visual.faces.yunet_onnx=yunet-2023mar", check=False)
    assert proc.returncode == 2 and "mocha models fetch yunet-2023mar" in proc.stderr
