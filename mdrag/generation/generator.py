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
    first_token_seconds: float | None = None  # from the start to this row's first token (fast path)


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
                 on_done: Callable[[Generation], None] | None = None,
                 on_token: Callable[[str, str], None] | None = None) -> list[Generation]:
        """Every variant's greedy answer to one prompt; `on_done` is called as each row finishes,
        `on_token(variant, text so far)` after each new token (fast path only: the reference path has
        no per-token hook)."""
        names = self.ensure_adapters(variants)
        stop = set(self.stop_ids())
        start = time.perf_counter()
        out: list[Generation | None] = [None] * len(variants)
        first_at: dict[int, float] = {}

        def finished(row: int, tokens: list[int], at: float) -> None:
            text = self.tokenizer.decode(tokens, skip_special_tokens=True).strip()
            first = first_at.get(row, at) - start if self.fast else None
            out[row] = Generation(variants[row], tokens, text, at - start, first)
            if on_done is not None:
                on_done(out[row])  # as soon as this row stops, while the others keep decoding

        def step(row: int, tokens: list[int]) -> None:
            first_at.setdefault(row, time.perf_counter())
            if on_token is not None:
                on_token(variants[row], self.tokenizer.decode(tokens, skip_special_tokens=True).strip())

        if self.fast:
            self._greedy_pruned(prompt_ids, names, stop, finished, step)
        else:
            for row, (tokens, at) in sorted(self._hf_generate(prompt_ids, names, stop).items()):
                finished(row, tokens, at)
        return out

    def _greedy_pruned(self, prompt_ids: list[int], names: list[str], stop: set[int],
                       finished: Callable[[int, list[int], float], None],
                       on_step: Callable[[int, list[int]], None] | None = None) -> None:
        """Greedy decoding that drops a row from the batch (and its KV cache) as soon as it stops.

        Prefill costs one pass per variant whatever we do (each adapter changes the keys and values), so
        it runs in two groups: the first variant alone, then the others together. Compute is the same
        as one batched prefill, but the first variant's first token exists after one prefill instead
        of all of them (what a user sees first). The caches are then joined along the batch (same
        prompt, same length: no padding) and decoding runs batched; rows that finished early (a
        2-token answer beside a 60-token one) no longer ride along. Calls `finished(row, generated ids
        without the stop token, perf_counter time)` as each row stops and `on_step(row, ids so far)`
        after every new token of a running row.
        """
        import torch

        fast = multi_lora_model(self.loaded, self.dtype)
        for name in dict.fromkeys(names):
            if name != BASE:
                fast.add_from_peft(self.loaded.model, name)
        tokens: list[list[int]] = [[] for _ in names]
        active: list[int] = []
        nxt: list[int] = []
        cache = None

        def take(rows: list[int], step_tokens: list[int], last_step: bool) -> list[int]:
            """Record one new token per row; returns the positions (in `rows`) that keep decoding."""
            keep = []
            for j, (row, tok) in enumerate(zip(rows, step_tokens, strict=True)):
                if tok in stop or last_step:
                    finished(row, tokens[row], time.perf_counter())
                else:
                    tokens[row].append(tok)
                    keep.append(j)
                    if on_step is not None:
                        on_step(row, tokens[row])
            return keep

        with torch.inference_mode():
            groups = [[0], list(range(1, len(names)))] if len(names) > 1 else [[0]]
            for group in groups:
                input_ids = torch.tensor([prompt_ids] * len(group))  # (rows, prompt_len): same prompt, no padding
                with fast.rows([names[r] for r in group]):
                    out = fast.model(input_ids=input_ids, use_cache=True, logits_to_keep=1)
                first = out.logits[:, -1].argmax(-1).tolist()  # (rows,)
                keep = take(group, first, self.max_new_tokens == 0)
                part = out.past_key_values
                if len(keep) < len(group):
                    part.batch_select_indices(torch.tensor(keep, dtype=torch.long))
                active += [group[j] for j in keep]
                nxt += [first[j] for j in keep]
                cache = part if cache is None else _join(cache, part)
            for step in range(1, self.max_new_tokens + 1):
                if not active:
                    break
                input_ids = torch.tensor([[t] for t in nxt])  # (rows, 1)
                with fast.rows([names[r] for r in active]):
                    out = fast.model(input_ids=input_ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
                cache = out.past_key_values
                step_tokens = out.logits[:, -1].argmax(-1).tolist()  # (rows,)
                keep = take(active, step_tokens, step == self.max_new_tokens)
                if len(keep) < len(active):
                    cache.batch_select_indices(torch.tensor(keep, dtype=torch.long))
                    active = [active[j] for j in keep]
                nxt = [step_tokens[j] for j in keep]

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


def _join(cache, part):
    """Append `part`'s rows to `cache`, layer by layer (both DynamicCache over the same prompt length).

    keys/values per layer: (rows, kv_heads, prompt_len, head_dim); a side with no rows left is skipped."""
    import torch

    for mine, theirs in zip(cache.layers, part.layers, strict=True):
        if theirs.get_seq_length() == 0 or theirs.keys.shape[0] == 0:
            continue
        if mine.get_seq_length() == 0 or mine.keys.shape[0] == 0:
            mine.keys, mine.values = theirs.keys, theirs.values
        else:
            mine.keys = torch.cat([mine.keys, theirs.keys], dim=0)
            mine.values = torch.cat([mine.values, theirs.values], dim=0)
    return cache
