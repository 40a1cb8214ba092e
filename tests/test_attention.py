"""Segment attention on a tiny random Llama: exact against output_attentions, sums to one, bounded."""

from __future__ import annotations

import pytest
import torch

from analysis.attention import answer_attention, segment_names, segment_onehot

VARIANTS = ["vanilla", "full", "qk_att"]


@pytest.fixture
def trace(make_tiny_trace):
    return make_tiny_trace(VARIANTS)


def test_masses_sum_to_one_per_token_layer_and_head(trace, tiny_engine):
    result = answer_attention(trace, tiny_engine)
    sums = result.per_token.groupby(["variant", "token", "layer", "head"], observed=True)["mass"].sum()
    assert len(sums) > 0 and sums.to_numpy() == pytest.approx(1.0, abs=1e-4)
    assert set(result.per_token["variant"]) == set(VARIANTS)
    first = result.per_token[result.per_token["token"] == 0]
    assert first[first["segment"] == "answer"]["mass"].abs().max() < 1e-6  # no answer yet at the first token
    assert set(result.frame()["segment"]) == set(segment_names(trace))


def test_bounded_path_equals_full_output_attentions(trace, tiny_generator_dir, tiny_engine):
    """The reference: eager attention with output_attentions=True, reduced to segments afterwards."""
    from transformers import AutoModelForCausalLM

    result = answer_attention(trace, tiny_engine, ["vanilla"])  # tiny_engine: float32
    model = AutoModelForCausalLM.from_pretrained(tiny_generator_dir, attn_implementation="eager",
                                                 dtype=torch.float32).eval()
    answer = trace.answers["vanilla"].token_ids
    ids = trace.prompt_ids + answer
    n = len(trace.prompt_ids)
    with torch.inference_mode():
        attentions = model(torch.tensor([ids]), output_attentions=True).attentions  # layers x (1, H, T, T)
    onehot = segment_onehot(trace, len(ids))
    rows = list(range(n - 1, n - 1 + len(answer)))
    want = torch.stack([a[0, :, rows].float() @ onehot for a in attentions])  # (layers, heads, n, segments)
    got = torch.tensor(result.per_token.sort_values(["layer", "head", "token", "segment"])
                       .pipe(lambda d: d["mass"].to_numpy())).reshape(want.shape[0], want.shape[1], len(rows), -1)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)  # segment order: the categorical's


def test_adapters_change_the_attention(trace, tiny_engine):
    frame = answer_attention(trace, tiny_engine).frame(tokens=[0])
    wide = frame.pivot_table(index=["layer", "head", "segment"], columns="variant", values="mass", observed=True)
    assert (wide["qk_att"] - wide["vanilla"]).abs().max() > 1e-3
