"""One registry of context-attribution methods with one output type (#25).

Every method scores each source sentence (analysis.sources) for each target span of one variant's answer:
higher = the target depends more on that sentence. The scores of ablation methods are in logit-probability
units (what removing the sentence costs); attention scores are attention mass; all are *scored* the same way
by analysis.attribution_scores (LDS and top-k drop on held-out ablations), which is what makes them comparable.

Methods:
- `context_cite`: ContextCite's surrogate (Cohen-Wang et al., 2024): random ablation masks, the target's logit
  probability under each, a sparse linear fit (scikit-learn Lasso); the coefficients are the scores.
- `sentence_loo`: leave one sentence out (1 + sources forwards).
- `passage_loo`: the existing captum passage ablation (1 + passages forwards), each passage's drop spread evenly
  over its sentences (a passage-level method: it cannot tell sentences of one passage apart). Its units are
  log-probability drops (captum's), not logit probability: LDS and top-k are rank-based, so scoring is unaffected.
- `attention`: raw attention mass from the target's query rows to each sentence, mean over layers and heads
  (one forward).
- `at2`: AT2 (Cohen-Wang et al., 2025): the same per-head masses weighted by per-head weights learned for this
  variant from ablations of training-split prompts (analysis.at2), one forward.
- `gradient`: integrated gradients on the input embeddings summed over each sentence's tokens (analysis.attribution;
  one IG pass per target, slow).
- `random`: seeded random scores in [0, 1), the floor any method must beat. Its LDS is not 0: positive scores
  predict "the more sentences kept, the likelier the answer", which is true; a method must beat it to show it
  knows *which* sentences matter (its top-k drops stay near 0).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.ablations import AblationScorer, random_masks, target_logit
from analysis.sources import Source, Target, answer_targets, source_owner
from mdrag.engine import Engine
from mdrag.registry import Registry
from mdrag.trace import RagTrace


@dataclass
class SourceAttribution:
    """Scores of one method for one variant's answer: (targets, sources), with what it cost."""

    method: str
    variant: str
    sources: list[Source]
    targets: list[Target]
    scores: np.ndarray  # (targets, sources)
    params: dict = field(default_factory=dict)
    forwards: int = 0  # forward passes of the generator (ablation rows count one each)
    seconds: float = 0.0

    def top(self, target: int = 0, k: int = 3) -> list[tuple[Source, float]]:
        order = np.argsort(-self.scores[target], kind="stable")[:k]
        return [(self.sources[i], float(self.scores[target, i])) for i in order]

    def frame(self) -> pd.DataFrame:
        """One row per (target, source): variant, method, target, passage, sentence, text, score, rank."""
        rows = []
        for t, target in enumerate(self.targets):
            ranks = np.argsort(np.argsort(-self.scores[t], kind="stable"), kind="stable") + 1
            for s, source in enumerate(self.sources):
                rows.append({"variant": self.variant, "method": self.method, "target": target.name,
                             "passage": source.passage, "sentence": source.index + 1, "text": source.text,
                             "score": float(self.scores[t, s]), "rank": int(ranks[s])})
        return pd.DataFrame(rows)


@dataclass
class Case:
    """What a method works on: one trace, one variant, its sources and targets, and a shared ablation scorer."""

    trace: RagTrace
    variant: str
    engine: Engine
    sources: list[Source]
    targets: list[Target]
    scorer: AblationScorer


Scores = tuple[np.ndarray, int]  # (targets, sources) scores and the forwards they took
MethodFn = Callable[[Case, dict], Scores]


@dataclass(frozen=True)
class AttributionMethod:
    name: str
    label: str
    fn: MethodFn
    defaults: dict = field(default_factory=dict)
    cost: str = ""  # forward passes, in words


METHODS: Registry[AttributionMethod] = Registry("attribution method")


def _seed(case: Case, salt: int) -> int:
    import hashlib

    return int(hashlib.sha256(f"{case.trace.query_id or case.trace.query}|{salt}".encode()).hexdigest()[:8], 16)


def _context_cite(case: Case, p: dict) -> Scores:
    from sklearn.linear_model import Lasso

    masks = random_masks(p["masks"], len(case.sources), p["keep"], _seed(case, p["seed"]))
    logprobs = case.scorer.token_logprobs(masks)  # (masks, answer tokens)
    x = masks.astype(np.float64)
    scores = np.zeros((len(case.targets), len(case.sources)))
    for t, target in enumerate(case.targets):
        y = target_logit(logprobs, target)
        if np.ptp(y) > 0:  # a constant outcome carries no attribution (Lasso would return zeros anyway)
            scores[t] = Lasso(alpha=p["alpha"], max_iter=10_000).fit(x, y).coef_
    return scores, len(masks)


def _sentence_loo(case: Case, p: dict) -> Scores:
    n = len(case.sources)
    masks = np.vstack([np.ones((1, n), dtype=bool), ~np.eye(n, dtype=bool)])  # full, then each one left out
    logprobs = case.scorer.token_logprobs(masks)
    scores = np.stack([target_logit(logprobs, t)[0] - target_logit(logprobs, t)[1:] for t in case.targets])
    return scores, len(masks)


def _passage_loo(case: Case, p: dict) -> Scores:
    from analysis.attribution import passage_ablation

    attr = passage_ablation(case.trace, case.variant, case.engine)
    per_token = np.asarray(attr.token_scores, dtype=np.float64)  # (answer tokens, passages)
    if per_token.ndim != 2:  # a one-token answer: captum returns the sequence total only
        per_token = np.asarray(attr.scores, dtype=np.float64)[None, :]
    sizes = np.bincount([s.passage - 1 for s in case.sources], minlength=per_token.shape[1])
    scores = np.zeros((len(case.targets), len(case.sources)))
    for t, target in enumerate(case.targets):
        drop = per_token[target.lo: target.hi].sum(axis=0)  # (passages,)
        scores[t] = [drop[s.passage - 1] / sizes[s.passage - 1] for s in case.sources]
    return scores, 1 + per_token.shape[1]


