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
from collections.abc import Callable

import numpy as np

from analysis.ablations import random_masks, target_logit
from analysis.source_methods import Case, SourceAttribution, attribute, make_case
from mdrag.engine import Engine
from mdrag.evaluation.attribution_table import KS


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


DEFAULT_METHODS = ["context_cite", "at2", "sentence_loo", "passage_loo", "attention", "random"]


def score_store(store, engine: Engine, domains: list[str] | None = None, variants: list[str] | None = None,
                settings: tuple[str, ...] = ("retrieved",), methods: list[str] | None = None,
                limit: int | None = None, n_eval: int = 16, params: dict[str, dict] | None = None,
                progress: Callable | None = None) -> list[dict]:
    """Score `methods` on the stored answers of up to `limit` prompts per domain (test-split questions: held out
    of every AT2 fit) that have no row yet for that method; rows written per prompt (resumable). AT2 runs only
    for variants with fitted weights. Returns the new rows."""
    from analysis.at2 import fitted_variants
    from analysis.gold_attention import trace_from_rows

    methods = methods or DEFAULT_METHODS
    answers = store.answers_frame()
    keep = answers["setting"].isin(settings)
    if domains:
        keep &= answers["domain"].isin(domains)
    if variants:
        keep &= answers["variant"].isin(variants)
    answers = answers[keep]
    if answers.empty:
        return []
    done = store.attribution_scores_frame()
    done = set(zip(done["result_key"], done["method"], strict=True)) if len(done) else set()
    fitted = set(fitted_variants((params or {}).get("at2", {}).get("folder")))
    answers = answers.assign(_prompt=[tuple(p["id"] for p in ps) for ps in answers["passages"]])
    groups = []
    for _, per_domain in answers.groupby("domain", sort=True):
        prompts = [g for _, g in per_domain.groupby(["query_id", "setting", "_prompt"], sort=True)]
        groups += prompts[:limit]
    made = []
    for g in (progress(groups) if progress else groups):
        g = g.drop_duplicates("variant")
        todo = {r.variant: [m for m in methods if (r.key, m) not in done and (m != "at2" or r.variant in fitted)]
                for r in g.itertuples()}
        if not any(todo.values()):
            continue
        trace = trace_from_rows(g, engine)
        if trace is None:
            continue
        rows = []
        for r in g.itertuples():
            if not todo[r.variant] or not trace.answers[r.variant].token_ids:
                continue
            case = make_case(trace, r.variant, engine)
            _, scored = score_case(case, todo[r.variant], n_eval, params)
            rows += [{**s, "result_key": r.key, "domain": r.domain, "setting": r.setting, "query_id": r.query_id,
                      "dtype": engine.settings.dtype} for s in scored]
        store.put_attribution_scores(rows)
        made += rows
    return made
