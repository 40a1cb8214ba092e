"""Greedy decoding of one prompt for one or more variants, in one batch.

Paper setting: greedy, at most 128 new tokens. All variants are rows of one batch over the same base:
the base model answers for "vanilla" (`__base__`), each LoRA variant through its adapter, selected per
row with peft's `adapter_names`. Same prompt in every row, so no padding is needed.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from mdrag.config import LIMITS
from mdrag.generation.adapters import attach_adapter
from mdrag.generation.model import LoadedModel
from mdrag.generation.variants import adapter_dir, get_variant

BASE = "__base__"  # peft's name for "no adapter" in adapter_names
_WRAP_LOCK = threading.Lock()


@dataclass
class Generation:
    variant: str
    token_ids: list[int]  # generated tokens only, without the prompt and the end-of-turn token
    text: str
    seconds: float  # wall time of the batch that produced it


class Generator:
    def __init__(self, loaded: LoadedModel, max_new_tokens: int = LIMITS.max_new_tokens):
        self.loaded = loaded
        self.max_new_tokens = max_new_tokens

    @property
    def tokenizer(self):
        return self.loaded.tokenizer

    def stop_ids(self) -> list[int]:
        tok = self.tokenizer
        ids = {tok.eos_token_id}
        for special in ("<|im_end|>", "<|eot_id|>", "<|end|>"):
            tid = tok.convert_tokens_to_ids(special)
            if isinstance(tid, int) and tid != tok.unk_token_id:
                ids.add(tid)
        return sorted(i for i in ids if i is not None)

    def ensure_adapters(self, variants: list[str]) -> list[str]:
        """Attach the adapters these variants need (once each); returns the per-row adapter names."""
        names = []
        for v in variants:
            spec = get_variant(v)
            if spec.is_base:
                names.append(BASE)
                continue
            folder = adapter_dir(v)
            with _WRAP_LOCK:  # the LoadedModel is shared: wrap it in a PeftModel once, for everyone
                self.loaded.model = attach_adapter(self.loaded.model, v, folder, self.loaded.fingerprint)
            names.append(v)
        return names

    def generate(self, prompt_ids: list[int], variants: list[str]) -> list[Generation]:
        import torch

        names = self.ensure_adapters(variants)
        stop = self.stop_ids()
        model = self.loaded.model
        input_ids = torch.tensor([prompt_ids] * len(variants))  # (n_variants, prompt_len)
        kwargs = {}
        if any(n != BASE for n in names) or hasattr(model, "peft_config"):
            kwargs["adapter_names"] = names
        start = time.perf_counter()
        with torch.inference_mode():
            seq = model.generate(
                input_ids=input_ids, attention_mask=torch.ones_like(input_ids), do_sample=False,
                max_new_tokens=self.max_new_tokens, eos_token_id=stop, pad_token_id=self.tokenizer.pad_token_id,
                **kwargs,
            )  # (n_variants, prompt_len + new)
        seconds = time.perf_counter() - start
        out = []
        for row, name in enumerate(variants):
            new = seq[row, len(prompt_ids):].tolist()
            cut = next((i for i, t in enumerate(new) if t in stop), len(new))
            new = new[:cut]  # rows that stopped early are padded after their stop token
            out.append(Generation(name, new, self.tokenizer.decode(new, skip_special_tokens=True).strip(), seconds))
        return out
