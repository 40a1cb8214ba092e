"""The packaged 1.5B judge on real benchmark questions (joined and converted on first use). Marked slow."""

from __future__ import annotations

import json
import random

import pytest

from mdrag.data.benchmark import load_domain
from mdrag.evaluation.judge import get_judge, gold_text

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def judge(packaged_judge_dir):
    return get_judge()  # the default: the packaged Qwen2.5-Coder-1.5B-Instruct


def _questions(n: int = 20, seed: int = 0) -> list:
    """A seeded sample of short-answer test questions from the four short-answer domains, each with a wrong
    answer: another sampled question's gold."""
    pool = [q for d in ("nq_open", "pubmedqa", "covidqa", "tatqa") for q in load_domain(d).split("test")
            if q.answers and q.answer_type in ("short", "yes-no")]
    chosen = random.Random(seed).sample(pool, n)
    out = []
    for i, q in enumerate(chosen):
        wrong = next(o.answers[0] for o in chosen[i + 1:] + chosen[:i]
                     if o.answers[0].lower() not in {a.lower() for a in q.answers})
        out.append((q, wrong))
    return out


def test_the_packaged_judge_scores_the_gold_answer_above_a_wrong_one(judge):
    assert "Qwen2.5-Coder-1.5B" in judge.name and not judge.weak and judge.levels == (2, 3)
    cases = _questions()
    items = [(q.text, gold_text(q.answers), a) for q, wrong in cases for a in (q.answers[0], wrong)]
    verdicts = judge.judge_many(items)
    right = [(verdicts[2 * i].score, verdicts[2 * i + 1].score) for i in range(len(cases))]
    wins = sum(g > w for g, w in right)
    assert wins >= 18, right
    assert all(v.mass > 0.5 for v in verdicts)  # it answers with Yes/No, not something else


def test_the_prefix_cache_changes_no_verdict_beyond_rounding(judge):
    cases = _questions(6, seed=1)
    items = [(q.text, gold_text(q.answers), q.answers[0]) for q, _ in cases]
    cached, plain = judge.judge_many(items), judge.judge_many(items, prefix_cache=False, batch_size=1)
    for a, b in zip(cached, plain, strict=True):
        assert a.score == pytest.approx(b.score, abs=0.05)  # bf16 on native-bf16 CPUs: ~1e-2 differences


def test_the_packaged_checker_tells_a_supporting_sentence_from_an_unrelated_one(judge):
    """The real checker (packaged 1.5B judge), two questions: the gold passage's answer sentence is called
    supported, another question's sentence is not."""
    from mdrag.evaluation.groundedness import validate_checker, validation_items

    checker = judge  # the same packaged model, asked the claim-checking prompt (one load serves both)
    items = [it for it in validation_items(2, domains=["nq_open"])
             if it["kind"] in ("gold sentence", "other passage's sentence")]
    rows = validate_checker(checker, items)
    assert len(rows) == 4 and all(r["correct"] == 1 for r in rows), json.dumps(rows, indent=1)[:2000]



def test_the_packaged_checker_marks_gold_sentences_supported_and_their_swapped_twins_not(judge):
    """The issue's bar, on the held-out validation questions (the threshold was chosen on the dev set): for 20
    benchmark cases (round-robin over the domains), the gold passage's answer sentence is called supported and the
    same sentence with its number or name swapped is not, for at least 17."""
    from mdrag.evaluation.groundedness import HELD_OUT_SEED, validate_checker, validation_items

    items = validation_items(8, HELD_OUT_SEED)  # never a question of the dev set (of 8, hence of 6)
    by_case: dict[str, dict[str, dict]] = {}
    for it in items:
        by_case.setdefault(it["item"], {})[it["kind"]] = it
    cases = [c for c in by_case.values() if {"gold sentence", "swapped number/entity"} <= set(c)]
    per: dict[str, list[dict]] = {}
    for c in cases:
        per.setdefault(c["gold sentence"]["domain"], []).append(c)
    ordered = [per[d][i] for i in range(max(map(len, per.values()))) for d in sorted(per) if i < len(per[d])]
    assert len(ordered) >= 20 and len(per) >= 3  # round-robin: every domain is among the 20
    pairs = [(c["gold sentence"], c["swapped number/entity"]) for c in ordered[:20]]
    rows = validate_checker(judge, [it for pair in pairs for it in pair])
    right = [rows[2 * i]["correct"] == 1 and rows[2 * i + 1]["correct"] == 1 for i in range(len(pairs))]
    wrong = [(r["kind"], r["p_yes"], r["claim"][:120]) for r in rows if r["correct"] != 1]
    assert sum(right) >= 17, wrong
