"""First-stage retrievers with the real packaged encoders on the tiny corpus, and the index cache rules."""

import json

import pytest

from mdrag.config import cache_dir
from mdrag.errors import UnknownNameError
from mdrag.retrieval.encoders import Encoders
from mdrag.retrieval.retrievers import BM25Retriever, DenseRetriever, SpladeRetriever, make_retriever


@pytest.mark.parametrize("cls", [SpladeRetriever, DenseRetriever, BM25Retriever])
@pytest.mark.parametrize("query,gold", [
    ("who got the first nobel prize in physics", "p0"),
    ("who created the python programming language", "p4"),
    ("capital city of france", "p6"),
])
def test_each_retriever_ranks_the_obvious_passage_first(tiny_domain, cls, query, gold):
    r = cls(tiny_domain)
    idx, scores = r.search(query, 50)
    assert len(idx) == len(tiny_domain.passages)  # k larger than the corpus: everything, ranked
    assert tiny_domain.passages[idx[0]].id == gold
    assert list(scores) == sorted(scores, reverse=True)


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MDRAG_CACHE", str(tmp_path / "cache"))


def test_index_is_built_once_then_reused_and_rebuilt_when_its_card_is_corrupt(tiny_domain, own_cache, monkeypatch):
    calls = []
    real = Encoders.splade_documents
    monkeypatch.setattr(Encoders, "splade_documents", lambda *a, **k: calls.append(1) or real(*a, **k))
    SpladeRetriever(tiny_domain)
    SpladeRetriever(tiny_domain)
    assert len(calls) == 1
    card = cache_dir() / "indexes" / "tiny" / "splade.json"
    card.write_text("{not json")
    SpladeRetriever(tiny_domain)
    assert len(calls) == 2 and json.loads(card.read_text())["n_passages"] == 7


def test_an_index_of_another_corpus_is_never_used(tiny_domain, own_cache, monkeypatch):
    SpladeRetriever(tiny_domain)
    card = cache_dir() / "indexes" / "tiny" / "splade.json"
    data = json.loads(card.read_text())
    card.write_text(json.dumps({**data, "corpus": "0" * 16}))
    calls = []
    real = Encoders.splade_documents
    monkeypatch.setattr(Encoders, "splade_documents", lambda *a, **k: calls.append(1) or real(*a, **k))
    SpladeRetriever(tiny_domain)
    assert calls == [1]


def test_bm25_handles_queries_with_no_known_terms(tiny_domain):
    idx, scores = BM25Retriever(tiny_domain).search("zzzz qqqq", 3)
    assert len(idx) == 3 and not scores.any()


def test_unknown_retriever_lists_known(tiny_domain):
    with pytest.raises(UnknownNameError, match="splade, dense, bm25"):
        make_retriever("colbert", tiny_domain)


def test_an_engines_retrievers_and_reranker_share_its_encoders_and_two_engines_share_none(tiny_domain, own_cache,
                                                                                          make_engine):
    one, other = make_engine(), make_engine()
    dense, reranker = one.retriever("dense", tiny_domain), one.reranker("minilm")
    assert dense.encoders is one.encoders and reranker.encoders is one.encoders
    dense.search("who created python", 2)
    reranker.prepare(tiny_domain)
    reranker.score("who created python", ["A passage of no corpus."])
    assert one.encoders.loaded() == [("minilm", "")]  # loaded once, for both
    assert other.reranker("minilm").encoders is other.encoders is not one.encoders
    assert other.encoders.loaded() == []
