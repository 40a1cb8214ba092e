"""RagTrace: the one record that flows from retrieval to generation to analysis to the UI.

Everything a screen or an analysis needs about one query is here, and it round-trips through JSON
(`to_json` / `from_json`), so runs can be stored, cached, shared and reloaded exactly.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from mdrag.generation.prompts import Span


@dataclass
class RetrievedPassage:
    id: str
    title: str
    text: str
    doc_id: str
    rank: int  # 1-based position in the prompt
    first_stage_score: float | None  # None where the passage was not retrieved (oracle)
    rerank_score: float | None
    first_stage_rank: int | None  # 1-based rank among the first-stage candidates
    is_gold: bool

    @property
    def content(self) -> str:
        return f"{self.title}: {self.text}" if self.title else self.text


@dataclass
class VariantAnswer:
    variant: str
    text: str
    token_ids: list[int]
    span: Span  # token range of the answer after the prompt
    seconds: float
    label: str = ""  # human label of the variant (e.g. "QK-Att LoRA r85")
    metrics: dict[str, float | None] = field(default_factory=dict)  # vs the gold answer, when there is one
    # The LLMEval judge's reading against the gold answer: {"judge": name, "score", "mass"} (after generation)
    verdict: dict[str, Any] | None = None
    # The groundedness checker's reading against the prompt's passages (evaluation/groundedness.ground_trace):
    # {"checker", "weak", "claims": [{"claim", "support" (per passage), "missing" (facts each passage lacks), "cite"}],
    #  "metrics", "error"}
    grounding: dict[str, Any] | None = None


@dataclass
class RagTrace:
    query: str
    domain: str
    setting: str  # retrieved | oracle | noisy
    retriever: str
    reranker: str
    passages: list[RetrievedPassage]
    prompt: str
    prompt_ids: list[int]
    spans: list[Span]
    query_id: str | None = None
    gold_answers: list[str] = field(default_factory=list)
    gold_ids: list[str] = field(default_factory=list)
    answer_type: str | None = None
    answers: dict[str, VariantAnswer] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    config: dict[str, Any] = field(default_factory=dict)  # models, fingerprints, k, decoding settings

    def span(self, name: str) -> Span:
        for s in self.spans:
            if s.name == name:
                return s
        raise KeyError(f"no span '{name}'; spans: {[s.name for s in self.spans]}")

    @property
    def gold_in_prompt(self) -> list[int]:
        """1-based prompt positions of gold passages."""
        return [p.rank for p in self.passages if p.is_gold]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=indent)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RagTrace:
        d = dict(d)
        d["passages"] = [RetrievedPassage(**p) for p in d["passages"]]
        d["spans"] = [Span(**s) for s in d["spans"]]
        d["answers"] = {k: VariantAnswer(**{**a, "span": Span(**a["span"])}) for k, a in d["answers"].items()}
        return cls(**d)

    @classmethod
    def from_json(cls, text: str) -> RagTrace:
        return cls.from_dict(json.loads(text))
