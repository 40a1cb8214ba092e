"""First-stage retrievers, registered by name: splade (the paper's first stage), dense, bm25.

Each returns passage indices and scores for a query. SPLADE and dense indexes are looked up first in
the shipped assets, then in the cache, and built (with a progress bar) only when neither matches the
corpus and encoder.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol

import numpy as np

from mdrag.config import ASSETS_DIR, MINILM, SPLADE, cache_dir
from mdrag.data.benchmark import Domain
from mdrag.errors import UnknownNameError
from mdrag.hashing import folder_fingerprint
from mdrag.retrieval.encoders import Encoders
from mdrag.retrieval.index import DenseIndex, IndexCard, SparseIndex, read_card, top_k, write_card


class Retriever(Protocol):
    name: str
    label: str

    def search(self, query: str, k: int) -> tuple[np.ndarray, np.ndarray]: ...


def index_folders(domain: Domain) -> list[Path]:
    """Where an index may already be: shipped assets first, then the user's cache."""
    return [ASSETS_DIR / "indexes" / domain.name, cache_dir() / "indexes" / domain.name]


def _card(domain: Domain, kind: str, encoder_dir: Path) -> IndexCard:
    return IndexCard(kind, domain.fingerprint(), folder_fingerprint(encoder_dir), len(domain.passages))


def load_existing(domain: Domain, kind: str, encoder_dir: Path, ext: str, loader):
    """A saved index matching this corpus and encoder, or None (missing, stale or corrupt)."""
    want = _card(domain, kind, encoder_dir)
    for folder in index_folders(domain):
        card = read_card(folder, kind)
        if card and card.matches(want) and (folder / f"{kind}{ext}").exists():
            try:
                return loader(folder / f"{kind}{ext}")
            except (OSError, ValueError, KeyError):
                pass  # corrupt file: the caller rebuilds or goes without
    return None


def _load_or_build(domain: Domain, kind: str, encoder_dir: Path, ext: str, loader, builder, out: Path | None):
    """The saved index, or one built once: under a lock beside it (two sessions or processes asking at once
    build it once; the second loads the first's), written to a temporary file and renamed into place, its card
    last, so a reader never sees half an index or a card naming a file that is not there yet."""
    import os

    from mdrag.cache_files import file_lock

    want = _card(domain, kind, encoder_dir)
    index = load_existing(domain, kind, encoder_dir, ext, loader)
    if index is not None:
        return index
    folder = out or index_folders(domain)[1]
    folder.mkdir(parents=True, exist_ok=True)
    with file_lock(folder / f".{kind}.lock"):
        index = load_existing(domain, kind, encoder_dir, ext, loader)  # built by another while we waited
        if index is not None:
            return index
        index = builder()
        tmp = folder / f".{kind}.tmp-{os.getpid()}{ext}"
        try:
            index.save(tmp)
            os.replace(tmp, folder / f"{kind}{ext}")
        finally:
            tmp.unlink(missing_ok=True)
        write_card(folder, want)
    return index


