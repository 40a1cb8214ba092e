"""Greedy decoding of one prompt for one or more variants.

Paper setting: greedy, at most 128 new tokens. The base model answers for "vanilla"; LoRA variants
are adapters on the same base (see variants.py), so comparing variants never reloads weights.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from mdrag.config import LIMITS
from mdrag.generation.model import LoadedModel
from mdrag.generation.variants import adapter_dir, get_variant


@dataclass
class Generation:
    variant: str
    token_ids: list[int]  # generated tokens only, without the prompt and the end-of-turn token
    text: str
    seconds: float


class Generator:
    def __init__(self, loaded: LoadedModel, max_new_tokens: int = LIMITS.max_new_tokens):
        self.loaded = loaded
        self.max_new_tokens = max_new_tokens

    @property
    def tokenizer(self):
        return self.loaded.tokenizer

    def _stop_ids(self) -> list[int]:
        tok = self.tokenizer
        ids = {tok.eos_token_id}
        for special in ("<|im_end|>", "<|eot_id|>", "<|end|>"):
            tid = tok.convert_tokens_to_ids(special)
            if isinstance(tid, int) and tid != tok.unk_token_id:
                ids.add(tid)
        return sorted(i for i in ids if i is not None)

    def generate(self, prompt_ids: list[int], variants: list[str]) -> list[Generation]:
        import torch

        for name in variants:
            if not get_variant(name).is_base:
                adapter_dir(name)  # raises a clear error until LoRA adapters are trained and shipped
        stop = self._stop_ids()
        out = []
        for name in variants:
            start = time.perf_counter()
            input_ids = torch.tensor([prompt_ids])  # (1, prompt_len)
            with torch.inference_mode():
                seq = self.loaded.model.generate(
                    input_ids=input_ids, attention_mask=torch.ones_like(input_ids), do_sample=False,
                    max_new_tokens=self.max_new_tokens, eos_token_id=stop,
                    pad_token_id=self.tokenizer.pad_token_id,
                )  # (1, prompt_len + new)
            new = seq[0, len(prompt_ids):].tolist()
            while new and new[-1] in stop:
                new.pop()
            text = self.tokenizer.decode(new, skip_special_tokens=True).strip()
            out.append(Generation(name, new, text, time.perf_counter() - start))
        return out
