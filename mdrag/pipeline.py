"""One query -> RagTrace: retrieve (top-50), rerank (top-5), build the paper's prompt, generate.

Settings (paper): `retrieved` = the reranked top-k; `oracle` = the gold passage(s) only; `noisy` = the
gold passage(s) among the highest-ranked non-gold retrieved passages (hard distractors), placed at
seeded random positions.
"""

from __future__ import annotations

import copy
import queue
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from mdrag.config import LIMITS
from mdrag.data.benchmark import Domain
from mdrag.data.schema import Passage, Query
from mdrag.errors import InvalidQueryError, UnknownNameError
from mdrag.evaluation.answer_metrics import score_answer
from mdrag.generation.prompts import Span, build_prompt
from mdrag.generation.variants import get_variant
from mdrag.retrieval.rerank import rerank_order, reranker_label

if TYPE_CHECKING:
    from mdrag.engine import Engine
    from mdrag.generation.kv_cache import PromptKV
from mdrag.trace import RagTrace, RetrievedPassage, VariantAnswer
from mdrag.validation import clean_query

SETTINGS = ("retrieved", "oracle", "noisy")  # the paper's settings
Progress = Callable[[float, str], None]
# Case settings: named prompt arrangements built from a question's retrieval by a layer above (analysis/probes.py
# registers every probe condition, e.g. "probe:attack=contradiction"), so a stored probe case reopens in Ask like
# any setting. (pipeline, retrieval, setting name) -> the prompt's passages in order.
CaseBuilder = Callable[["RagPipeline", "Retrieval", str], "list[RetrievedPassage]"]
CASE_SETTINGS: dict[str, tuple[str, CaseBuilder]] = {}  # name -> (label, builder)


def register_case_setting(name: str, label: str, build: CaseBuilder) -> None:
    CASE_SETTINGS[name] = (label, build)


def setting_names() -> list[str]:
    """The paper's settings, then every registered case setting."""
    return [*SETTINGS, *CASE_SETTINGS]


def setting_choices() -> list[tuple[str, str]]:
    """(label, name) of every setting, for selectors."""
    return [(s, s) for s in SETTINGS] + [(label, name) for name, (label, _) in CASE_SETTINGS.items()]


def check_setting(setting: str) -> str:
    if setting not in SETTINGS and setting not in CASE_SETTINGS:
        raise UnknownNameError(f"Unknown setting '{setting}'. Known: {', '.join(setting_names())}")
    return setting


@dataclass
class TokenEvent:
    """A variant's answer so far, after one more decoded token."""

    variant: str
    text: str


@dataclass
class AnswerEvent:
    """A variant's finished answer (scored against the gold answer when there is one)."""

    answer: VariantAnswer


class GenerationCancelled(Exception):
    """Raised inside the decoding loop (from its per-token callback) once the consumer has gone."""


def _no_progress(fraction: float, message: str) -> None:
    pass


@dataclass
class Retrieval:
    """One question retrieved once: the ranked candidates every setting's trace is built from."""

    text: str
    query: Query | None  # the benchmark record (gold answers and passages) when the question is one
    ranked: list[RetrievedPassage]  # first-stage top-k, in rerank order
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def gold(self) -> set[str]:
        return set(self.query.gold_ids) if self.query else set()