@dataclass
class _IndexedRetriever:
    """A retriever over a saved index of the domain's passages (loaded, or built once and saved)."""

    domain: Domain
    model_dir: Path | None = None
    out: Path | None = None  # where to write a newly built index (default: the cache)
    name: str = ""
    label: str = ""
    # the encoders this retriever shares (the engine passes its own; alone it loads its own)
    encoders: Encoders = field(default_factory=Encoders, repr=False)
    # Class attributes set by each subclass. ClassVar, not a field: an annotated default would become a
    # dataclass field whose base default (SparseIndex) silently wins over the subclass's plain attribute.
    packaged: ClassVar = SPLADE
    ext: ClassVar[str] = ""
    index_cls: ClassVar[type] = SparseIndex

    def __post_init__(self) -> None:
        texts = [p.content for p in self.domain.passages]
        kind = self.name.replace(":", "@")  # the index file's name
        self.index = _load_or_build(self.domain, kind, self.model_dir or self.packaged.path(), self.ext,
                                    self.index_cls.load, lambda: self.index_cls(self.encode_passages(texts)),
                                    self.out)

    def encode_passages(self, texts: list[str]):
        raise NotImplementedError

    def encode_query(self, query: str):
        raise NotImplementedError

    def search(self, query: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.index.search(self.encode_query(query), k)


@dataclass
class SpladeRetriever(_IndexedRetriever):
    name: str = "splade"
    label: str = "SPLADE (packaged 4.4M-parameter model)"
    packaged = SPLADE
    ext = ".npz"
    index_cls = SparseIndex

    def encode_passages(self, texts: list[str]):
        return self.encoders.splade_documents(texts, self.model_dir, f"SPLADE index {self.domain.name}")

    def encode_query(self, query: str):
        return self.encoders.splade_queries([query], self.model_dir)  # (1, vocab)


@dataclass
class DenseRetriever(_IndexedRetriever):
    name: str = "dense"
    label: str = "dense all-MiniLM-L6-v2 (cosine)"
    packaged = MINILM
    ext = ".npy"
    index_cls = DenseIndex

    query_prefix: str = ""  # an adapted encoder's instruction (from its card)

    def encode_passages(self, texts: list[str]):
        return self.encoders.minilm_embed(texts, self.model_dir, progress=True)  # (n, 384)

    def encode_query(self, query: str):
        return self.encoders.minilm_embed([self.query_prefix + query], self.model_dir)[0]  # (384,)


def adapted_dense(source: str | None) -> Callable[..., DenseRetriever]:
    """The dense retriever with the encoder fine-tuned on `source` (a domain, or 'a+b' for a multi-task
    run; None: the domain being searched). Its passage index is built once into the cache."""

    def make(domain: Domain, encoders: Encoders | None = None) -> DenseRetriever:
        from mdrag.retrieval.adapted import find_adapted, instruction_for, load_card

        folder = find_adapted(source or domain.name)
        card = load_card(folder)
        prefix = card["instructions"].get(domain.name)
        if prefix is None:  # searched domain outside the training set (forgetting check): same template
            prefix = instruction_for(domain.name, card["settings"]["instruction"])
        return DenseRetriever(domain, model_dir=folder, name=f"dense-ft:{source or domain.name}",
                              label=f"dense MiniLM fine-tuned on {source or domain.name}", query_prefix=prefix,
                              encoders=encoders or Encoders())

    return make


def saved_dense_embeddings(domain: Domain) -> np.ndarray | None:
    """The packaged MiniLM's float32 embeddings of the domain's passages if an index is already saved
    (shipped or cached), else None: never builds one."""
    index = load_existing(domain, DenseRetriever.name, MINILM.path(), DenseRetriever.ext, DenseIndex.load)
    return index.embeddings if index is not None and index.exact else None  # (n_passages, 384)


@dataclass
class BM25Retriever:
    """bm25s over the same passage contents (English stopwords, no stemming); built in memory (~1 s)."""

    domain: Domain
    name: str = "bm25"
    label: str = "BM25 (bm25s)"
    encoders: Encoders | None = field(default=None, repr=False)  # unused (no neural encoder); entries built alike

    def __post_init__(self) -> None:
        import bm25s

        self._bm25s = bm25s
        self.model = bm25s.BM25()
        self.model.index(bm25s.tokenize([p.content for p in self.domain.passages], stopwords="en",
                                        show_progress=False), show_progress=False)

    def search(self, query: str, k: int) -> tuple[np.ndarray, np.ndarray]:
        tokens = self._bm25s.tokenize([query], stopwords="en", return_ids=False, show_progress=False)[0]
        known = [t for t in tokens if t in self.model.vocab_dict]
        scores = self.model.get_scores(known) if known else np.zeros(len(self.domain.passages), np.float32)
        return top_k(np.asarray(scores, dtype=np.float32), k)


# each entry: (domain, encoders=...) -> a retriever
RETRIEVERS: dict[str, Callable[..., Retriever]] = {
    "splade": SpladeRetriever,
    "dense": DenseRetriever,
    "bm25": BM25Retriever,
}


RETRIEVERS["dense-ft"] = adapted_dense(None)  # each domain's own fine-tuned encoder
ADAPTED_PREFIX = "dense-ft:"  # dense-ft:<domain>[+<domain>...] = the encoder trained there, on any domain


def retriever_names() -> list[str]:
    """Registered retrievers plus one dense-ft:<source> per adapted encoder found (cache or shipped)."""
    from mdrag.retrieval.adapted import available_adapted

    return list(RETRIEVERS) + [ADAPTED_PREFIX + s for s in available_adapted()]


def check_retriever_name(name: str) -> str:
    """`name` if it names a retriever (a registered one, or an adapted encoder dense-ft:<source>)."""
    if name in RETRIEVERS or (name.startswith(ADAPTED_PREFIX) and name != ADAPTED_PREFIX):
        return name
    raise UnknownNameError(f"Unknown retriever '{name}'. Known: {', '.join(RETRIEVERS)}, {ADAPTED_PREFIX}<domain>")


def check_retriever_available(name: str, domain: str) -> None:
    """Raise MissingModelError now if `name` needs an adapted encoder that is neither trained here nor
    shipped, so a grid fails before its first cell rather than when it reaches that retriever."""
    check_retriever_name(name)
    if name == "dense-ft" or name.startswith(ADAPTED_PREFIX):
        from mdrag.retrieval.adapted import find_adapted, load_card

        load_card(find_adapted(name.removeprefix(ADAPTED_PREFIX) if name != "dense-ft" else domain))


def make_retriever(name: str, domain: Domain, encoders: Encoders | None = None) -> Retriever:
    """A new retriever over `domain` (its index loaded or built; the engine keeps one per name and corpus),
    encoding with `encoders` (the engine's; None: its own)."""
    check_retriever_name(name)
    make = adapted_dense(name.removeprefix(ADAPTED_PREFIX)) if name.startswith(ADAPTED_PREFIX) else RETRIEVERS[name]
    return make(domain, encoders=encoders or Encoders())
