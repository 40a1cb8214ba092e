"""Attribution scored, not asserted (#25): how well each method's scores predict what held-out ablations do.

For one answer (a case) and one method:
- **LDS** (linear datamodeling score, as ContextCite evaluates): draw held-out random masks (a seed the methods
  never saw), predict each mask's effect as the sum of the kept sources' scores, and take the Spearman rank
  correlation with the target's actual logit probability under that mask. A predictor that ranks the masks
  perfectly scores 1; one that cannot tell masks apart (constant prediction) scores 0.
- **top-k drop**: the target's logit probability with every source minus with the method's k top-scored
  sources removed (higher = the method found sentences the answer needs).
Both per target span, aggregated per (variant, domain, method) over questions with bootstrap CIs; the method's
cost (forwards, seconds per attribution) is kept beside it.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd

from analysis.ablations import random_masks, target_logit
from analysis.source_methods import Case, SourceAttribution, attribute
from mdrag.evaluation.stats import bootstrap_ci

KS = (1, 3)


def lds(predicted: np.ndarray, actual: np.ndarray) -> float:
    """Spearman correlation of predicted and actual outcomes over masks; 0 when the prediction is constant
    (it ranks nothing), nan when the outcome is (there is nothing to rank)."""
    from scipy.stats import spearmanr

    predicted, actual = np.asarray(predicted, dtype=float), np.asarray(actual, dtype=float)
    if np.ptp(actual) == 0:
        return float("nan")
    if np.ptp(predicted) == 0:
        return 0.0
    return float(spearmanr(predicted, actual).statistic)


def _topk_mask(scores: np.ndarray, k: int) -> np.ndarray:
    keep = np.ones(len(scores), dtype=bool)
    keep[np.argsort(-scores, kind="stable")[:k]] = False
    return keep


def score_attributions(case: Case, attributions: list[SourceAttribution], n_eval: int = 16, keep: float = 0.5,
                       seed: int = 1_000_003) -> list[dict]:
    """One row per (method, target): LDS on `n_eval` held-out masks and the top-k drops, one batched set of
    ablation forwards shared by every method (the held-out masks, the full prompt, each method's top-k removals)."""
    n = len(case.sources)
    salt = int(hashlib.sha256(f"{case.trace.query_id or case.trace.query}".encode()).hexdigest()[:8], 16)
    held_out = random_masks(n_eval, n, keep, seed + salt)
    rows = [np.ones(n, dtype=bool), *list(held_out)]
    where: dict[tuple[str, int, int], int] = {}
    for a in attributions:
        for t in range(len(case.targets)):
            for k in KS:
                mask = _topk_mask(a.scores[t], min(k, n))
                key = mask.tobytes()
                index = next((i for i, r in enumerate(rows) if r.tobytes() == key), None)
                if index is None:
                    rows.append(mask)
                    index = len(rows) - 1
                where[(a.method, t, k)] = index
    logprobs = case.scorer.token_logprobs(np.stack(rows))  # (rows, answer tokens)
    out = []
    for a in attributions:
        for t, target in enumerate(case.targets):
            y = target_logit(logprobs, target)
            predicted = held_out.astype(float) @ a.scores[t]
            row = {"method": a.method, "variant": a.variant, "target": target.name, "n_sources": n, "n_eval": n_eval,
                   "lds": lds(predicted, y[1: 1 + n_eval]), "forwards": a.forwards, "seconds": a.seconds,
                   "params": json.dumps(a.params, sort_keys=True, default=str)}
            for k in KS:
                row[f"drop{k}"] = float(y[0] - y[where[(a.method, t, k)]])
            out.append(row)
    return out


def score_case(case: Case, methods: list[str], n_eval: int = 16, params: dict[str, dict] | None = None
               ) -> tuple[list[SourceAttribution], list[dict]]:
    """Attribute `case` with every method, then score them all on the same held-out ablations."""
    params = params or {}
    attributions = [attribute(case, m, **params.get(m, {})) for m in methods]
    return attributions, score_attributions(case, attributions, n_eval)


def summary(rows: pd.DataFrame, by: tuple[str, ...] = ("variant", "domain", "method"), target: str = "answer"
            ) -> pd.DataFrame:
    """Mean LDS and top-k drops with 95% bootstrap CIs over questions, and the mean cost, per group."""
    df = rows[rows["target"] == target] if target else rows
    out = []
    for keys, g in df.groupby(list(by), sort=True):
        row = dict(zip(by, keys if isinstance(keys, tuple) else (keys,), strict=True))
        row["n"] = int(g["lds"].notna().sum())
        for col in ["lds", *[f"drop{k}" for k in KS]]:
            mean, lo, hi = bootstrap_ci(g[col].dropna().tolist())
            row.update({col: mean, f"{col}_lo": lo, f"{col}_hi": hi})
        row["forwards"] = float(g["forwards"].mean())
        row["seconds"] = float(g["seconds"].mean())
        out.append(row)
    return pd.DataFrame(out)


def summary_markdown(table: pd.DataFrame) -> str:
    """The summary as a markdown table: value [CI] per score, n and cost."""
    if table.empty:
        return "_No attribution scores in this store yet._"
    keys = [c for c in ("variant", "domain", "method") if c in table]
    head = [*keys, "n", "LDS", "top-1 drop", "top-3 drop", "forwards", "s / attribution"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table.itertuples():
        cells = [str(getattr(r, k)) for k in keys] + [str(r.n)]
        for col in ("lds", "drop1", "drop3"):
            cells.append(f"{getattr(r, col):.2f} [{getattr(r, col + '_lo'):.2f}, {getattr(r, col + '_hi'):.2f}]")
        cells += [f"{r.forwards:.0f}", f"{r.seconds:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
