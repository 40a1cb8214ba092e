"""A KV cache that writes each decode step into room reserved at prefill, instead of copying itself.

transformers' DynamicLayer grows by `torch.cat([keys, new])` every step: each step copies the whole cache
of every layer, (rows, kv_heads, length, head_dim) twice per layer. Profiled on an AVX2-only EPYC (float32,
700-token prompt), that copy and its fresh allocations were the largest single cost of a 6-row decode step.
Here each layer keeps a buffer with `spare` free positions (the generation budget, known at prefill) and
hands attention a view of its filled part; the numbers are the same (tested), only the copies go.

Also here: a row's prompt keys and values as the generator's prefill left them (`prompt_kv`), and a cache
rebuilt from them (`cache_from_prompts`), so analysis of an answered prompt continues from it instead of
prefilling it again (the position probe prefilled each prompt three times per variant).
"""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer


class ReservedLayer(DynamicLayer):
    """DynamicLayer whose keys/values live in a buffer of (rows, kv_heads, length + spare, head_dim).

    Every assignment of `keys`/`values` (prefill, DynamicLayer's batch_select_indices, joining two caches)
    copies the tensor into a fresh buffer with `spare` positions free; `update` writes new positions in place
    and only re-reserves if a caller decodes past the budget."""

    def __init__(self, spare: int) -> None:
        self._spare = max(1, spare)
        self._k = self._v = None
        self._length = 0
        super().__init__()  # sets keys = values = None through the setters below

    def _reserve(self, t):
        """(buffer, filled length) for tensor t; None and DynamicLayer's empty 1-d placeholder pass as they are."""
        if t is None or t.dim() != 4:
            return t, 0
        rows, heads, length, dim = t.shape
        buffer = t.new_empty(rows, heads, length + self._spare, dim)
        buffer[:, :, :length] = t
        return buffer, length

    @property
    def keys(self):
        return self._k if self._k is None or self._k.dim() != 4 else self._k[:, :, : self._length]

    @keys.setter
    def keys(self, t) -> None:
        self._k, self._length = self._reserve(t)

    @property
    def values(self):
        return self._v if self._v is None or self._v.dim() != 4 else self._v[:, :, : self._length]

    @values.setter
    def values(self, t) -> None:
        self._v, _ = self._reserve(t)  # always set right after keys, with the same length

    def update(self, key_states, value_states, *args, **kwargs):
        """key_states, value_states: (rows, kv_heads, new, head_dim) -> the filled views."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        if self._k is None or self._k.dim() != 4 or self._length == 0:
            self.keys, self.values = key_states, value_states
            return self.keys, self.values
        new = key_states.shape[-2]
        if self._length + new > self._k.shape[-2]:  # past the budget: re-reserve (one copy)
            self.keys, self.values = self.keys, self.values
        self._k[:, :, self._length : self._length + new] = key_states
        self._v[:, :, self._length : self._length + new] = value_states
        self._length += new
        return self.keys, self.values


def reserved_cache(config, spare: int) -> DynamicCache:
    """A DynamicCache (what the model expects) whose layers reserve `spare` positions for decoding."""
    cache = DynamicCache(config=config)
    cache.layers = [ReservedLayer(spare) for _ in range(config.num_hidden_layers)]
    return cache


# One row's prompt keys and values, per layer: [(keys, values)], each (1, kv_heads, prompt_len, head_dim).
PromptKV = list[tuple[torch.Tensor, torch.Tensor]]


def prompt_kv(cache: DynamicCache) -> PromptKV:
    """A prefilled one-row cache's keys and values as they are now (views, no copy: ReservedLayer buffers are
    only ever appended to past the prompt or replaced, never overwritten below it)."""
    return [(layer.keys, layer.values) for layer in cache.layers]


def cache_from_prompts(config, rows: list[PromptKV], length: int) -> DynamicCache:
    """A fresh DynamicCache holding the first `length` prompt positions of each row, rows along the batch:
    (len(rows), kv_heads, length, head_dim) per layer. Continuing from it computes the positions after `length`
    without prefilling the prompt again; the caller's tensors are copied, never written."""
    if not rows:
        raise ValueError("no prompt caches to continue from")
    if any(len(kv) != config.num_hidden_layers for kv in rows):
        raise ValueError("a prompt cache with another number of layers than the model")
    available = min(kv[0][0].shape[-2] for kv in rows)
    if not 0 < length <= available:
        raise ValueError(f"cannot keep {length} prompt positions of caches holding {available}")
    cache = DynamicCache(config=config)
    for i in range(config.num_hidden_layers):
        keys = torch.cat([kv[i][0][:, :, :length] for kv in rows], dim=0)
        values = torch.cat([kv[i][1][:, :, :length] for kv in rows], dim=0)
        cache.update(keys, values, i)
    return cache
