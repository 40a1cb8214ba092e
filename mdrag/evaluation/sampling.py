"""Evaluation samples: a seeded order of a split's questions whose every prefix is stratified.

Why: the first 100 questions in file order were all answerable on ClapNQ (abstention never evaluated) and
came from 17 tables on TAT-QA. `sample_order` draws the strata (answer types: short, long, yes-no,
unanswerable) in proportion to their share of the split, at every prefix length, and within a stratum spreads
the picks over source documents before repeating one. Because the order is fixed by (seed, split), raising
`--limit` from 100 to 300 keeps the first 100 questions, so their stored rows are reused.
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from collections.abc import Callable

from mdrag.data.schema import Query

SAMPLES = ("stratified", "file")  # "file": the split's own order (rows stored before stratified samples)


def _spread(queries: list[Query], rng: random.Random, group: Callable[[Query], str]) -> list[Query]:
    """Seeded shuffle, then round-robin over groups (one question per document before a second one)."""
    by_group: dict[str, list[Query]] = defaultdict(list)
    for q in rng.sample(queries, len(queries)):
        by_group[group(q)].append(q)
    groups = list(by_group.values())
    out: list[Query] = []
    for i in range(max(map(len, groups), default=0)):
        out += [g[i] for g in groups if i < len(g)]
    return out


def source_document(q: Query) -> str:
    """The document a question was written from: its first gold passage's document (chunking names passages
    '<doc>-c<i>'), else the question itself."""
    return re.sub(r"-c\d+$", "", q.gold_ids[0]) if q.gold_ids else q.id


def sample_order(queries: list[Query], seed: int = 0,
                 stratum: Callable[[Query], str] = lambda q: q.answer_type or "?") -> list[Query]:
    """All `queries` in a seeded order whose every prefix holds each stratum in proportion (largest-deficit
    rule: the next pick comes from the stratum furthest below its share), after one question of every stratum
    first, so that even a small sample holds every answer type present."""
    rng = random.Random(f"mdrag-sample:{seed}")
    strata: dict[str, list[Query]] = defaultdict(list)
    for q in sorted(queries, key=lambda q: q.id):  # independent of file order
        strata[stratum(q)].append(q)
    names = sorted(strata)
    queues = {s: _spread(strata[s], rng, source_document) for s in names}
    total, taken = len(queries), dict.fromkeys(names, 0)
    out: list[Query] = []
    while len(out) < total:
        n = len(out) + 1
        best = max((s for s in names if taken[s] < len(queues[s])),
                   key=lambda s: (taken[s] == 0, n * len(queues[s]) / total - taken[s], -names.index(s)))
        out.append(queues[best][taken[best]])
        taken[best] += 1
    return out


def sample(queries: list[Query], limit: int | None, how: str = "stratified", seed: int = 0) -> list[Query]:
    """The first `limit` questions of the chosen order (all when `limit` is None)."""
    if how not in SAMPLES:
        from mdrag.errors import UnknownNameError

        raise UnknownNameError(f"Unknown sample '{how}'. Known: {', '.join(SAMPLES)}")
    ordered = sample_order(queries, seed) if how == "stratified" else list(queries)
    return ordered[:limit]
