"""Indexes over one domain's corpus.

SparseIndex is a real inverted index: a scipy CSC matrix (passages x vocabulary) whose columns are the
posting lists of each vocabulary term. A query touches only the columns of its non-zero terms.
Stored compactly (uint16 term ids: vocab 30,522 < 65,536; fp16 weights) with a JSON card naming the
corpus fingerprint and the encoder hash, so an index is never used with another corpus or model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and scores of the k best, best first; ties broken by index so results are deterministic."""
    k = min(k, scores.shape[0])
    if k <= 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    part = np.argpartition(-scores, k - 1)[:k] if k < scores.shape[0] else np.arange(scores.shape[0])
    order = np.lexsort((part, -scores[part]))
    idx = part[order]
    return idx, scores[idx]


@dataclass
class IndexCard:
    kind: str  # splade | dense
    corpus: str  # Domain.fingerprint()
    encoder: str  # encoder weights fingerprint
    n_passages: int

    def matches(self, other: IndexCard) -> bool:
        return (self.kind, self.corpus, self.encoder, self.n_passages) == (
            other.kind, other.corpus, other.encoder, other.n_passages)


def read_card(folder: Path, kind: str) -> IndexCard | None:
    path = folder / f"{kind}.json"
    if not path.exists():
        return None
    try:
        return IndexCard(**json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError):
        return None  # a corrupt card means: rebuild


def write_card(folder: Path, card: IndexCard) -> None:
    """Whole or not at all: a temporary file renamed into place."""
    import os

    path = folder / f"{card.kind}.json"
    tmp = folder / f".{card.kind}.json.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(card.__dict__, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


class SparseIndex:
    def __init__(self, matrix: sp.spmatrix):
        self.matrix = sp.csc_matrix(matrix, dtype=np.float32)  # (n_passages, vocab), columns = postings

    @property
    def n_passages(self) -> int:
        return self.matrix.shape[0]

    def scores(self, query: sp.spmatrix) -> np.ndarray:
        """Dot product of a (1, vocab) sparse query with every passage, via the query terms' postings."""
        q = sp.csr_matrix(query)
        terms, weights = q.indices, q.data.astype(np.float32)
        if terms.size == 0:
            return np.zeros(self.n_passages, dtype=np.float32)
        return np.asarray(self.matrix[:, terms] @ weights).ravel()  # (n_passages,)

    def search(self, query: sp.spmatrix, k: int) -> tuple[np.ndarray, np.ndarray]:
        return top_k(self.scores(query), k)

    def save(self, path: Path) -> None:
        m = sp.csr_matrix(self.matrix)
        if m.shape[1] > np.iinfo(np.uint16).max + 1:
            raise ValueError("vocabulary too large for uint16 term ids")
        np.savez_compressed(path, indptr=m.indptr.astype(np.int64), indices=m.indices.astype(np.uint16),
                            data=m.data.astype(np.float16), shape=np.array(m.shape))

    @classmethod
    def load(cls, path: Path) -> SparseIndex:
        z = np.load(path)
        m = sp.csr_matrix((z["data"].astype(np.float32), z["indices"].astype(np.int32), z["indptr"]),
                          shape=tuple(z["shape"]))
        return cls(m)


class DenseIndex:
    """Exact inner-product search over L2-normalised embeddings (cosine)."""

    def __init__(self, embeddings: np.ndarray, exact: bool = True):
        self.embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)  # (n_passages, dim)
        # Saved in float32: the MiniLM rescorer reuses these rows instead of re-encoding candidates, and
        # must give the scores re-encoding gives (an fp16 copy moves them by ~1e-3, enough to swap ties).
        self.exact = exact

    @property
    def n_passages(self) -> int:
        return self.embeddings.shape[0]

    def scores(self, query: np.ndarray) -> np.ndarray:
        return self.embeddings @ query.astype(np.float32).ravel()  # (n_passages,)

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return top_k(self.scores(query), k)

    def save(self, path: Path) -> None:
        np.save(path, self.embeddings)

    @classmethod
    def load(cls, path: Path) -> DenseIndex:
        stored = np.load(path)
        return cls(stored, exact=stored.dtype == np.float32)  # older caches hold fp16
