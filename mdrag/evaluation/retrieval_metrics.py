"""Retrieval metrics with binary relevance (a passage is relevant iff it is a gold passage).

nDCG@k: DCG = sum over ranks r<=k of rel_r / log2(r + 1), divided by the ideal DCG for min(|gold|, k)
relevant passages. MRR@k: 1 / rank of the first gold passage within k (0 if none).
Recall@k: share of the gold passages found in the top k.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from tqdm import tqdm


def ndcg_at_k(ranked: Sequence[str], gold: set[str], k: int = 10) -> float:
    if not gold:
        return 0.0
    dcg = sum(1.0 / math.log2(r + 2) for r, pid in enumerate(ranked[:k]) if pid in gold)
    ideal = sum(1.0 / math.log2(r + 2) for r in range(min(len(gold), k)))
    return dcg / ideal


def mrr_at_k(ranked: Sequence[str], gold: set[str], k: int = 10) -> float:
    return next((1.0 / (r + 1) for r, pid in enumerate(ranked[:k]) if pid in gold), 0.0)


def recall_at_k(ranked: Sequence[str], gold: set[str], k: int) -> float:
    return len(gold & set(ranked[:k])) / len(gold) if gold else 0.0


RETRIEVAL_METRICS: dict[str, Callable[[Sequence[str], set[str]], float]] = {
    "nDCG@10": lambda r, g: ndcg_at_k(r, g, 10),
    "MRR@10": lambda r, g: mrr_at_k(r, g, 10),
    "Recall@5": lambda r, g: recall_at_k(r, g, 5),
    "Recall@50": lambda r, g: recall_at_k(r, g, 50),
}


def evaluate_rankings(rankings: list[tuple[list[str], set[str]]]) -> dict[str, float]:
    """Mean of each metric over (ranked ids, gold ids) pairs; queries without gold are skipped."""
    rows = [(r, g) for r, g in rankings if g]
    if not rows:
        return {name: float("nan") for name in RETRIEVAL_METRICS}
    return {name: sum(fn(r, g) for r, g in rows) / len(rows) for name, fn in RETRIEVAL_METRICS.items()}


def evaluate_retrieval(pipeline, split: str = "dev", limit: int | None = None) -> dict[str, dict[str, float]]:
    """First-stage and reranked metrics of a RagPipeline's retriever + reranker on a split."""
    queries = [q for q in pipeline.domain.split(split) if q.gold_ids][:limit]
    first, reranked = [], []
    for q in tqdm(queries, desc=f"retrieval {pipeline.domain.name}/{split}", unit="query"):
        ranked = pipeline.retrieve(query_id=q.id).ranked
        gold = set(q.gold_ids)
        first.append(([p.id for p in sorted(ranked, key=lambda p: p.first_stage_rank)], gold))
        reranked.append(([p.id for p in ranked], gold))
    return {"first_stage": evaluate_rankings(first), "reranked": evaluate_rankings(reranked), "n": len(queries),
            # per question, in split order: paired comparisons of two retrievers on the same questions
            "first_stage_per_query": {name: [fn(r, g) for r, g in first] for name, fn in RETRIEVAL_METRICS.items()}}


def compare_retrievers(base: str, adapted: str, domains: list[str], trained_on: list[str], split: str = "test",
                       limit: int | None = None, engine=None) -> list[dict]:
    """First-stage metrics of two retrievers on each domain's split (no reranking), with the difference:
    on the training domains it shows the gain, on the others whether the adapted encoder forgot. Retrieval
    only: `engine` (a fresh one when not given) never loads a generator here."""
    from mdrag.engine import Engine
    from mdrag.evaluation.stats import bootstrap_ci

    engine = engine or Engine()
    rows = []
    for name in domains:
        got = {r: evaluate_retrieval(engine.pipeline(name, retriever=r, reranker="none"), split, limit)
               for r in (base, adapted)}
        for metric in RETRIEVAL_METRICS:
            before, after = got[base]["first_stage"][metric], got[adapted]["first_stage"][metric]
            pairs = zip(got[adapted]["first_stage_per_query"][metric], got[base]["first_stage_per_query"][metric],
                        strict=True)
            _, low, high = bootstrap_ci([a - b for a, b in pairs])  # paired: same questions, both encoders
            rows.append({"domain": name, "trained_on_it": name in trained_on, "metric": metric, "n": got[base]["n"],
                         "before": before, "after": after, "delta": after - before, "delta_ci_low": low,
                         "delta_ci_high": high})
    return rows
