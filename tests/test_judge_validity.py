"""The judge's validity measures against independent computations (scikit-learn, scipy), and the probes."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mdrag.evaluation.judge_validity import (
    SANITY_CHECKS,
    _swap,
    against_match,
    auc,
    human_agreement,
    human_items,
    sanity_items,
    weak_domains,
)
from mdrag.evaluation.store import ResultsStore, answer_id


def _frame(n: int = 120, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    match = rng.integers(0, 2, n)
    score = np.clip(0.5 * match + rng.normal(0.25, 0.25, n), 0, 1)  # informative but noisy
    answers = [" ".join(["w"] * int(k)) for k in rng.integers(1, 30, n)]
    return pd.DataFrame({"domain": ["a", "b"] * (n // 2), "answer_type": "short", "answer_id": [f"x{i}" for i in
                         range(n)], "judge_score": score, "m_match": match.astype(float), "answer": answers,
                         "setting": "retrieved"})


@pytest.mark.parametrize("levels", [2, 5, 1000])
def test_auc_counts_ties_half_as_sklearn_does(levels):
    """The bootstrap's AUC counts per distinct score instead of ranking: the same value, ties included."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(levels)
    for n in (3, 40, 500):
        labels = rng.integers(0, 2, n)
        scores = rng.integers(0, levels, n) / levels  # many ties when levels is small
        if 0 < labels.sum() < n:
            assert auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert np.isnan(auc(np.array([0.2, 0.9]), np.array([1, 1])))  # one class: undefined


def test_kappa_auc_and_length_bias_equal_independent_computations():
    from scipy.stats import spearmanr
    from sklearn.metrics import cohen_kappa_score, roc_auc_score

    df = _frame()
    table = against_match(df).set_index("domain")
    for domain in ("a", "b", "all"):
        g = df if domain == "all" else df[df.domain == domain]
        row = table.loc[domain]
        assert row["n"] == len(g)
        assert row["kappa"] == pytest.approx(cohen_kappa_score(g.judge_score > 0.5, g.m_match))
        assert row["AUC"] == pytest.approx(roc_auc_score(g.m_match, g.judge_score))
        assert row["kappa low"] <= row["kappa"] <= row["kappa high"]
        right = g[g.m_match == 1]
        words = right.answer.str.split().str.len()
        assert row["length rho (right)"] == pytest.approx(spearmanr(right.judge_score, words).statistic)


def test_long_and_unanswerable_rows_do_not_count_and_weak_domains_are_named():
    df = _frame()
    df.loc[df.index[:10], "answer_type"] = "long"
    assert against_match(df).set_index("domain").loc["all", "n"] == len(df) - 10
    table = pd.DataFrame([{"domain": "a", "kappa": 0.8}, {"domain": "b", "kappa": 0.1},
                          {"domain": "c", "kappa": float("nan")}, {"domain": "all", "kappa": 0.2}])
    weak = weak_domains(table)
    assert set(weak) == {"b", "c"} and "0.10 < 0.4" in weak["b"] and "not measurable" in weak["c"]


@pytest.mark.parametrize("gold,swapped", [("yes", "no"), ("maybe", "yes"), ("$1,200 million", "$1,800 million"),
                                          ("2.5", "3.5"), ("Gene Kelly", "Gene Jones")])
def test_a_swapped_answer_changes_exactly_one_fact(gold, swapped):
    import random

    assert _swap(gold, ["Mr Jones"], random.Random(0)) == swapped


def test_the_sanity_set_is_deterministic_and_expects_what_it_says():
    first, again = sanity_items(4, seed=3), sanity_items(4, seed=3)
    assert first == again and first != sanity_items(4, seed=4)
    assert {i["kind"] for i in first} == set(SANITY_CHECKS)
    for item in first:
        assert item["expect"] == SANITY_CHECKS[item["kind"]]
        if item["kind"] == "gold":
            assert item["answer"] == item["gold"][0]
        elif item["kind"] != "empty":
            assert item["answer"].lower() not in {g.lower() for g in item["gold"]}


def test_human_agreement_counts_ties_half_and_reports_pearson(tmp_path):
    rows = []
    for k, labels in enumerate([(2, 1), (-1, -2), (1, 1), (1, 0)]):
        for label in labels:
            rows.append({"query": f"q{k}", "gt_answer": "g", "dataset": "d", "correctness_label": label,
                         "model1": str({"model_name": "m1", "response": f"a{k}"}),
                         "model2": {"model_name": "m2", "response": f"b{k}"}})
    path = tmp_path / "human.json"
    path.write_text(json.dumps(rows))
    store = ResultsStore(tmp_path / "s.sqlite")
    items = human_items(path)
    store.put_items(items)
    scores = {"a0": 0.2, "b0": 0.9, "a1": 0.8, "b1": 0.1, "a2": 0.5, "b2": 0.5, "a3": 0.9, "b3": 0.3}
    store.put_verdicts([{"answer_id": answer_id(i["question"], i["gold"], i["answer"]), "judge": "j",
                         "judge_name": "J", "prompt_version": "v", "levels": 2, "score": scores[i["answer"]],
                         "mass": 1.0} for i in items])
    found = human_agreement(store.items_frame(), store.verdict_frame(2), "j")
    # preferences: pair0 2x right, pair1 2x right, pair2 2x tie (half each), pair3 1x wrong (label 0 skipped)
    assert found["pairs"] == 4 and found["rows with a preference"] == 7 and found["ties"] == 2
    assert found["accuracy"] == pytest.approx((4 + 1) / 7)
    labels = [2, 1, -1, -2, 1, 1, 1, 0]
    diffs = [0.7, 0.7, -0.7, -0.7, 0, 0, -0.6, -0.6]
    assert found["pearson"] == pytest.approx(np.corrcoef(labels, diffs)[0, 1])
