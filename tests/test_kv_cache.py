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


def _prefilled(tiny_engine, tiny_domain, variants):
    """A tiny trace answered with every variant's prompt keys and values kept (the generator's on_prefill)."""
    pipe = tiny_engine.pipeline(tiny_domain, retriever="bm25", reranker="none", top_k=3)
    retrieval = pipe.retrieve("who got the first nobel prize in physics")
    trace = pipe.trace_for_passages(retrieval.text, None, retrieval.ranked[:3], "retrieved")
    kv = {}
    pipe.answer(trace, variants, on_prefill=kv.__setitem__)
    return trace, kv


def test_prompt_keys_and_values_kept_at_prefill_are_the_prompts_after_decoding(tiny_engine, tiny_domain):
    """Decoding appends past the prompt and joins/drops rows into fresh buffers: the kept views still hold a
    fresh prefill's numbers afterwards (a decode step writing into them would change them)."""
    trace, kv = _prefilled(tiny_engine, tiny_domain, ["vanilla", "full", "qk_att"])
    stacked = tiny_engine.stacked()
    assert set(kv) == {"vanilla", "full", "qk_att"} and any(a.token_ids for a in trace.answers.values())
    for variant, name in zip(["vanilla", "full", "qk_att"], tiny_engine.attach(["vanilla", "full", "qk_att"]),
                             strict=True):
        with torch.inference_mode(), stacked.rows([name]):
            fresh = stacked.model(input_ids=torch.tensor([trace.prompt_ids]), use_cache=True).past_key_values
        assert len(kv[variant]) == len(fresh.layers)
        for (k, v), layer in zip(kv[variant], fresh.layers, strict=True):
            assert k.shape == layer.keys.shape and k.shape[-2] == len(trace.prompt_ids)
            torch.testing.assert_close(k, layer.keys, rtol=0, atol=1e-6)
            torch.testing.assert_close(v, layer.values, rtol=0, atol=1e-6)


def test_log_probs_continued_from_the_prefill_equal_a_full_forward(tiny_engine, tiny_domain):
    from mdrag.generation.scoring import continuation_logprobs

    variants = ["vanilla", "full", "qk_att"]
    trace, kv = _prefilled(tiny_engine, tiny_domain, variants)
    names = tiny_engine.attach(variants)
    target = tiny_engine.generator().tokenizer(" Wilhelm Conrad Röntgen", add_special_tokens=False)["input_ids"]
    full = continuation_logprobs(tiny_engine.stacked(), names, trace.prompt_ids, target)
    cached = continuation_logprobs(tiny_engine.stacked(), names, trace.prompt_ids, target, [kv[v] for v in variants])
    assert cached == pytest.approx(full, abs=1e-4)
    assert len({round(x, 3) for x in full}) > 1  # rows differ by variant: a cache given to the wrong row shows
    with pytest.raises(ValueError, match="2 prompt caches for 3 rows"):
        continuation_logprobs(tiny_engine.stacked(), names, trace.prompt_ids, target, [kv["vanilla"], kv["full"]])


def test_answer_attention_continued_from_the_prefill_equals_a_full_forward(tiny_engine, tiny_domain):
    from analysis.attention import answer_attention

    variants = ["vanilla", "full"]
    trace, kv = _prefilled(tiny_engine, tiny_domain, variants)
    trace.answers["full"].token_ids = trace.answers["full"].token_ids[:0]  # an empty answer: its first token only
    key = ["variant", "token", "layer", "head", "segment"]
    full = answer_attention(trace, tiny_engine, variants).per_token.sort_values(key)
    cached = answer_attention(trace, tiny_engine, variants, kv).per_token.sort_values(key)
    assert len(full) == len(cached) > 0
    assert cached["mass"].to_numpy() == pytest.approx(full["mass"].to_numpy(), abs=1e-5)


@pytest.mark.parametrize("length", [0, 10_000])
def test_a_cache_cannot_keep_more_prompt_positions_than_it_holds(tiny_engine, tiny_domain, length):
    from mdrag.generation.kv_cache import cache_from_prompts

    _, kv = _prefilled(tiny_engine, tiny_domain, ["vanilla"])
    with pytest.raises(ValueError, match="prompt positions"):
        cache_from_prompts(tiny_engine.stacked().model.config, [kv["vanilla"]], length)
