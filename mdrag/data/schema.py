"""Records of the normalised benchmark. One schema for every source, so retrieval, generation and
evaluation never look at where a question came from."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

AnswerType = Literal["short", "long", "yes-no", "unanswerable"]
Split = Literal["train", "dev", "test"]
ANSWER_TYPES: tuple[str, ...] = ("short", "long", "yes-no", "unanswerable")
SPLITS: tuple[str, ...] = ("train", "dev", "test")


@dataclass(frozen=True)
class Passage:
    id: str
    title: str
    text: str
    doc_id: str  # the source document the chunk was cut from

    @property
    def content(self) -> str:
        """What retrieval encodes and the generator reads: the title prefixed (paper, chunking)."""
        return f"{self.title}: {self.text}" if self.title else self.text

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Query:
    id: str
    text: str
    answers: list[str]  # acceptable gold answers (alternatives); empty for unanswerable
    gold_ids: list[str]  # gold passage ids
    answer_type: str  # one of ANSWER_TYPES
    split: str  # one of SPLITS
    long_answer: str = ""  # a long reference answer where the source has one
    meta: dict[str, Any] = field(default_factory=dict)  # source-specific fields (scale, derivation...)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
