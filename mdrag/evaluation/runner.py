"""The evaluation grid: every (domain, variant, setting) cell over a split's queries, into a ResultsStore.

Per query, retrieval runs once; per setting the prompt is built once and all variants that still need
a result are generated together in one batch (many adapters on one base). Rows of one (query, setting)
land in one transaction, so a run killed at any point resumes without duplicates or lost rows.
Answers are keyed without the judge: verdicts live in their own table (store.py), written after the answers
by `judge_store`, so adding or changing a judge never regenerates an answer, and a judge failure is stored
as a failed verdict that the next run (or `python -m mdrag judge`) retries.

Retrievers are a grid dimension (issue: does a better retriever help more than a generator adapter?).
The retriever is part of a row's key except in the oracle setting, whose prompt holds the gold passages
whatever the retriever (one row serves every retriever), and except for the paper's pipeline
(splade>minilm), so that rows stored before the dimension existed keep their keys.
"""

from __future__ import annotations

import hashlib
import itertools
import sys
import time
from dataclasses import dataclass, field

from tqdm import tqdm

from mdrag.data.domains import DOMAINS, resolve_domain
from mdrag.engine import Engine
from mdrag.evaluation.retrieval_metrics import RETRIEVAL_METRICS
from mdrag.evaluation.sampling import SAMPLES, sample
from mdrag.evaluation.store import ResultsStore, answer_key, cell_key, retrieval_id
from mdrag.evaluation.verdicts import judge_store
from mdrag.generation.variants import adapter_dir, get_variant
from mdrag.hashing import file_sha256
from mdrag.machine import versions
from mdrag.pipeline import SETTINGS
from mdrag.retrieval.retrievers import check_retriever_available


@dataclass
class Grid:
    domains: list[str]
    variants: list[str]
    settings: list[str] = field(default_factory=lambda: ["retrieved"])
    split: str = "test"
    limit: int | None = None
    retrievers: list[str] = field(default_factory=lambda: ["splade"])
    reranker: str = "minilm"
    n_distractors: int = 4
    sample: str = "stratified"  # evaluation/sampling.py; "file": the split's first questions (the first grids)
    seed: int = 0

    def __post_init__(self) -> None:
        self.domains = [resolve_domain(d).name for d in (list(DOMAINS) if self.domains == ["all"] else self.domains)]
        for v in self.variants:
            get_variant(v)
        for s in self.settings:
            if s not in SETTINGS:
                from mdrag.errors import UnknownNameError

                raise UnknownNameError(f"Unknown setting '{s}'. Known: {', '.join(SETTINGS)}")
        if self.sample not in SAMPLES:
            from mdrag.errors import UnknownNameError

            raise UnknownNameError(f"Unknown sample '{self.sample}'. Known: {', '.join(SAMPLES)}")
        for r, d in itertools.product(self.retrievers, self.domains):
            check_retriever_available(r, d)


def adapter_fingerprint(variant: str) -> str:
    spec = get_variant(variant)
    return "base" if spec.is_base else file_sha256(adapter_dir(variant) / "adapter_model.safetensors")[:16]


def _retrieval_scores(ranked, gold: set[str]) -> dict[str, float]:
    ids = [p.id for p in ranked]
    first = [p.id for p in sorted(ranked, key=lambda p: p.first_stage_rank)]
    out = {name: fn(ids, gold) for name, fn in RETRIEVAL_METRICS.items()}
    out["first_stage_Recall@5"] = RETRIEVAL_METRICS["Recall@5"](first, gold)
    return out


def dtype_note(store: ResultsStore, dtype: str, own_dtype: bool = False) -> str | None:
    """A heads-up when the store's earlier runs generated in another dtype. The dtype is part of every row's key
    (bf16 and float32 greedy answers can differ), but not of the experiment cell (store.cell_key): by default
    this run reuses a cell's answer from another dtype (every view counts one answer per cell) and generates
    only the cells nobody answered; `own_dtype` answers every cell again in this dtype, beside the others'."""
    before = {r["config"].get("generation", {}).get("dtype") for r in store.runs()} - {dtype, "endpoint", None}
    if not before:
        return None
    others = ", ".join(sorted(before))
    if own_dtype:
        return (f"Note: this store's earlier runs generated in {others}; this run answers every cell again in "
                f"{dtype} (--own-dtype), beside theirs; the views count each cell's first stored answer.")
    return (f"Note: this store's earlier runs generated in {others}; this run generates in {dtype} only the cells "
            f"they did not answer and reuses theirs (--own-dtype to answer every cell in {dtype}; "
            f"MDRAG_DTYPE={sorted(before)[0]} to generate in theirs).")


