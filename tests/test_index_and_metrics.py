import math

import numpy as np
import pytest
import scipy.sparse as sp

from mdrag.evaluation.retrieval_metrics import evaluate_rankings, mrr_at_k, ndcg_at_k, recall_at_k
from mdrag.retrieval.index import DenseIndex, SparseIndex, top_k


def test_sparse_index_matches_brute_force_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    dense = rng.random((200, 3000)) * (rng.random((200, 3000)) < 0.01)  # (passages, vocab), ~1% terms
    index = SparseIndex(sp.csr_matrix(dense))
    q = sp.csr_matrix(rng.random((1, 3000)) * (rng.random((1, 3000)) < 0.02))
    expected = dense @ q.toarray().ravel()
    np.testing.assert_allclose(index.scores(q), expected, rtol=1e-5)
    idx, _scores = index.search(q, 10)
    assert list(idx) == list(np.argsort(-expected, kind="stable")[:10])
    index.save(tmp_path / "i.npz")
    loaded = SparseIndex.load(tmp_path / "i.npz")
    np.testing.assert_allclose(loaded.scores(q), expected, rtol=2e-3)  # fp16 storage


def test_empty_query_scores_zero():
    index = SparseIndex(sp.identity(5, format="csr"))
    assert not index.scores(sp.csr_matrix((1, 5))).any()


def test_top_k_breaks_ties_by_index_and_handles_small_corpora():
    idx, _ = top_k(np.array([1.0, 3.0, 3.0, 0.0, 3.0]), 3)
    assert list(idx) == [1, 2, 4]
    assert list(top_k(np.array([2.0, 1.0]), 10)[0]) == [0, 1]
    assert top_k(np.array([]), 5)[0].size == 0


def test_dense_index_is_cosine_search(tmp_path):
    emb = np.eye(4, dtype=np.float32)
    index = DenseIndex(emb)
    assert list(index.search(np.array([0, 0.9, 0.1, 0]), 2)[0]) == [1, 2]
    index.save(tmp_path / "d.npy")
    assert list(DenseIndex.load(tmp_path / "d.npy").search(np.array([0, 0, 0, 1.0]), 1)[0]) == [3]


@pytest.mark.parametrize(
    "ranked,gold,ndcg,mrr,r5",
    [
        (["a", "b", "c"], {"a"}, 1.0, 1.0, 1.0),
        (["x", "a", "c"], {"a"}, 1 / math.log2(3), 0.5, 1.0),
        (["x", "y", "a", "z", "b"], {"a", "b"}, (1 / 2 + 1 / math.log2(6)) / (1 + 1 / math.log2(3)), 1 / 3, 1.0),
        (["x", "y"], {"a", "b"}, 0.0, 0.0, 0.0),
        (["a", "x", "y", "z", "w", "b"], {"a", "b"}, None, 1.0, 0.5),
    ],
)
def test_retrieval_metrics_against_hand_computed_values(ranked, gold, ndcg, mrr, r5):
    if ndcg is not None:
        assert ndcg_at_k(ranked, gold, 10) == pytest.approx(ndcg)
    assert mrr_at_k(ranked, gold, 10) == pytest.approx(mrr)
    assert recall_at_k(ranked, gold, 5) == pytest.approx(r5)


def test_mean_over_queries_skips_queries_without_gold():
    res = evaluate_rankings([(["a"], {"a"}), (["b"], {"a"}), (["c"], set())])
    assert res["MRR@10"] == pytest.approx(0.5) and res["Recall@5"] == pytest.approx(0.5)
