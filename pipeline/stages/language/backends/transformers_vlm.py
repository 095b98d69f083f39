"""Backend for a local vision-language model through transformers (Qwen2-VL, LLaVA, Idefics3 ...).

The model is given as a registry name, hub id already in the cache, or a local directory
(:func:`common.weights.resolve_model`; nothing downloads here). It is loaded once per worker
with ``AutoProcessor`` + ``AutoModelForImageTextToText``, on the GPU when the worker has one,
and answers batches of clips in one ``generate`` call (left padding, greedy by default).
"""
from __future__ import annotations

import logging
from typing import Optional, Sequence, Union

from pipeline.stages.language.backends.base import ChatBackend, LLMError, LLMUnavailable, Query

log = logging.getLogger(__name__)

DEFAULT_MODEL = "qwen2-vl-2b-instruct"


class TransformersVLMBackend(ChatBackend):
    name = "transformers"

    def __init__(self, *args, models_dir: Optional[str] = None, device: Optional[str] = None, **kw):
        super().__init__(*args, **kw)
        self.models_dir = models_dir
        self.model = None
        self.processor = None
        self.device = device  # the worker's device; llm.device overrides it
        self.path: Optional[str] = None

    def setup(self) -> None:
        if self.model is not None:
            return
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        from common.weights import resolve_model

        self.path = resolve_model(self.cfg.model or DEFAULT_MODEL, self.models_dir)
        self.device = self.cfg.device or self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        if self.cfg.dtype == "auto":
            dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        else:
            dtype = getattr(torch, self.cfg.dtype)
        self.processor = AutoProcessor.from_pretrained(self.path)
        tok = getattr(self.processor, "tokenizer", None)
        if tok is not None:
            tok.padding_side = "left"  # decoder-only batched generation continues from the right edge
            if tok.pad_token is None:
                tok.pad_token = tok.eos_token
        self.model = AutoModelForImageTextToText.from_pretrained(self.path, dtype=dtype).to(self.device).eval()
        log.info("VLM %s loaded on %s (%s)", self.path, self.device, dtype)

    def info(self) -> dict:
        return {**super().info(), "model": self.cfg.model or DEFAULT_MODEL, "device": self.device}

    def _texts_and_images(self, queries: Sequence[Query]):
        from PIL import Image

        texts, images = [], []
        for q in queries:
            messages = [
                {"role": "system", "content": [{"type": "text", "text": q.system}]},
                {"role": "user", "content": [{"type": "image"} for _ in q.images] + [{"type": "text", "text": q.text}]},
            ]
            texts.append(self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))
            images.append([Image.fromarray(img) for img in q.images])
        return texts, images

    def generate(self, queries: Sequence[Query]) -> list[str]:
        import torch

        texts, images = self._texts_and_images(queries)
        kwargs = {"text": texts, "return_tensors": "pt", "padding": True}
        if any(images):
            kwargs["images"] = images
        inputs = self.processor(**kwargs).to(self.device)
        gen = {"max_new_tokens": self.cfg.max_new_tokens, "do_sample": self.cfg.temperature > 0}
        if self.cfg.temperature > 0:
            gen["temperature"] = self.cfg.temperature
        with torch.inference_mode():
            out = self.model.generate(**inputs, **gen)
        new = out[:, inputs["input_ids"].shape[1]:]
        return self.processor.batch_decode(new, skip_special_tokens=True)

    def complete(self, queries: Sequence[Query]) -> list[Union[str, LLMError]]:
        self.setup()
        out: list[Union[str, LLMError]] = []
        bs = self.cfg.batch_size
        for i in range(0, len(queries), bs):
            chunk = list(queries[i:i + bs])
            try:
                out.extend(self.generate(chunk))
            except Exception as e:  # OOM, a processor that rejects the input ...: these clips only
                log.warning("VLM generate failed on %d clip(s): %s", len(chunk), e)
                out.extend([LLMUnavailable(f"local VLM failed: {type(e).__name__}: {e}")] * len(chunk))
        return out
