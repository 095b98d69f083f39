"""Local VLM backend end to end with a tiny random LLaVA built here, saved with save_pretrained
and loaded through the same code as a real model path. Its random output must end as
`llm_invalid_output`, never as a crash."""
from __future__ import annotations

import json

import numpy as np
import pytest

from common.media import encode_mp4
from pipeline.stages.language.caption import CaptionStage
from pipeline.stages.language.character import CharacterFilterStage
from pipeline.stages.language.config import LLMConfig

CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {% if m['content'] is string %}{{ m['content'] }}{% else %}"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>{% else %}{{ c['text'] }}{% endif %}{% endfor %}"
    "{% endif %}\n{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}"
)


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(['{"has_prominent_character": true, "reason": "a person talks"}'] * 8,
                            trainers.BpeTrainer(vocab_size=320, special_tokens=["<unk>", "<s>", "</s>", "<pad>", "<image>"],
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    text_tok = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                       pad_token="<pad>", extra_special_tokens={"image_token": "<image>"})
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessorPil(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28}),
        tokenizer=text_tok, patch_size=14, vision_feature_select_strategy="default", num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE)
    cfg = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                       image_size=28, patch_size=14),
        text_config=LlamaConfig(vocab_size=len(text_tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=4096,
                                pad_token_id=text_tok.pad_token_id, bos_token_id=text_tok.bos_token_id,
                                eos_token_id=text_tok.eos_token_id),
        image_token_index=text_tok.convert_tokens_to_ids("<image>"), vision_feature_select_strategy="default",
        vision_feature_layer=-1)
    import torch

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny_llava")
    LlavaForConditionalGeneration(cfg).save_pretrained(path)
    processor.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def video() -> bytes:
    rng = np.random.default_rng(1)
    return encode_mp4([rng.integers(0, 255, (40, 56, 3), dtype=np.uint8) for _ in range(12)], fps=25.0)


def make_row(video, i):
    faces = [{"track_id": 0, "coverage": 1.0, "height_ratio": 0.5, "center": [0.5, 0.5], "speaking": True, "sync_conf": 4.0}]
    return {"clip_id": f"c{i}", "start_s": 0.0, "end_s": 0.48, "video": video, "width": 56, "height": 40,
            "has_audio": True, "speech_ratio": 0.8, "faces": json.dumps(faces), "shot_size": "close_up",
            "backends": "{}", "reject_stage": None}


def test_tiny_vlm_end_to_end_invalid_output(tiny_vlm, video, monkeypatch):
    from pipeline.stages.language.backends.transformers_vlm import TransformersVLMBackend

    calls = []
    real_generate = TransformersVLMBackend.generate

    def spy(self, queries):
        texts = real_generate(self, queries)
        calls.append(([len(q.images) for q in queries], texts))
        return texts

    monkeypatch.setattr(TransformersVLMBackend, "generate", spy)
    cfg = LLMConfig(backend="transformers", model=str(tiny_vlm), max_new_tokens=16, retries=1, backoff_s=0.0,
                    batch_size=2, max_keyframes=2, keyframe_max_side=64)
    stage = CharacterFilterStage(llm=cfg)
    rows = stage.run([make_row(video, i) for i in range(3)])

    # every clip: two attempts, answers that are not the verdict JSON -> llm_invalid_output
    assert [(r["reject_stage"], r["reject_reason"], r["status"]) for r in rows] == [("character", "llm_invalid_output", "rejected")] * 3
    info = json.loads(rows[0]["backends"])["character"]
    assert info["backend"] == "transformers" and info["model"] == str(tiny_vlm) and info["device"] == "cpu"
    assert "invalid" in info["error"] or "not JSON" in info["error"]
    # batched: 3 clips in batches of 2, twice (first attempt + one retry); 2 keyframes each
    assert [imgs for imgs, _ in calls] == [[2, 2], [2], [2, 2], [2]]
    assert all(isinstance(t, str) for _, texts in calls for t in texts)
    be = stage.be
    assert type(be.model).__name__ == "LlavaForConditionalGeneration" and be.path == str(tiny_vlm)

    # the caption stage in the same worker shares the loaded model (one model per actor)
    cap_stage = CaptionStage(llm=cfg, character=stage.character_cfg)
    cap_stage.setup()
    assert cap_stage.be is be


def test_generate_failure_is_unavailable_not_a_crash(tiny_vlm, video, monkeypatch):
    from pipeline.stages.language.backends.transformers_vlm import TransformersVLMBackend

    def boom(self, queries):
        raise RuntimeError("CUDA out of memory")

    monkeypatch.setattr(TransformersVLMBackend, "generate", boom)
    cfg = LLMConfig(backend="transformers", model=str(tiny_vlm), retries=0, max_keyframes=1, keyframe_max_side=64)
    (r,) = CharacterFilterStage(llm=cfg).run([make_row(video, 0)])
    assert r["reject_reason"] == "llm_unavailable"
    assert "out of memory" in json.loads(r["backends"])["character"]["error"]


def test_missing_model_names_the_fetch_command(tmp_path):
    from common.weights import ModelMissing
    from pipeline.stages.language.backends.transformers_vlm import TransformersVLMBackend

    be = TransformersVLMBackend(LLMConfig(backend="transformers"), None, None, models_dir=str(tmp_path))
    with pytest.raises(ModelMissing, match="mocha models fetch qwen2-vl-2b-instruct"):
        be.setup()
