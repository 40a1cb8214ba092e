"""Answer metrics against hand-computed cases."""

import pytest

from mdrag.evaluation.answer_metrics import (
    METRICS,
    abstained,
    decision,
    exact_match,
    match,
    normalise,
    recall,
    rouge_l,
    score_answer,
    token_f1,
)


@pytest.mark.parametrize("text,expected", [
    ("The Eiffel Tower!", "eiffel tower"),
    ("  An   apple, a pear. ", "apple pear"),
    ("Ro\u0308ntgen", "röntgen"),  # combining diaeresis -> composed form
    ("“Quoted” — dash…", "quoted dash"),
    ("$1,496.5 million", "1 496 5 million"),
])
def test_normalise(text, expected):
    assert normalise(text) == expected


@pytest.mark.parametrize("pred,gold,expected", [
    ("It was Wilhelm Conrad Röntgen in 1901.", "Wilhelm Conrad Röntgen", 1.0),
    ("It was Wilhelm Conrad Ro\u0308ntgen.", "Wilhelm Conrad Röntgen", 1.0),
    ("Röntgen", "Wilhelm Conrad Röntgen", 0.0),
    ("Paris, France", "the Paris", 1.0),
    ("Parisian food", "Paris", 0.0),  # whole words only
    ("The total was $1,496.5 million", "$1,496.5", 1.0),
    ("1,496", "1,496.5", 0.0),
    ("anything", "", 0.0),
])
def test_match(pred, gold, expected):
    assert match(pred, gold) == expected


@pytest.mark.parametrize("pred,gold,expected", [
    ("Wilhelm Röntgen", "Wilhelm Conrad Röntgen", 2 / 3),
    ("nothing here", "Wilhelm Conrad Röntgen", 0.0),
    ("the the cat", "the cat", 1.0),  # articles removed before counting
    ("new new york", "new york new", 1.0),
    ("new york", "new york new", 2 / 3),  # multiplicity counts
])
def test_recall(pred, gold, expected):
    assert recall(pred, gold) == pytest.approx(expected)


@pytest.mark.parametrize("pred,gold,em,f1", [
    ("The Cat.", "cat", 1.0, 1.0),
    ("black cat sat", "the cat", 0.0, 2 * (1 / 3) * 1 / (1 / 3 + 1)),
    ("", "", 1.0, 1.0),
    ("dog", "cat", 0.0, 0.0),
])
def test_em_and_f1(pred, gold, em, f1):
    assert exact_match(pred, gold) == em
    assert token_f1(pred, gold) == pytest.approx(f1)


def test_rouge_l_against_hand_computed_lcs():
    def f(lcs, n_pred, n_gold):
        p, r = lcs / n_pred, lcs / n_gold
        return 2 * p * r / (p + r)

    assert rouge_l("b c d e f", "b c d e f") == pytest.approx(1.0)
    assert rouge_l("x z y q", "x y z w v") == pytest.approx(f(2, 4, 5))  # LCS "x y" (or "x z")
    assert rouge_l("g h j k", "g i h j l") == pytest.approx(f(3, 4, 5))  # LCS "g h j"
    assert rouge_l("Röntgen won", "röntgen won") == 1.0


@pytest.mark.parametrize("pred,expected", [
    ("Yes, mitochondria play a role.", "yes"), ("No.", "no"), ("Maybe; the data are unclear", "maybe"),
    ("It is unclear.", None), ("Knowing this, yes", "yes"),
])
def test_decision(pred, expected):
    assert decision(pred) == expected


@pytest.mark.parametrize("pred,expected", [
    ("The documents do not mention it.", 1.0), ("I cannot answer this from the documents.", 1.0),
    ("There is no information about that.", 1.0), ("", 1.0), ("It is not provided in the text", 1.0),
    ("Paris.", 0.0), ("The answer is 42.", 0.0),
])
def test_abstained(pred, expected):
    assert abstained(pred) == expected


def test_score_answer_takes_the_best_gold_and_skips_what_does_not_apply():
    s = score_answer("It was David Motl.", ["David J. Ryder", "David Motl"], "short")
    assert s["match"] == 1.0 and s["recall"] == 1.0 and s["length"] == 4.0
    assert s["decision"] is None and s["abstained"] is None
    yn = score_answer("Yes, it does.", ["yes"], "yes-no")
    assert yn["decision"] == 1.0
    un = score_answer("The documents do not say.", [], "unanswerable")
    assert un["abstained"] == 1.0 and un["match"] is None
    assert set(s) == set(METRICS)
