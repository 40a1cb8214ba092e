"""Rerankers over the first-stage candidates (paper: 50 candidates -> top 5).

The paper reranks with a DeBERTa-v3 cross-encoder (naver/trecdl22-crossencoder-debertav3). No trained
cross-encoder is installable here, so the default rescoring uses the packaged MiniLM bi-encoder's
cosine similarity and says so in its label. Any local cross-encoder directory
(AutoModelForSequenceClassification with one logit) plugs into the same interface.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Protocol

import numpy as np

from mdrag.errors import MissingModelError, UnknownNameError
from mdrag.retrieval import encoders


class Reranker(Protocol):
    name: str
    label: str

    def score(self, query: str, texts: list[str]) -> np.ndarray: ...


@dataclass(frozen=True)
class MiniLMRescorer:
    name: str = "minilm"
    label: str = "MiniLM-L6 cosine rescoring (stand-in for the paper's DeBERTa-v3 cross-encoder)"

    def score(self, query: str, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros(0, dtype=np.float32)
        q = encoders.minilm_embed([query])[0]  # (384,)
        return encoders.minilm_embed(texts) @ q  # (n,)


@dataclass(frozen=True)
class NoReranker:
    """Keep the first-stage order (scores = 0, so the stable sort keeps it)."""

    name: str = "none"
    label: str = "no reranking (first-stage order)"

    def score(self, query: str, texts: list[str]) -> np.ndarray:
        return np.zeros(len(texts), dtype=np.float32)


class CrossEncoderReranker:
    def __init__(self, path: Path):
        from sentence_transformers import CrossEncoder

        self.path = Path(path)
        self.name = f"cross-encoder:{self.path.name}"
        self.label = f"cross-encoder {self.path.name}"
        self.model = CrossEncoder(str(self.path), num_labels=1, device="cpu")

    def score(self, query: str, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros(0, dtype=np.float32)
        return np.asarray(self.model.predict([(query, t) for t in texts], batch_size=16,
                                             show_progress_bar=False), dtype=np.float32).ravel()


RERANKERS = {"minilm": MiniLMRescorer, "none": NoReranker}


@cache
def get_reranker(name: str) -> Reranker:
    """A registered reranker by name, or a cross-encoder from a local directory path."""
    if name in RERANKERS:
        return RERANKERS[name]()
    if Path(name).is_dir():
        if not (Path(name) / "config.json").exists():
            raise MissingModelError(f"'{name}' has no config.json: not a Hugging Face model directory")
        return CrossEncoderReranker(Path(name))
    raise UnknownNameError(
        f"Unknown reranker '{name}'. Known: {', '.join(RERANKERS)}, or a local cross-encoder directory."
    )


def rerank_order(scores: np.ndarray) -> np.ndarray:
    """Indices by descending score; a stable sort keeps first-stage order among ties."""
    return np.argsort(-scores, kind="stable")
