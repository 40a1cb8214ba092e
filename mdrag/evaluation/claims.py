"""The paper's claims, each tested on a results store: reproduced, contradicted or inconclusive.

A claim is a paired comparison (cell A vs cell B over the same questions; a cell is a variant in a setting)
on one metric, restricted to the answers it is about (long-form claims read long answers only), with the
direction the paper reports. Verdict: *reproduced* when the 95% bootstrap CI of the paired difference
excludes 0 on the paper's side, *contradicted* when it excludes 0 on the other side, *inconclusive*
otherwise, marked *underpowered* when the smallest difference detectable at 80% power is above the paper's
effect scale (report.PAPER_EFFECT). LLMEval rows carry the judge's validity (kappa and AUC against Match), so
a claim read through a weak instrument says so. Claims are registry entries: one `Claim(...)` per question.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from mdrag.evaluation.stats import bootstrap_ci, paired_power


@dataclass(frozen=True)
class Claim:
    name: str
    a: tuple[str, str]  # (variant, setting)
    b: tuple[str, str]
    direction: int  # +1: the paper finds A > B; -1: A < B
    metrics: tuple[str, ...] = ("m_match", "judge_score")
    rows: Callable[[pd.DataFrame], pd.DataFrame] | None = None  # the answers the claim is about (None: all)
    note: str = ""


def _long(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["answer_type"] == "long"]


def _short(df: pd.DataFrame) -> pd.DataFrame:
    """Match is meaningful on short and yes/no answers only (a long answer rarely contains a long gold)."""
    return df[df["answer_type"].isin(["short", "yes-no"])]


CLAIMS: list[Claim] = [
    Claim("Short-label fine-tuning hurts long-form answers", ("full", "retrieved"), ("vanilla", "retrieved"), -1,
          ("m_recall", "judge_score"), _long),
    Claim("SKD recovers long-form answers (1.5B teacher)", ("full_skd", "retrieved"), ("full", "retrieved"), +1,
          ("m_recall", "judge_score"), _long),
    Claim("SKD recovers long-form answers (self-distillation, weak teacher)", ("full_skd_self", "retrieved"),
          ("full", "retrieved"), +1, ("m_recall", "judge_score"), _long),
    Claim("QK-Att beats Full-LoRA on oracle passages (paper's alpha 32)", ("qk_att", "oracle"), ("full", "oracle"),
          +1, rows=_short, note="mixes the module choice with a 5x smaller LoRA scaling"),
    Claim("QK-Att beats Full-LoRA on oracle passages (equal scaling, alpha = 2r)", ("qk_att_eq", "oracle"),
          ("full", "oracle"), +1, rows=_short, note="the paper's question without the scaling confound"),
    Claim("QK-Att beats Full-LoRA on oracle passages (rank-stabilised scaling)", ("qk_att_rs", "oracle"),
          ("full_rs", "oracle"), +1, rows=_short),
    Claim("Distractors hurt (vanilla: noisy vs oracle passages)", ("vanilla", "noisy"), ("vanilla", "oracle"), -1,
          rows=_short),
    Claim("Distractors hurt (Full-LoRA: noisy vs oracle passages)", ("full", "noisy"), ("full", "oracle"), -1,
          rows=_short),
]


def metric_name(column: str) -> str:
    return {"m_match": "Match", "m_recall": "Recall", "judge_score": "LLMEval"}.get(column, column)


def _verdict(direction: int, lo: float, hi: float) -> str:
    if pd.isna(lo):
        return "no data"
    side = lo > 0 if direction > 0 else hi < 0
    other = hi < 0 if direction > 0 else lo > 0
    return "reproduced" if side else "contradicted" if other else "inconclusive"


def claims_table(df: pd.DataFrame, effect: float = 0.05, validity: dict[str, str] | None = None,
                 claims: list[Claim] | None = None) -> pd.DataFrame:
    """One row per (claim, metric) with data: n, A - B, CI, MDE and the verdict. `validity`: a note per
    metric column (the judge's kappa/AUC for judge_score) shown beside the figure."""
    rows = []
    for claim in claims or CLAIMS:
        sub = claim.rows(df) if claim.rows else df
        for metric in claim.metrics:
            if metric not in sub or sub[metric].isna().all():
                continue
            cells = {}
            for cell in (claim.a, claim.b):
                part = sub[(sub["variant"] == cell[0]) & (sub["setting"] == cell[1])]
                cells[cell] = part.groupby(["domain", "query_id"])[metric].first()
            diff = (cells[claim.a] - cells[claim.b]).dropna()
            if diff.empty:
                continue
            # questions both cells answered: a metric read on fewer of them covers the comparison only in part
            pairs = len(cells[claim.a].index.intersection(cells[claim.b].index))
            note = claim.note
            if len(diff) < pairs:
                # e.g. verdicts only for answers identical to earlier-judged ones: a selected subset, not a sample
                partial = f"{metric_name(metric)} on {len(diff)} of {pairs} pairs (the rest not judged yet)"
                note = "; ".join(x for x in (partial, note) if x)
            mean, lo, hi = bootstrap_ci(diff.tolist())
            power = paired_power(diff.tolist())
            verdict = _verdict(claim.direction, lo, hi)
            if verdict == "inconclusive" and not power["mde"] <= effect:
                verdict += " (underpowered)"
            rows.append({"claim": claim.name, "metric": metric_name(metric),
                         "A - B": f"{claim.a[0]}/{claim.a[1]} - {claim.b[0]}/{claim.b[1]}",
                         "paper": "A > B" if claim.direction > 0 else "A < B", "n": len(diff), "diff": mean,
                         "CI low": lo, "CI high": hi, "MDE (80%)": power["mde"], "verdict": verdict,
                         "instrument": (validity or {}).get(metric, ""), "note": note})
    return pd.DataFrame(rows)
