"""The reserved-room KV cache gives DynamicLayer's keys and values without copying itself per step."""

import pytest
import torch
from transformers.cache_utils import DynamicLayer

from mdrag.generation.kv_cache import ReservedLayer


@pytest.mark.parametrize("spare", [1, 3, 8])
def test_reserved_layer_matches_dynamic_layer_through_prefill_steps_selection_and_overflow(spare):
    torch.manual_seed(0)
    plain, reserved = DynamicLayer(), ReservedLayer(spare)
    prefill = torch.randn(3, 2, 5, 4), torch.randn(3, 2, 5, 4)  # (rows, kv_heads, tokens, head_dim)
    steps = [(torch.randn(3, 2, 1, 4), torch.randn(3, 2, 1, 4)) for _ in range(6)]
    for layer in (plain, reserved):
        layer.update(*prefill)
    buffer = reserved._k
    for i, (k, v) in enumerate(steps):
        if i == 2:  # a row finishes: both drop it (DynamicLayer's own batch_select_indices)
            for layer in (plain, reserved):
                layer.batch_select_indices(torch.tensor([0, 2]))
            buffer = reserved._k
        k, v = (k, v) if i < 2 else (k[[0, 2]], v[[0, 2]])
        want, got = plain.update(k, v), reserved.update(k, v)
        for w, g in zip(want, got, strict=True):
            assert torch.equal(w, g)
        assert reserved.get_seq_length() == plain.get_seq_length()
    # 2 steps before the selection, 4 after: within the room the buffer is written in place, never copied
    if spare >= 4:
        assert reserved._k is buffer
    assert torch.equal(reserved.keys, plain.keys) and torch.equal(reserved.values, plain.values)


def test_a_step_writes_in_place_instead_of_copying_the_cache():
    layer = ReservedLayer(spare=4)
    layer.update(torch.zeros(1, 1, 3, 2), torch.zeros(1, 1, 3, 2))
    pointer = layer._k.data_ptr()
    keys, _ = layer.update(torch.ones(1, 1, 1, 2), torch.ones(1, 1, 1, 2))
    assert layer._k.data_ptr() == pointer and keys.data_ptr() == pointer  # a view of the reserved buffer
    assert keys.shape == (1, 1, 4, 2) and keys[0, 0, -1].tolist() == [1.0, 1.0]


def test_the_generator_decodes_into_reserved_room(tiny_generator_dir, monkeypatch):
    """The fast path never falls back to DynamicLayer's copy-per-step update (it would raise here), and its
    answer is still the reference path's."""
    from mdrag.generation.generator import Generator
    from mdrag.generation.model import load_generator

    loaded = load_generator(str(tiny_generator_dir))
    prompt = loaded.tokenizer("Question: who created python")["input_ids"]
    want = Generator(loaded, max_new_tokens=12, fast=False).generate(prompt, ["vanilla"])[0].token_ids

    def copying_update(*args, **kwargs):
        raise AssertionError("DynamicLayer.update: the cache is copied every step")

    monkeypatch.setattr(DynamicLayer, "update", copying_update)
    got = Generator(loaded, max_new_tokens=12, dtype="float32").generate(prompt, ["vanilla", "vanilla"])
    assert [g.token_ids for g in got] == [want, want]