def evaluate(grid: Grid, store: ResultsStore, engine: Engine, judge=None, show_progress: bool = True,
             own_dtype: bool = False) -> dict[str, int]:
    """Run every missing cell of the grid on `engine` (its generator, dtype, endpoint), then judge every answer
    without a verdict from `judge` (if any); returns counts of generated and cached rows (`reused`: of those,
    the cells answered in another dtype, see dtype_note) and of verdicts."""
    settings = engine.settings
    loaded = engine.generator()
    fps = {v: adapter_fingerprint(v) for v in grid.variants}  # fails early on a missing adapter
    judge_name = judge.name if judge else None
    run_id = f"run-{time.strftime('%Y%m%d-%H%M%S')}-{hashlib.sha256(repr(grid).encode()).hexdigest()[:6]}"
    # Where the answers come from is part of every key: a server's answers never pose as local ones.
    made_by = {"generator": loaded.fingerprint, "dtype": settings.dtype} if not settings.endpoint else \
        {"generator": f"endpoint:{settings.endpoint}", "dtype": "endpoint"}
    note = dtype_note(store, made_by["dtype"], own_dtype)
    answered = set() if own_dtype else store.answered_cells()
    if note and show_progress:
        print(note, file=sys.stderr)
    store.add_run(run_id, {**grid.__dict__, "generator_path": settings.generator, "endpoint": settings.endpoint,
                           "generator": loaded.name, "generator_fingerprint": loaded.fingerprint,
                           "adapters": fps, "judge": judge_name, "max_new_tokens": settings.max_new_tokens,
                           "generation": made_by,
                           "versions": versions()})
    pipes = {(d, r): engine.pipeline(d, retriever=r, reranker=grid.reranker)
             for d in grid.domains for r in grid.retrievers}
    per_domain = [[(d, q) for q in sample([q for q in pipes[d, grid.retrievers[0]].domain.split(grid.split)
                                           if q.gold_ids], grid.limit, grid.sample, grid.seed)]
                  for d in grid.domains]
    # Domains interleaved (query 1 of each domain, then query 2, ...): a run stopped early still covers
    # every domain evenly, and its partial results are usable.
    work = [item for batch in itertools.zip_longest(*per_domain) for item in batch if item is not None]
    counts = {"generated": 0, "cached": 0, "reused": 0}
    bar = tqdm(total=len(work) * len(grid.retrievers) * len(grid.settings), desc="evaluate", unit="cell",
               disable=not show_progress)
    for (domain, q), retriever in itertools.product(work, grid.retrievers):
        pipe = pipes[domain, retriever]
        rid = retrieval_id(retriever, grid.reranker)
        retrieved = pipe.retrieve(query_id=q.id)
        retrieval = _retrieval_scores(retrieved.ranked, set(q.gold_ids))
        for setting in grid.settings:
            trace = pipe.trace(retrieved, setting, seed=0, n_distractors=grid.n_distractors)
            prompt_hash = hashlib.sha256(trace.prompt.encode()).hexdigest()[:16]
            keys = {v: answer_key(domain=domain, query=q.id, setting=setting, prompt=prompt_hash, variant=v,
                                  adapter=fps[v], max_new_tokens=settings.max_new_tokens, generation=made_by,
                                  retriever=rid)
                    for v in grid.variants}
            missing = [v for v, k in keys.items() if not store.has(k)]  # one lookup per key
            other_dtype = {v for v in missing if cell_key(
                domain=domain, query=q.id, setting=setting, prompt=prompt_hash, variant=v, adapter=fps[v],
                max_new_tokens=settings.max_new_tokens, generator=made_by["generator"], retriever=rid) in answered}
            todo = [v for v in missing if v not in other_dtype]
            counts["cached"] += len(keys) - len(todo)
            counts["reused"] += len(other_dtype)
            if todo:
                pipe.answer(trace, todo)
            rows = []
            for v in todo:
                ans = trace.answers[v]
                counts["generated"] += 1
                rows.append({"key": keys[v], "run_id": run_id, "domain": domain, "cluster": DOMAINS[domain].cluster,
                             "query_id": q.id, "variant": v, "setting": setting, "retriever": rid,
                             "answer_type": q.answer_type,
                             "prompt_hash": prompt_hash, "question": q.text, "gold": q.answers,
                             "passages": [{"id": p.id, "rank": p.rank, "gold": p.is_gold,
                                           "first_stage": p.first_stage_score, "rerank": p.rerank_score}
                                          for p in trace.passages],
                             "answer": ans.text, "n_tokens": len(ans.token_ids), "seconds": ans.seconds,
                             "metrics": ans.metrics, "retrieval": retrieval, "created": time.time()})
            store.put_many(rows)
            bar.update(1)
    bar.close()
    if judge is not None:
        judged = judge_store(store, judge, show_progress=show_progress)
        counts.update(judged=judged["judged"], judge_failures=judged["failed"])
    return counts
