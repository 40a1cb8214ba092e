"""Context attribution on a tiny random Llama, checked against independent log-prob computations."""

from __future__ import annotations

import shutil

import pytest
import torch

from analysis.attribution import (
    agreement,
    deletion_curve,
    gradient_attribution,
    passage_ablation,
    sentence_ablation,
    sentences,
)


@pytest.fixture
def trace(make_tiny_trace):
    return make_tiny_trace(["vanilla", "full"], max_answer_tokens=6)


def _logprob(model_dir, prompt: str, answer: list[int]) -> float:
    """Independent reference: plain transformers, fp32, no adapters."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([ids + answer])).logits[0, len(ids) - 1: -1]
    return float(torch.log_softmax(logits, -1)[torch.arange(len(answer)), torch.tensor(answer)].sum())


def _without(trace, names: set[str]) -> str:
    text = trace.prompt
    for span in sorted((s for s in trace.spans if s.name in names), key=lambda s: -s.char_start):
        text = text[: span.char_start] + text[span.char_end:]
    return text


def test_passage_ablation_equals_independent_log_prob_drops(trace, tiny_generator_dir, tiny_engine):
    model = tiny_engine.stacked().model  # float32
    calls = []
    # on the decoder: captum calls the top model's .forward() directly, which bypasses its own hooks
    head_rows = []  # positions the LM head runs on, per forward
    hook = model.get_decoder().register_forward_hook(lambda *_: calls.append(1))
    head = model.get_output_embeddings().register_forward_hook(lambda _m, args, _o: head_rows.append(args[0].shape[1]))
    try:
        attr = passage_ablation(trace, "vanilla", tiny_engine)
    finally:
        hook.remove()
        head.remove()
    assert len(calls) == 1 + len(trace.passages)  # the unablated prompt once, then one per passage
    answer = trace.answers["vanilla"].token_ids
    assert head_rows == [len(answer) + 1] * len(calls)  # the LM head only where captum reads it
    full = _logprob(tiny_generator_dir, trace.prompt, answer)
    assert attr.full_logprob == pytest.approx(full, abs=1e-3)
    assert attr.features == [f"passage_{i + 1}" for i in range(len(trace.passages))]
    for name, score in zip(attr.features, attr.scores, strict=True):
        assert score == pytest.approx(full - _logprob(tiny_generator_dir, _without(trace, {name}), answer), abs=1e-3)
    assert max(abs(s) for s in attr.scores) > 1e-3


def test_a_model_that_cannot_see_the_passages_gives_zero(trace, tiny_generator_dir, tmp_path):
    """Attention outputs zeroed: each position sees only its own token, so no passage can matter."""
    from safetensors.torch import load_file, save_file

    blind = tmp_path / "blind"
    shutil.copytree(tiny_generator_dir, blind)
    weights = load_file(str(blind / "model.safetensors"))
    save_file({k: (torch.zeros_like(v) if "o_proj" in k else v) for k, v in weights.items()},
              str(blind / "model.safetensors"), metadata={"format": "pt"})
    from mdrag.engine import Engine, Settings

    attr = passage_ablation(trace, "vanilla", Engine(Settings(dtype="float32", generator=str(blind))))
    assert attr.scores == pytest.approx([0.0] * len(attr.scores), abs=1e-5)


def test_deletion_curve_starts_full_and_ends_empty(trace, tiny_engine):
    order = [f"passage_{i + 1}" for i in range(len(trace.passages))][::-1]
    curve = deletion_curve(trace, "full", order, tiny_engine)
    attr = passage_ablation(trace, "full", tiny_engine)
    assert list(curve["removed"]) == list(range(len(order) + 1))
    assert curve["logprob"].iloc[0] == pytest.approx(attr.full_logprob, abs=1e-4)
    assert curve["logprob"].iloc[1] == pytest.approx(attr.full_logprob - attr.scores[-1], abs=1e-3)


def test_sentence_ablation_has_one_feature_per_sentence(trace, tiny_engine):
    attr = sentence_ablation(trace, "vanilla", 1, tiny_engine)
    span = next(s for s in trace.spans if s.name == "passage_1")
    text = trace.prompt[span.char_start: span.char_end]
    assert attr.features == [text[s:e] for s, e in sentences(text)]
    with pytest.raises(ValueError, match="does not exist"):
        sentence_ablation(trace, "vanilla", 99, tiny_engine)


@pytest.mark.parametrize("text,count", [("One. Two! Three?", 3), ("No end", 1), ("3.5 kg. Next", 2)])
def test_sentence_split(text, count):
    assert len(sentences(text)) == count


def test_gradient_attribution_covers_content_tokens_only(trace, tiny_engine):
    frame = gradient_attribution(trace, "vanilla", tiny_engine, (0, 2), n_steps=2)
    assert set(frame["segment"]) <= {"instruction", "question"} | {f"passage_{i + 1}" for i in range(5)}
    assert frame["score"].abs().sum() > 0
    with pytest.raises(ValueError, match="outside the answer"):
        gradient_attribution(trace, "vanilla", tiny_engine, (5, 99))


def test_agreement_is_spearman():
    table = agreement({"attention": {"p1": 0.1, "p2": 0.5, "p3": 0.9},
                       "ablation": {"p1": 1.0, "p2": 2.0, "p3": 3.0},
                       "gradient": {"p1": 3.0, "p2": 2.0, "p3": 1.0}})
    rho = dict(zip(zip(table["A"], table["B"], strict=True), table["spearman"], strict=True))
    assert rho[("attention", "ablation")] == pytest.approx(1.0)
    assert rho[("attention", "gradient")] == pytest.approx(-1.0)
