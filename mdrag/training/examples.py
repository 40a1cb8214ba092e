"""Training examples in the exact inference format: the paper's prompt over the top-5 reranked passages.

Each row is a conversational prompt-completion pair, as TRL's SFTTrainer expects: the loss falls on the
completion (the answer) only. Rows are cached as JSONL keyed by everything that shapes them, because
retrieving and reranking hundreds of questions costs minutes on a CPU.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from tqdm import tqdm

from mdrag.config import cache_dir
from mdrag.generation.prompts import SYSTEM_PROMPT, user_message


@dataclass(frozen=True)
class ExampleSpec:
    domain: str = "nq_open"  # paper: train on general QA, test out of domain
    split: str = "train"
    n: int = 128  # sized so each variant trains in well under an hour on 2 CPU cores (README)
    retriever: str = "splade"
    reranker: str = "minilm"
    top_k: int = 5

    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.__dict__, sort_keys=True).encode()).hexdigest()[:12]


def messages(question: str, passages: list[str]) -> list[dict[str, str]]:
    user, _ = user_message(question, passages)
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def rag_examples(spec: ExampleSpec | None = None, engine=None) -> list[dict]:
    """[{query_id, question, passages, passage_ids, gold}] for the first `n` questions of the split
    (file order, which the seeded split already shuffles), retrieved and reranked like at inference, by the
    pipeline's own retrieve step (on `engine`; a fresh one when not given)."""
    from mdrag.engine import Engine

    spec = spec or ExampleSpec()
    path = cache_dir() / "training" / f"examples-{spec.domain}-{spec.key()}.jsonl"
    if path.exists():
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    pipe = (engine or Engine()).pipeline(spec.domain, retriever=spec.retriever, reranker=spec.reranker,
                                         top_k=spec.top_k)
    rows = []
    for q in tqdm(pipe.domain.split(spec.split)[: spec.n], desc="retrieving training passages", unit="question"):
        ranked = pipe.retrieve(query_id=q.id).ranked[: spec.top_k]
        rows.append({"query_id": q.id, "question": q.text, "passages": [p.content for p in ranked],
                     "passage_ids": [p.id for p in ranked], "gold": q.answers[0] if q.answers else ""})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    tmp.replace(path)
    return rows


def shuffled_passages(examples: list[dict], seed: int = 0) -> list[dict]:
    """The same examples with each prompt's passages (and their ids) in a seeded random order.

    Why: in rerank order the gold passage is usually Document 1, and adapters trained so learn to answer from
    Document 1 (the position probe shows it). Each example's order depends only on (seed, query_id), so the
    shuffle is reproducible and does not change when examples are added or reordered."""
    import random

    out = []
    for ex in examples:
        order = list(range(len(ex["passages"])))
        random.Random(f"{seed}:{ex['query_id']}").shuffle(order)
        out.append({**ex, "passages": [ex["passages"][i] for i in order],
                    "passage_ids": [ex["passage_ids"][i] for i in order]})
    return out


def sft_rows(examples: list[dict], labels: dict[str, str] | None = None) -> list[dict]:
    """Prompt-completion rows; `labels` maps query_id -> teacher answer (SKD), else the gold answer."""
    out = []
    for ex in examples:
        target = labels[ex["query_id"]] if labels is not None else ex["gold"]
        out.append({"prompt": messages(ex["question"], ex["passages"]),
                    "completion": [{"role": "assistant", "content": target}]})
    return out