def head_masses(case: Case) -> np.ndarray:
    """(targets, layers * heads, sources): attention mass from each target's query rows to each source's tokens,
    mean over the target's tokens; one forward of prompt + answer with the recording attention."""
    import torch

    from analysis.attention import install, recording

    m = case.scorer.m
    owner = source_owner(case.trace, case.sources, m.tokenizer)  # (prompt tokens,)
    answer = m.answer_ids
    ids = case.trace.prompt_ids + answer
    columns = np.concatenate([owner, np.full(len(answer), -1)])
    onehot = torch.zeros(len(ids), len(case.sources))  # (T, sources): outside every source -> no column
    inside = np.nonzero(columns >= 0)[0]
    onehot[torch.tensor(inside), torch.tensor(columns[inside])] = 1.0
    n = len(case.trace.prompt_ids)
    rows = torch.arange(n - 1, n - 1 + len(answer))  # the query positions that produced each answer token
    install(m.model)
    with torch.inference_mode(), m.fast.rows([m.name]), recording(rows, onehot) as rec:
        m.model(input_ids=torch.tensor([ids]), logits_to_keep=1)
    per_layer = torch.stack([rec.layers[layer][0] for layer in sorted(rec.layers)])  # (layers, heads, n, sources)
    flat = per_layer.reshape(-1, len(answer), len(case.sources)).numpy()  # (layers * heads, answer, sources)
    return np.stack([flat[:, t.lo: t.hi].mean(axis=1) for t in case.targets])


def _attention(case: Case, p: dict) -> Scores:
    return head_masses(case).mean(axis=1), 1


def _at2(case: Case, p: dict) -> Scores:
    from analysis.at2 import InvalidWeightsError, load_head_weights, weights_fingerprint

    weights = load_head_weights(case.variant, p.get("folder"))  # (layers * heads,)
    p["weights"] = weights_fingerprint(case.variant, p.get("folder"))  # recorded: which fit produced the scores
    masses = head_masses(case)  # (targets, layers * heads, sources)
    if masses.shape[1] != weights.shape[0]:
        raise InvalidWeightsError(f"AT2 weights for {case.variant} hold {weights.shape[0]} heads; this model has "
                         f"{masses.shape[1]}")
    return np.einsum("h,ths->ts", weights, masses), 1


def _gradient(case: Case, p: dict) -> Scores:
    from analysis.attribution import gradient_attribution

    owner = source_owner(case.trace, case.sources, case.scorer.m.tokenizer)
    scores = np.zeros((len(case.targets), len(case.sources)))
    for t, target in enumerate(case.targets):
        frame = gradient_attribution(case.trace, case.variant, case.engine, (target.lo, target.hi), p["steps"])
        for position, score in zip(frame["position"], frame["score"], strict=True):
            if position < len(owner) and owner[position] >= 0:
                scores[t, owner[position]] += score
    return scores, len(case.targets) * p["steps"]


def _random(case: Case, p: dict) -> Scores:
    rng = np.random.default_rng(_seed(case, p["seed"]))
    return rng.random((len(case.targets), len(case.sources))), 0


for _method in [
    AttributionMethod("context_cite", "ContextCite surrogate (Lasso on random ablations)", _context_cite,
                      {"masks": 32, "keep": 0.5, "alpha": 0.01, "seed": 0}, "one per mask (on the shared prefix)"),
    AttributionMethod("at2", "AT2 learned head weights", _at2, {}, "one"),
    AttributionMethod("sentence_loo", "leave one sentence out", _sentence_loo, {}, "1 + sentences"),
    AttributionMethod("passage_loo", "leave one passage out (captum), spread over its sentences", _passage_loo, {},
                      "1 + passages"),
    AttributionMethod("attention", "raw attention mass (mean over layers and heads)", _attention, {}, "one"),
    AttributionMethod("gradient", "integrated gradients on the embeddings", _gradient, {"steps": 8},
                      "steps per target, with gradients"),
    AttributionMethod("random", "random scores (baseline)", _random, {"seed": 0}, "none"),
]:
    METHODS.register(_method)


def make_case(trace: RagTrace, variant: str, engine: Engine, span: tuple[int, int] | None = None,
              batch_size: int = 1) -> Case:
    scorer = AblationScorer(trace, variant, engine, batch_size=batch_size)
    targets = answer_targets(scorer.m.answer_ids, scorer.m.tokenizer, span)
    return Case(trace, variant, engine, scorer.sources, targets, scorer)


def attribute(case: Case, method: str, **params) -> SourceAttribution:
    """Run one registered method on `case`; unknown parameters are an error, the ones used are recorded."""
    entry = METHODS.find(method)
    unknown = set(params) - set(entry.defaults) - {"folder"}  # folder: where AT2 weights are read from
    if unknown:
        raise ValueError(f"{method} takes {sorted(entry.defaults) or 'no parameters'}, not {sorted(unknown)}")
    used = {**entry.defaults, **params}
    started = time.perf_counter()
    scores, forwards = entry.fn(case, used)
    # Where AT2 weights were read from is this machine's business, not a parameter: the weights' sha (added by
    # the method) identifies the fit, so stored rows carry no local path.
    recorded = {k: v for k, v in used.items() if k != "folder"}
    return SourceAttribution(method, case.variant, case.sources, case.targets, np.asarray(scores, dtype=np.float64),
                             recorded, forwards, time.perf_counter() - started)
