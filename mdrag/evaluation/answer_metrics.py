"""Answer metrics, registered by name (lm-eval-harness style): the paper's Match and Recall, plus EM,
token F1, ROUGE-L, answer length, the yes/no decision and abstention on unanswerable questions.

Every text metric compares the prediction with each acceptable gold answer and keeps the best
(a question may have several correct answers). Normalisation is SQuAD's: lower case, punctuation and
the articles a/an/the removed, whitespace collapsed; Unicode is NFKC-normalised first so "Röntgen"
written with a combining diaeresis still matches.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation) | {"‘", "’", "“", "”", "–", "—", "…"}


def normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(" " if ch in _PUNCT else ch for ch in text)
    return " ".join(_ARTICLES.sub(" ", text).split())


def tokens(text: str) -> list[str]:
    return normalise(text).split()


def match(prediction: str, gold: str) -> float:
    """Paper's Match: the normalised gold answer is contained in the normalised prediction (whole words)."""
    g = normalise(gold)
    return float(bool(g) and f" {g} " in f" {normalise(prediction)} ")


def recall(prediction: str, gold: str) -> float:
    """Paper's Recall: share of the gold answer's tokens that appear in the prediction (with multiplicity)."""
    g, p = Counter(tokens(gold)), Counter(tokens(prediction))
    total = sum(g.values())
    return sum((g & p).values()) / total if total else 0.0


def exact_match(prediction: str, gold: str) -> float:
    return float(normalise(prediction) == normalise(gold))


def token_f1(prediction: str, gold: str) -> float:
    p, g = tokens(prediction), tokens(gold)
    common = sum((Counter(p) & Counter(g)).values())
    if not p or not g or not common:
        return float(p == g)
    precision, rec = common / len(p), common / len(g)
    return 2 * precision * rec / (precision + rec)


@cache
def _rouge():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def rouge_l(prediction: str, gold: str) -> float:
    """ROUGE-L F-measure from the `rouge-score` package (on normalised text, so Unicode words survive)."""
    return _rouge().score(normalise(gold), normalise(prediction))["rougeL"].fmeasure


_DECISION = re.compile(r"\b(yes|no|maybe)\b")


def decision(prediction: str) -> str | None:
    """The first yes/no/maybe word of the answer, the way a reader would take it."""
    m = _DECISION.search(normalise(prediction))
    return m.group(1) if m else None


_ABSTAIN = re.compile(
    r"(no answer|not (?:be )?(?:mentioned|provided|stated|specified|given|available|possible to|clear|known)|"
    r"(?:does|do) not (?:say|mention|provide|contain|specify|state|include)|cannot (?:be )?(?:answer|determin|find)|"
    r"can ?not (?:answer|determin)|unable to|unanswerable|no (?:information|mention|relevant)|don t know|"
    r"insufficient|not enough information)"
)


def abstained(prediction: str) -> float:
    """1 if the answer declines to answer (says the documents do not contain it), else 0."""
    text = normalise(prediction)
    return float(not text or bool(_ABSTAIN.search(text)))


@dataclass(frozen=True)
class Metric:
    name: str
    fn: Callable[[str, list[str], str], float | None]  # (prediction, gold answers, answer type) -> score
    description: str


def _best(per_gold: Callable[[str, str], float]) -> Callable[[str, list[str], str], float | None]:
    def score(prediction: str, golds: list[str], answer_type: str) -> float | None:
        if answer_type == "unanswerable" or not golds:
            return None  # not defined without a gold answer; see `abstained`
        return max(per_gold(prediction, g) for g in golds)

    return score


def _decision_correct(prediction: str, golds: list[str], answer_type: str) -> float | None:
    if answer_type != "yes-no" or not golds:
        return None
    return float(decision(prediction) == normalise(golds[0]))


def _abstained(prediction: str, golds: list[str], answer_type: str) -> float | None:
    return abstained(prediction) if answer_type == "unanswerable" else None


METRICS: dict[str, Metric] = {}


def register_metric(metric: Metric) -> Metric:
    METRICS[metric.name] = metric
    return metric


for _m in [
    Metric("match", _best(match), "normalised gold answer contained in the answer (paper's Match)"),
    Metric("recall", _best(recall), "share of gold tokens found in the answer (paper's Recall)"),
    Metric("em", _best(exact_match), "normalised exact match"),
    Metric("f1", _best(token_f1), "token-level F1 (SQuAD)"),
    Metric("rouge_l", _best(rouge_l), "ROUGE-L F-measure (rouge-score)"),
    Metric("length", lambda p, g, t: float(len(p.split())), "answer length in words"),
    Metric("decision", _decision_correct, "yes/no questions: the answer's first yes/no/maybe equals the gold one"),
    Metric("abstained", _abstained, "unanswerable questions: the answer declines to answer"),
]:
    register_metric(_m)


def score_answer(prediction: str, golds: list[str], answer_type: str) -> dict[str, float | None]:
    """Every registered metric for one answer (None where a metric does not apply)."""
    return {name: m.fn(prediction, golds, answer_type) for name, m in METRICS.items()}
