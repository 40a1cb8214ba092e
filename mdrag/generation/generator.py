"""Greedy decoding of one prompt for one or more variants, in one batch.

Paper setting: greedy, at most 128 new tokens. All variants are rows of one batch over the same base:
the base model answers for "vanilla" (`__base__`), each LoRA variant through its adapter. peft loads and
checks every adapter; the batch itself runs on `MultiLoraModel` (stacked adapters, two matmuls per layer)
unless `fast=False`, which uses peft's own `adapter_names` path (kept as the reference the fast path is
tested against). Same prompt in every row, so no padding is needed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from mdrag.config import LIMITS
from mdrag.generation.adapters import attach_adapter
from mdrag.generation.model import LoadedModel
from mdrag.generation.multi_lora import MultiLoraModel
from mdrag.generation.variants import adapter_dir, get_variant

BASE = "__base__"  # peft's name for "no adapter" in adapter_names
_WRAP_LOCK = threading.Lock()
_FAST: dict[tuple[str, str], MultiLoraModel] = {}


def multi_lora_model(loaded: LoadedModel, dtype: str) -> MultiLoraModel:
    """One stacked-adapter copy of the base per (weights, dtype), shared by every caller."""
    import torch

    key = (loaded.fingerprint, dtype)
    with _WRAP_LOCK:
        if key not in _FAST:
            _FAST[key] = MultiLoraModel.from_pretrained(loaded.path, getattr(torch, dtype))
        return _FAST[key]


@dataclass
class Generation:
    variant: str
    token_ids: list[int]  # generated tokens only, without the prompt and the end-of-turn token
    text: str
    seconds: float  # from the start of the batch to the moment this row finished


class Generator:
    def __init__(self, loaded: LoadedModel, max_new_tokens: int = LIMITS.max_new_tokens, fast: bool = True,
                 dtype: str = LIMITS.dtype):
        self.loaded = loaded
        self.max_new_tokens = max_new_tokens
        self.fast = fast
        self.dtype = dtype

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

    def generate(self, prompt_ids: list[int], variants: list[str],
                 on_done: Callable[[Generation], None] | None = None) -> list[Generation]:
        """Every variant's greedy answer to one prompt; `on_done` is called as each row finishes."""
        names = self.ensure_adapters(variants)
        stop = set(self.stop_ids())
        start = time.perf_counter()
        out: list[Generation | None] = [None] * len(variants)

        def finished(row: int, tokens: list[int], at: float) -> None:
            text = self.tokenizer.decode(tokens, skip_special_tokens=True).strip()
            out[row] = Generation(variants[row], tokens, text, at - start)
            if on_done is not None:
                on_done(out[row])  # as soon as this row stops, while the others keep decoding

        if self.fast:
            self._greedy_pruned(prompt_ids, names, stop, finished)
        else:
            for row, (tokens, at) in sorted(self._hf_generate(prompt_ids, names, stop).items()):
                finished(row, tokens, at)
        return out

    def _greedy_pruned(self, prompt_ids: list[int], names: list[str], stop: set[int],
                       finished: Callable[[int, list[int], float], None]) -> None:
        """Greedy decoding that drops a row from the batch (and its KV cache) as soon as it stops.

        Prefill costs one pass per variant whatever we do (each adapter changes the keys and values);
        decoding is where batching pays: rows that finished early (a 2-token answer beside a 60-token
        one) no longer ride along, so the long answer decodes at batch-1 speed. Calls
        `finished(row, generated ids without the stop token, perf_counter time)` as each row stops.
        """
        import torch

        fast = multi_lora_model(self.loaded, self.dtype)
        for name in dict.fromkeys(names):
            if name != BASE:
                fast.add_from_peft(self.loaded.model, name)
        active = list(range(len(names)))
        tokens: list[list[int]] = [[] for _ in names]
        input_ids = torch.tensor([prompt_ids] * len(names))  # (rows, prompt_len): same prompt, no padding
        cache = None
        with torch.inference_mode():
            for step in range(self.max_new_tokens + 1):
                with fast.rows([names[r] for r in active]):
                    out = fast.model(input_ids=input_ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
                cache = out.past_key_values
                nxt = out.logits[:, -1].argmax(-1).tolist()  # (rows,)
                keep = []
                for j, row in enumerate(active):
                    if nxt[j] in stop or step == self.max_new_tokens:
                        finished(row, tokens[row], time.perf_counter())
                    else:
                        tokens[row].append(nxt[j])
                        keep.append(j)
                if not keep:
                    break
                if len(keep) < len(active):
                    cache.batch_select_indices(torch.tensor(keep))
                    active = [active[j] for j in keep]
                input_ids = torch.tensor([[nxt[j]] for j in keep])  # (rows, 1)

    def _hf_generate(self, prompt_ids: list[int], names: list[str], stop: set[int]) -> dict[int, tuple]:
        """The reference path: transformers' generate with peft's mixed-adapter batch."""
        import torch

        model = self.loaded.model
        input_ids = torch.tensor([prompt_ids] * len(names))  # (rows, prompt_len)
        kwargs = {"adapter_names": names} if hasattr(model, "peft_config") else {}
        with torch.inference_mode():
            seq = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), do_sample=False,
                                 max_new_tokens=self.max_new_tokens, eos_token_id=sorted(stop),
                                 pad_token_id=self.tokenizer.pad_token_id, **kwargs)
        finished = time.perf_counter()
        rows = {}
        for row in range(len(names)):
            new = seq[row, len(prompt_ids):].tolist()
            cut = next((i for i, t in enumerate(new) if t in stop), len(new))
            rows[row] = (new[:cut], finished)  # rows that stopped early are padded after their stop token
        return rows