@dataclass
class RagPipeline:
    """The pipeline of one domain over an engine's shared parts, in three steps every caller uses: `retrieve`
    (once per question), `trace` (per setting: passages and the exact prompt), `stream` (each variant's answer
    as events, cancellable; `answer` is the same step waited for). `run` chains them."""

    engine: Engine
    domain: Domain
    retriever: str = "splade"
    reranker: str = "minilm"
    top_k: int = LIMITS.rerank_k

    @property
    def settings(self):
        return self.engine.settings

    def find_query(self, text: str) -> Query | None:
        """The benchmark question with this exact text (case-insensitive), to attach its gold data."""
        key = text.strip().lower()
        return next((q for q in self.domain.queries if q.text.strip().lower() == key), None)

    def resolve_query(self, query: str | bytes | None, query_id: str | None = None) -> tuple[str, Query | None]:
        """The question text and its benchmark record (by id, or by matching text), validated."""
        if query_id:
            if query_id not in self.domain.query_by_id:
                raise UnknownNameError(f"No query '{query_id}' in domain '{self.domain.name}'.")
            bench_query = self.domain.query_by_id[query_id]
            return bench_query.text, bench_query
        text = clean_query(query, self.settings.max_query_chars)
        return text, self.find_query(text)

    def retrieve(self, query: str | bytes | None = None, query_id: str | None = None) -> Retrieval:
        """Step 1: the question (text, or a benchmark id) validated, retrieved (first-stage top `first_k`) and
        reranked; reusable for every setting."""
        text, bench_query = self.resolve_query(query, query_id)
        gold = set(bench_query.gold_ids) if bench_query else set()
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        retriever = self.engine.retriever(self.retriever, self.domain)
        timings["load_retriever"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        idx, scores = retriever.search(text, self.settings.first_k)
        timings["first_stage"] = time.perf_counter() - t0
        cands = [self.domain.passages[i] for i in idx]
        t0 = time.perf_counter()
        reranker = self.engine.reranker(self.reranker)
        reranker.prepare(self.domain)
        rr = np.asarray(reranker.score(text, [p.content for p in cands]), dtype=np.float32)
        timings["rerank"] = time.perf_counter() - t0
        ranked = [_retrieved(cands[i], None, float(scores[i]), float(rr[i]), int(i) + 1, gold)
                  for i in rerank_order(rr)]
        return Retrieval(text, bench_query, ranked, timings)

    def select(self, setting: str, ranked: list[RetrievedPassage], query: Query | None, seed: int,
               n_distractors: int) -> list[RetrievedPassage]:
        if setting == "retrieved":
            chosen = ranked[: self.top_k]
        else:
            if query is None or not query.gold_ids:
                raise InvalidQueryError(
                    f"The {setting} setting needs a benchmark question with gold passages; "
                    "pick a question from the domain (or use --query-id)."
                )
            by_rank = {p.id: p for p in ranked}
            chosen = [by_rank.get(g) or _retrieved(self.domain.by_id[g], None, None, None, None, set(query.gold_ids))
                      for g in query.gold_ids]
            if setting == "noisy":
                distractors = [p for p in ranked if not p.is_gold][:n_distractors]
                rng = random.Random(f"{seed}:{query.id}")
                for d in distractors:
                    chosen.insert(rng.randint(0, len(chosen)), d)
        return chosen

    def trace(self, retrieval: Retrieval, setting: str, seed: int = 0, n_distractors: int = 4) -> RagTrace:
        """Step 2: the passages of `setting` (a paper setting or a registered case) and the exact prompt with its
        span map; no answers yet."""
        if check_setting(setting) in CASE_SETTINGS:
            passages = CASE_SETTINGS[setting][1](self, retrieval, setting)
        else:
            passages = self.select(setting, [copy.copy(p) for p in retrieval.ranked], retrieval.query, seed,
                                   n_distractors)
        for rank, p in enumerate(passages, 1):  # prompt positions
            p.rank = rank
        return self.trace_for_passages(retrieval.text, retrieval.query, passages, setting, seed, retrieval.timings)

    def trace_for_passages(self, text: str, bench_query: Query | None, passages: list[RetrievedPassage],
                           setting: str, seed: int = 0, timings: dict[str, float] | None = None) -> RagTrace:
        """The trace of a prompt over exactly these passages in this order (a setting's selection, or a
        probe's arrangement such as the gold passage moved to position 3); ranks follow the order."""
        timings = dict(timings or {})
        for rank, p in enumerate(passages, 1):
            p.rank = rank
        t0 = time.perf_counter()
        loaded = self.engine.generator()
        timings["load_generator"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        built = build_prompt(loaded.tokenizer, text, [p.content for p in passages])
        timings["prompt"] = time.perf_counter() - t0
        made_by = {"dtype": self.settings.dtype} if not self.settings.endpoint else \
            {"dtype": "endpoint", "endpoint": self.settings.endpoint}
        return RagTrace(
            query=text, domain=self.domain.name, setting=setting, retriever=self.retriever,
            reranker=reranker_label(self.reranker), passages=passages, prompt=built.text,
            prompt_ids=built.input_ids, spans=built.spans, query_id=bench_query.id if bench_query else None,
            gold_answers=list(bench_query.answers) if bench_query else [],
            gold_ids=list(bench_query.gold_ids) if bench_query else [],
            answer_type=bench_query.answer_type if bench_query else None, timings=timings,
            config={"generator": loaded.name, "generator_fingerprint": loaded.fingerprint,
                    "first_k": self.settings.first_k, "top_k": self.top_k, "seed": seed, "decoding": "greedy",
                    "max_new_tokens": self.settings.max_new_tokens, **made_by, "corpus": self.domain.fingerprint()},
        )

    def _generate(self, trace: RagTrace, variants: list[str],
                  on_answer: Callable[[VariantAnswer], None] | None = None,
                  on_token: Callable[[str, str], None] | None = None,
                  on_prefill: Callable[[str, PromptKV], None] | None = None) -> RagTrace:
        """Every variant's answer in one batch, scored against the gold answer if known; `on_answer` sees each
        variant's answer as soon as it is ready, `on_token(variant, text so far)` each new token and
        `on_prefill(variant, prompt keys and values)` each prefill (local generation only; an endpoint returns
        whole answers)."""
        for v in variants:
            get_variant(v)
        n = len(trace.prompt_ids)

        def done(gen) -> None:
            metrics = score_answer(gen.text, trace.gold_answers, trace.answer_type) if trace.query_id else {}
            answer = VariantAnswer(gen.variant, gen.text, gen.token_ids,
                                   Span("answer", "answer", n, n + len(gen.token_ids)),
                                   gen.seconds, get_variant(gen.variant).label, metrics)
            trace.answers[gen.variant] = answer
            if on_answer is not None:
                on_answer(answer)

        if self.settings.endpoint:
            from mdrag.generation.remote import RemoteGenerator

            gens = RemoteGenerator(self.settings.endpoint, self.engine.generator().tokenizer,
                                   self.settings.max_new_tokens).generate(trace.prompt_ids, variants, done)
        else:
            gens = self.engine.decoder().generate(trace.prompt_ids, variants, done, on_token, on_prefill)
        # Keep the requested order (answers arrive in finishing order).
        trace.answers = {v: trace.answers[v] for v in variants if v in trace.answers}
        trace.timings["generate"] = max((g.seconds for g in gens), default=0.0)
        firsts = [g.first_token_seconds for g in gens if g.first_token_seconds is not None]
        if firsts:
            trace.timings["first_token"] = min(firsts)
        return trace

    def answer(self, trace: RagTrace, variants: list[str],
               on_answer: Callable[[VariantAnswer], None] | None = None,
               on_prefill: Callable[[str, PromptKV], None] | None = None) -> RagTrace:
        """Step 3, waited for: every variant's answer in `trace.answers` (the batch `stream` runs);
        `on_prefill`: each variant's prompt keys and values, for analysis that continues from them."""
        return self._generate(trace, variants, on_answer, on_prefill=on_prefill)

    def stream(self, trace: RagTrace, variants: list[str]) -> Iterator[TokenEvent | AnswerEvent]:
        """Step 3: every variant's answer as events: TokenEvent after each decoded token, AnswerEvent as each
        variant finishes (then `trace.answers` holds them all). Generation runs in a worker thread; closing this
        iterator early (a closed browser tab, a re-submission) stops the decoding at its next token and waits
        for the worker, so no thread outlives its request. A generation error is raised here."""
        events: queue.Queue = queue.Queue()
        stop = threading.Event()
        done = object()

        def on_token(variant: str, text: str) -> None:
            if stop.is_set():
                raise GenerationCancelled
            events.put(TokenEvent(variant, text))

        def work() -> None:
            try:
                self._generate(trace, variants, on_answer=lambda a: events.put(AnswerEvent(a)), on_token=on_token)
                events.put(done)
            except GenerationCancelled:
                pass
            except Exception as err:  # handed to the consumer: the worker never dies silently
                events.put(err)

        worker = threading.Thread(target=work, daemon=True, name="mdrag-generate")
        worker.start()
        try:
            while (item := events.get()) is not done:
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            stop.set()
            worker.join(timeout=60)

    def run(self, query: str | bytes | None, variants: list[str] | None = None, setting: str = "retrieved",
            query_id: str | None = None, seed: int = 0, n_distractors: int = 4,
            progress: Progress = _no_progress, on_answer: Callable[[VariantAnswer], None] | None = None) -> RagTrace:
        """The three steps for one question and one setting."""
        variants = variants or ["vanilla"]
        for v in variants:
            get_variant(v)
        check_setting(setting)
        progress(0.05, "retrieving")
        retrieval = self.retrieve(query, query_id)
        progress(0.3, "building prompt")
        trace = self.trace(retrieval, setting, seed, n_distractors)
        progress(0.35, f"generating: {', '.join(variants)} (one batch)")
        self.answer(trace, variants, on_answer)
        progress(1.0, "done")
        return trace


def _retrieved(p: Passage, rank: int | None, first: float | None, rr: float | None, first_rank: int | None,
               gold: set[str]) -> RetrievedPassage:
    return RetrievedPassage(p.id, p.title, p.text, p.doc_id, rank or 0, first, rr, first_rank, p.id in gold)
