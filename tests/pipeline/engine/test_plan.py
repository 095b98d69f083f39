"""The stage plan: operators that load no model in the config share the previous one's worker."""
import sys

from pipeline.engine.config import load_config
from pipeline.engine.plan import build_stages, stage_plan
from pipeline.engine.runners import local_cpus


def _bare(tmp_path, *more):
    """A config with nothing fetched (a Wav2Vec2 in the user's Hugging Face cache counts too)."""
    return load_config(None, [f"run.models_dir={tmp_path}", f"audio_embed.model={tmp_path}/no-wav2vec2", *more])


def _names(cfg):
    return [(name, [s.name for s in build_stages(stages, cfg)]) for name, stages, _res in stage_plan(cfg)]


def test_embedded_defaults_fold_the_model_free_operators_into_two_workers(tmp_path):
    cfg = _bare(tmp_path)  # every fallback
    assert _names(cfg) == [("speech", ["speech", "music"]),
                           ("visual", ["visual", "speakers", "audio_embed", "character", "caption"])]
    # the order of the stages is the unfolded plan's
    assert [n for _o, st in _names(cfg) for n in st] == ["speech", "music", "visual", "speakers", "audio_embed",
                                                          "character", "caption"]


def test_an_operator_with_a_model_keeps_its_own_worker_and_resources(tmp_path):
    ckpt = tmp_path / "lr_asd.model"
    ckpt.write_bytes(b"present")  # the plan only asks whether the file is there
    cfg = _bare(tmp_path, f"speakers.checkpoint={ckpt}", "llm.backend=openai", "llm.model=m",
                "resources.speakers.num_cpus=1.5")
    plan = stage_plan(cfg)
    assert [(n, [s.name for s in build_stages(st, cfg)]) for n, st, _r in plan] == [
        ("speech", ["speech", "music"]), ("visual", ["visual"]), ("speakers", ["speakers", "audio_embed"]),
        ("llm", ["character", "caption"])]
    assert dict((n, r) for n, _s, r in plan)["speakers"].num_cpus == 1.5
    # the embedded cluster reserves CPUs for the workers the plan has, not for folded ones
    assert local_cpus(_bare(tmp_path, "resources.music.num_cpus=8")) == local_cpus(_bare(tmp_path))


def test_building_a_model_free_plan_does_not_import_torch_for_the_visual_worker(tmp_path):
    import subprocess

    code = ("import sys; from pipeline.engine.config import load_config; from pipeline.engine.plan import "
            "build_stages, stage_plan; from pipeline.engine.runners import StageActor; "
            f"cfg = load_config(None, ['run.models_dir={tmp_path}', 'audio_embed.model={tmp_path}/none']); "
            "op = stage_plan(cfg)[1]; "
            "a = StageActor(op[1], cfg, op[2]); [s.setup() for s in a.stages]; "
            "print('torch' in sys.modules, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"], out.stderr[-2000:]
