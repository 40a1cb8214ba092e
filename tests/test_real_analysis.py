"""Analysis on the real SmolLM2-135M with the shipped benchmark and adapters. Marked slow."""

from __future__ import annotations

import pytest

from analysis.attention import answer_attention
from analysis.attribution import passage_ablation

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def nobel(real_engine):
    """NQ-open test-free demo question (it is in the adapters' training data: fine for analysis)."""
    pipe = real_engine.pipeline("nq_open", reranker="none")
    query = next(q for q in pipe.domain.queries if "first nobel prize in physics" in q.text.lower())
    return pipe.run(query.text, variants=["vanilla", "qk_att"], setting="noisy", query_id=query.id, n_distractors=4)


def test_gold_passage_gets_the_highest_ablation_attribution(nobel, real_engine):
    """With the gold answer as the target, removing the gold passage costs the most log-probability."""
    assert 1 <= len(nobel.gold_in_prompt) < len(nobel.passages)
    attr = passage_ablation(nobel, "vanilla", real_engine, target=nobel.gold_answers[0], dtype="float32")
    gold = {f"passage_{r}" for r in nobel.gold_in_prompt}
    best = attr.features[max(range(len(attr.scores)), key=attr.scores.__getitem__)]
    assert best in gold, dict(zip(attr.features, attr.scores, strict=True))


def test_real_attention_is_a_distribution_over_segments(nobel, real_engine):
    result = answer_attention(nobel, real_engine, ["vanilla", "qk_att"])
    sums = result.per_token.groupby(["variant", "token", "layer", "head"], observed=True)["mass"].sum()
    assert sums.to_numpy() == pytest.approx(1.0, abs=1e-3)
    assert result.per_token["layer"].nunique() == 30 and result.per_token["head"].nunique() == 9
