"""Rerankers over the first-stage candidates (paper: 50 candidates -> top 5).

The paper reranks with a DeBERTa-v3 cross-encoder (naver/trecdl22-crossencoder-debertav3). No trained
cross-encoder is installable here, so the default rescoring uses the packaged MiniLM bi-encoder's
cosine similarity and says so in its label. Any local cross-encoder directory
(AutoModelForSequenceClassification with one logit) plugs into the same interface.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from mdrag.data.benchmark import Domain
from mdrag.errors import MissingModelError, UnknownNameError
from mdrag.retrieval.encoders import Encoders


class Reranker(Protocol):
    name: str
    label: str

    def prepare(self, domain: Domain) -> None:
        """Load whatever makes scoring this domain's passages fast (called before each rerank; cheap
        after the first call)."""

    def score(self, query: str, texts: list[str]) -> np.ndarray: ...


class MiniLMRescorer:
    name = "minilm"
    label = "MiniLM-L6 cosine rescoring (stand-in for the paper's DeBERTa-v3 cross-encoder)"

    def __init__(self, encoders: Encoders | None = None) -> None:
        self.encoders = encoders or Encoders()  # the engine's (shared with its dense retrievers), or its own
        # corpus fingerprint -> (passage content -> row of its saved MiniLM embedding, the embeddings (n, 384))
        self._known: dict[str, tuple[dict[str, int], np.ndarray]] = {}
        self._lock = threading.Lock()

    def prepare(self, domain: Domain) -> None:
        """Reuse the saved dense index's passage embeddings (same encoder, float32) instead of encoding
        50 candidates per query (~3 s on 2 cores -> one query encoding, ~10 ms)."""
        from mdrag.retrieval.retrievers import saved_dense_embeddings

        key = domain.fingerprint()
        if key not in self._known:
            emb = saved_dense_embeddings(domain)
            rows = {p.content: i for i, p in enumerate(domain.passages)} if emb is not None else {}
            # A new mapping swapped in whole, never a dict changed in place: another session's `score` may be
            # iterating the current one (a "dictionary changed size during iteration" race otherwise).
            with self._lock:
                self._known = {**self._known, key: (rows, emb if emb is not None else np.zeros((0, 384),
                                                                                           np.float32))}

    def score(self, query: str, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros(0, dtype=np.float32)
        q = self.encoders.minilm_embed([query])[0]  # (384,)
        emb = np.zeros((len(texts), q.shape[0]), dtype=np.float32)  # (n, 384)
        missing = []
        known = list(self._known.values())  # this call's snapshot: prepare() replaces the mapping, never edits it
        for i, text in enumerate(texts):
            hit = next(((rows, m) for rows, m in known if text in rows), None)
            if hit is None:
                missing.append(i)
            else:
                emb[i] = hit[1][hit[0][text]]
        if missing:  # texts of no prepared corpus (a free passage, a user's document) are encoded now
            emb[missing] = self.encoders.minilm_embed([texts[i] for i in missing])
        return emb @ q  # (n,)


@dataclass(frozen=True)
class NoReranker:
    """Keep the first-stage order (scores = 0, so the stable sort keeps it)."""

    encoders: Encoders | None = None  # unused: every registry entry is built alike
    name: str = "none"
    label: str = "no reranking (first-stage order)"

    def prepare(self, domain: Domain) -> None:
        pass

    def score(self, query: str, texts: list[str]) -> np.ndarray:
        return np.zeros(len(texts), dtype=np.float32)


class CrossEncoderReranker:
    def __init__(self, path: Path):
        from sentence_transformers import CrossEncoder

        self.path = Path(path)
        self.name = f"cross-encoder:{self.path.name}"
        self.label = f"cross-encoder {self.path.name}"
        self.model = CrossEncoder(str(self.path), num_labels=1, device="cpu")

    def prepare(self, domain: Domain) -> None:
        pass  # a cross-encoder reads query and passage together: nothing to precompute

    def score(self, query: str, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros(0, dtype=np.float32)
        return np.asarray(self.model.predict([(query, t) for t in texts], batch_size=16,
                                             show_progress_bar=False), dtype=np.float32).ravel()


RERANKERS = {"minilm": MiniLMRescorer, "none": NoReranker}


def reranker_label(name: str) -> str:
    """A registered reranker's label without building it; a cross-encoder directory's name."""
    return RERANKERS[name].label if name in RERANKERS else f"cross-encoder {Path(name).name}"


def make_reranker(name: str, encoders: Encoders | None = None) -> Reranker:
    """A new reranker: a registered one by name, or a cross-encoder from a local directory path (the engine
    keeps one per name and passes its encoders)."""
    if name in RERANKERS:
        return RERANKERS[name](encoders)
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
