"""Greedy decoding of one prompt for one or more variants, in one batch.

Paper setting: greedy, at most 128 new tokens. All variants are rows of one batch over the same base:
the base model answers for "vanilla" (`__base__`), each LoRA variant through its adapter. peft loads and
checks every adapter; the batch itself runs on `MultiLoraModel` (stacked adapters, two matmuls per layer)
unless `fast=False`, which uses peft's own `adapter_names` path (kept as the reference the fast path is
tested against). Same prompt in every row, so no padding is needed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mdrag.config import LIMITS
from mdrag.generation.adapters import attach_adapter
from mdrag.generation.model import LoadedModel
from mdrag.generation.multi_lora import MultiLoraModel
from mdrag.generation.variants import adapter_dir, get_variant

if TYPE_CHECKING:
    from mdrag.generation.kv_cache import PromptKV

BASE = "__base__"  # peft's name for "no adapter" in adapter_names


def stacked_model(loaded: LoadedModel, dtype: str) -> MultiLoraModel:
    """A new stacked-adapter copy of the base in `dtype` (the engine builds one and shares it)."""
    import torch

    return MultiLoraModel.from_pretrained(loaded.path, getattr(torch, dtype))


@dataclass
class Generation:
    variant: str
    token_ids: list[int]  # generated tokens only, without the prompt and the end-of-turn token
    text: str
    seconds: float  # from the start of the batch to the moment this row finished
    first_token_seconds: float | None = None  # from the start to this row's first token (fast path)


class Generator:
    """Greedy decoding over a shared base: `loaded` (peft attaches and checks the adapters there) and, for the
    fast path, `stacked`, the base in the generation dtype with the adapters stacked (built here when not
    given: a one-off decoder; the engine passes its shared one)."""

    def __init__(self, loaded: LoadedModel, max_new_tokens: int = LIMITS.max_new_tokens, fast: bool = True,
                 dtype: str = "float32", stacked: MultiLoraModel | None = None):
        self.loaded = loaded
        self.max_new_tokens = max_new_tokens
        self.fast = fast
        self.dtype = dtype
        self._stacked = stacked

    @property
    def stacked(self) -> MultiLoraModel:
        if self._stacked is None:
            self._stacked = stacked_model(self.loaded, self.dtype)
        return self._stacked

    @property
    def tokenizer(self):
        return self.loaded.tokenizer

    def stop_ids(self) -> list[int]:
        """Token ids that end an answer. None at all (a caller's override) means every row decodes the full
        budget, on both paths: the benchmark's worst case."""
        tok = self.tokenizer
        ids = {tok.eos_token_id}
        for special in ("<|im_end|>", "<|eot_id|>", "<|end|>"):
            tid = tok.convert_tokens_to_ids(special)
            if isinstance(tid, int) and tid != tok.unk_token_id:
                ids.add(tid)
        return sorted(i for i in ids if i is not None)

    def ensure_adapters(self, variants: list[str]) -> list[str]:
        """Attach the adapters these variants need (once each, to the peft model and, fast path, the stacked
        model); returns the per-row adapter names."""
        names = []
        for v in variants:
            spec = get_variant(v)
            if spec.is_base:
                names.append(BASE)
                continue
            folder = adapter_dir(v)
            with self.loaded.lock:  # the LoadedModel is shared: wrap it in a PeftModel once, for everyone
                self.loaded.model = attach_adapter(self.loaded.model, v, folder, self.loaded.fingerprint)
                if self.fast:
                    self.stacked.add_from_peft(self.loaded.model, v)
            names.append(v)
        return names

    def generate(self, prompt_ids: list[int], variants: list[str],
                 on_done: Callable[[Generation], None] | None = None,
                 on_token: Callable[[str, str], None] | None = None,
                 on_prefill: Callable[[str, PromptKV], None] | None = None) -> list[Generation]:
        """Every variant's greedy answer to one prompt; `on_done` is called as each row finishes,
        `on_token(variant, text so far)` after each new token, `on_prefill(variant, the prompt's keys and
        values)` after each row's prefill, so analysis of the same prompt (probes: the gold answer's
        log-probability, the answer's attention) need not prefill it again (fast path only: the reference path
        has neither hook)."""
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

        def prefilled(row: int, kv: PromptKV) -> None:
            if on_prefill is not None:
                on_prefill(variants[row], kv)

        if self.fast:
            self._greedy_pruned(prompt_ids, names, stop, finished, step, prefilled)
        else:
            for row, (tokens, at) in sorted(self._hf_generate(prompt_ids, names, stop).items()):
                finished(row, tokens, at)
        return out

    def _greedy_pruned(self, prompt_ids: list[int], names: list[str], stop: set[int],
                       finished: Callable[[int, list[int], float], None],
                       on_step: Callable[[int, list[int]], None] | None = None,
                       on_prefill: Callable[[int, PromptKV], None] | None = None) -> None:
        """Greedy decoding that drops a row from the batch (and its KV cache) as soon as it stops.

        Prefill costs one pass per variant whatever we do (each adapter changes the keys and values), and
        each variant is prefilled alone: the first variant's first token exists after one prefill instead of
        all of them (what a user sees first), and one row at a time is faster than one batch (5 variants'
        700-token prefills: 6.4 s one by one vs 8.7 s as one batch, fp32, 2-core AVX2 EPYC). The caches are
        then joined along the batch once (same prompt, same length: no padding) and decoding runs batched;
        rows that finished early (a 2-token answer beside a 60-token one) no longer ride along. Calls
        `finished(row, generated ids without the stop token, perf_counter time)` as each row stops and
        `on_step(row, ids so far)` after every new token of a running row, `on_prefill(row, kv)` with the
        row's prompt keys and values (views that decoding never writes: it appends past the prompt, and
        joining or dropping rows assigns fresh buffers).
        """
        import torch

        from mdrag.generation.kv_cache import prompt_kv, reserved_cache

        fast = self.stacked  # ensure_adapters stacked every adapter of `names`
        tokens: list[list[int]] = [[] for _ in names]
        active: list[int] = []
        nxt: list[int] = []

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
            parts = []
            for row, name in enumerate(names):
                # decoding writes into room reserved here (kv_cache.py) instead of copying the cache per step
                room = reserved_cache(fast.model.config, spare=self.max_new_tokens + 1)
                with fast.rows([name]):
                    out = fast.model(input_ids=torch.tensor([prompt_ids]), past_key_values=room, use_cache=True,
                                     logits_to_keep=1)  # (1, prompt_len) in, logits (1, 1, vocab) out
                first = int(out.logits[0, -1].argmax())
                if on_prefill is not None:
                    on_prefill(row, prompt_kv(out.past_key_values))
                if take([row], [first], self.max_new_tokens == 0):  # the row goes on decoding
                    active.append(row)
                    nxt.append(first)
                    parts.append(out.past_key_values)
            cache = _join(parts) if parts else None
            step = 1
            while active and step <= self.max_new_tokens:
                # The adapters of the running rows are gathered once per set of rows, not per step (a gather
                # copies every stacked adapter: ~100 MB for 6 rows, ~40% of a 6-row step when done per step).
                with fast.rows([names[r] for r in active]):
                    while step <= self.max_new_tokens:
                        input_ids = torch.tensor([[t] for t in nxt])  # (rows, 1)
                        out = fast.model(input_ids=input_ids, past_key_values=cache, use_cache=True,
                                         logits_to_keep=1)
                        cache = out.past_key_values
                        step_tokens = out.logits[:, -1].argmax(-1).tolist()  # (rows,)
                        keep = take(active, step_tokens, step == self.max_new_tokens)
                        step += 1
                        nxt = [step_tokens[j] for j in keep]
                        if len(keep) < len(active):  # rows finished: drop them, then gather for the rest
                            cache.batch_select_indices(torch.tensor(keep, dtype=torch.long))
                            active = [active[j] for j in keep]
                            break

    def _hf_generate(self, prompt_ids: list[int], names: list[str], stop: set[int]) -> dict[int, tuple]:
        """The reference path: transformers' generate with peft's mixed-adapter batch."""
        import torch

        model = self.loaded.model
        input_ids = torch.tensor([prompt_ids] * len(names))  # (rows, prompt_len)
        kwargs = {"adapter_names": names} if hasattr(model, "peft_config") else {}
        with torch.inference_mode():
            seq = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), do_sample=False,
                                 max_new_tokens=self.max_new_tokens,
                                 eos_token_id=sorted(stop) or None,  # None, not the model's default: no stop
                                 pad_token_id=self.tokenizer.pad_token_id, **kwargs)
        finished = time.perf_counter()
        rows = {}
        for row in range(len(names)):
            new = seq[row, len(prompt_ids):].tolist()
            cut = next((i for i, t in enumerate(new) if t in stop), len(new))
            rows[row] = (new[:cut], finished)  # rows that stopped early are padded after their stop token
        return rows


def _join(parts: list) -> object:
    """One cache holding every part's rows, in order: the first part's cache, each layer's keys and values
    concatenated along the batch (same prompt length) and assigned once, so its ReservedLayers reserve the
    decoding room for all rows in one copy. keys/values per layer: (rows, kv_heads, prompt_len, head_dim)."""
    import torch

    cache = parts[0]
    for i, layer in enumerate(cache.layers):
        if len(parts) > 1:
            layer.keys, layer.values = (torch.cat([getattr(p.layers[i], kind) for p in parts], dim=0)
                                        for kind in ("keys", "values"))
    return cache
