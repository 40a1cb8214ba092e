"""Retriever adaptation on a tiny random encoder and a toy corpus: the loss goes down, mined negatives are
never gold, and the before/after comparison equals an independent recomputation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import registered_domain

pytestmark = pytest.mark.slow

COUNTRIES = [("France", "Paris"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Germany", "Berlin"),
             ("Japan", "Tokyo"), ("Egypt", "Cairo"), ("Peru", "Lima"), ("Kenya", "Nairobi"),
             ("Norway", "Oslo"), ("Chile", "Santiago"), ("Cuba", "Havana"), ("Iran", "Tehran"),
             ("Ghana", "Accra"), ("Nepal", "Kathmandu"), ("Poland", "Warsaw"), ("Greece", "Athens")]


@pytest.fixture
def toy_domain(tmp_path, monkeypatch):
    """16 countries, two gold passages per question (a fact and a near-copy), 12 train / 4 test questions."""
    monkeypatch.setenv("MDRAG_CACHE", str(tmp_path / "cache"))
    passages, queries = [], []
    for i, (country, city) in enumerate(COUNTRIES):
        passages += [{"id": f"c{i}a", "title": country, "text": f"The capital of {country} is {city}."},
                     {"id": f"c{i}b", "title": country, "text": f"{city} is the capital city of {country}."},
                     {"id": f"c{i}x", "title": city, "text": f"{city} has a river, old streets and many museums."}]
        queries.append({"id": f"q{i}", "text": f"what is the capital of {country}", "answers": [city],
                        "gold_ids": [f"c{i}a", f"c{i}b"], "split": "train" if i < 12 else "test"})
    with registered_domain(tmp_path, "toy", queries, passages, "general") as domain:
        yield domain


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory):
    """A 1-layer random BERT with mean pooling + normalisation, in sentence-transformers layout."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from transformers import AutoTokenizer, BertConfig, BertModel

    from mdrag.config import SPLADE

    folder = tmp_path_factory.mktemp("tiny-encoder")
    hf = folder / "hf"
    AutoTokenizer.from_pretrained(SPLADE.path()).save_pretrained(hf)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64)).save_pretrained(hf)
    word = Transformer(str(hf), max_seq_length=64)
    model = SentenceTransformer(modules=[word, Pooling(word.get_embedding_dimension(), "mean"), Normalize()],
                                device="cpu")
    model.save(str(folder / "st"))
    return folder / "st"


def _mnrl(model, pairs, scale: float = 20.0) -> float:
    """Mean cross-entropy of each anchor against all positives (in-batch negatives), computed with numpy."""
    from sentence_transformers import SentenceTransformer

    if not isinstance(model, SentenceTransformer):
        model = SentenceTransformer(str(model), device="cpu", model_kwargs={"dtype": "float32"})
    a = model.encode([p["anchor"] for p in pairs], normalize_embeddings=True)  # (n, d)
    b = model.encode([p["positive"] for p in pairs], normalize_embeddings=True)  # (n, d)
    logits = scale * a @ b.T
    logits -= logits.max(1, keepdims=True)
    return float(-np.mean(np.diag(logits) - np.log(np.exp(logits).sum(1))))


def test_mined_negatives_are_never_gold(toy_domain, tiny_encoder):
    from sentence_transformers import SentenceTransformer

    from mdrag.training.retriever import RetrieverSettings, training_pairs, with_hard_negatives

    pairs = training_pairs(toy_domain, "")
    assert len(pairs) == 24  # two gold passages per training question
    model = SentenceTransformer(str(tiny_encoder), device="cpu")
    rows = with_hard_negatives(pairs, toy_domain, model, RetrieverSettings(hard_negatives=2, mine_range=10))
    assert rows, "mining kept nothing"
    gold_of = {p["anchor"]: set(p["gold"]) for p in pairs}
    for row in rows:
        negatives = [row["negative_1"], row["negative_2"]]
        assert not set(negatives) & gold_of[row["anchor"]] and row["positive"] in gold_of[row["anchor"]]
    # the near-copy gold passage is what an encoder ranks highest: without the filter it would be mined
    contents = [p.content for p in toy_domain.passages]
    emb = model.encode(contents, normalize_embeddings=True)
    top = contents[int(np.argsort(-(emb @ emb[0]))[1])]
    assert top in gold_of[pairs[0]["anchor"]]


@pytest.mark.parametrize("lora_rank", [0, 8], ids=["all-weights", "lora"])
def test_training_lowers_the_loss_and_the_comparison_is_right(toy_domain, tiny_encoder, lora_rank):
    from sentence_transformers import SentenceTransformer

    from mdrag.evaluation.retrieval_metrics import compare_retrievers
    from mdrag.retrieval.encoders import load_minilm
    from mdrag.retrieval.retrievers import ADAPTED_PREFIX
    from mdrag.training.retriever import RetrieverSettings, adapted_dir, train_retriever, training_pairs

    settings = RetrieverSettings(batch_size=8, learning_rate=3e-3, max_steps=60, hard_negatives=1, mine_range=10,
                                 save_steps=10, lora_rank=lora_rank)
    card = train_retriever(["toy"], settings, base=tiny_encoder)
    folder = adapted_dir("toy")
    weights = folder / ("adapter_model.safetensors" if lora_rank else "model.safetensors")
    assert weights.exists() and card["steps"] == 60
    full_size = (tiny_encoder / "model.safetensors").stat().st_size
    if lora_rank:  # only the adapter is saved (fp16), and it names no path of this machine as its base
        assert not (folder / "model.safetensors").exists() and weights.stat().st_size < full_size / 4
        assert "/" not in (folder / "adapter_config.json").read_text().split('"base_model_name_or_path"')[1][:40]
        # a second call finds the finished run's checkpoint: resumes, trains nothing more, same card
        again = train_retriever(["toy"], settings, base=tiny_encoder)
        assert again["steps"] == 60 and again["resumed_from"] == "checkpoint-60"
    prefix = card["instructions"]["toy"]
    assert prefix.startswith("Represent this general-knowledge question")
    pairs = training_pairs(toy_domain, prefix)[::2]  # one pair per question: the others' golds are negatives
    adapted = load_minilm(folder)  # how retrieval loads it (a LoRA goes onto its base)
    assert card["final_loss"] < card["first_loss"]
    if lora_rank:
        # A LoRA on a random 1-layer, 32-wide encoder moves the embeddings but does not reliably lower the
        # held-out loss (the word embeddings it cannot touch dominate); the real gain is measured on MiniLM
        # (README). Here: the saved adapter is the trained one, not the base.
        assert abs(_mnrl(adapted, pairs) - _mnrl(tiny_encoder, pairs)) > 1e-3
    else:
        assert _mnrl(adapted, pairs) < _mnrl(tiny_encoder, pairs) - 0.1

    rows = compare_retrievers("dense", ADAPTED_PREFIX + "toy", ["toy"], ["toy"], split="test")
    got = {r["metric"]: r for r in rows}
    # independent recomputation: encode, rank by cosine, score by the textbook formulas
    tests = toy_domain.split("test")
    ids = [p.id for p in toy_domain.passages]
    contents = [p.content for p in toy_domain.passages]
    from mdrag.config import MINILM

    before = SentenceTransformer(str(MINILM.path()), device="cpu", model_kwargs={"dtype": "float32"})
    per_query = {}
    for which, model, q_prefix in (("before", before, ""), ("after", adapted, prefix)):
        p_emb = model.encode(contents, normalize_embeddings=True)
        q_emb = model.encode([q_prefix + q.text for q in tests], normalize_embeddings=True)
        ndcg, mrr = [], []
        for q, e in zip(tests, q_emb, strict=True):
            ranked = [ids[i] for i in np.argsort(-(p_emb @ e), kind="stable")[:10]]
            gains = [1.0 if pid in q.gold_ids else 0.0 for pid in ranked]
            ideal = sum(1 / math.log2(r + 2) for r in range(min(len(q.gold_ids), 10)))
            ndcg.append(sum(g / math.log2(r + 2) for r, g in enumerate(gains)) / ideal)
            mrr.append(next((1 / (r + 1) for r, g in enumerate(gains) if g), 0.0))
        assert got["nDCG@10"][which] == pytest.approx(np.mean(ndcg), abs=1e-6)
        assert got["MRR@10"][which] == pytest.approx(np.mean(mrr), abs=1e-6)
        per_query[which] = np.array(ndcg)
    assert got["nDCG@10"]["delta"] == pytest.approx(got["nDCG@10"]["after"] - got["nDCG@10"]["before"])
    # the delta's CI is a paired bootstrap over the same questions' differences
    from mdrag.evaluation.stats import bootstrap_ci

    _, low, high = bootstrap_ci((per_query["after"] - per_query["before"]).tolist())
    assert (got["nDCG@10"]["delta_ci_low"], got["nDCG@10"]["delta_ci_high"]) == pytest.approx((low, high), abs=1e-6)
    assert low <= got["nDCG@10"]["delta"] <= high


def test_unknown_adapted_retriever_says_how_to_train_it(toy_domain):
    from mdrag.errors import MissingModelError
    from mdrag.retrieval.retrievers import make_retriever

    with pytest.raises(MissingModelError, match="train-retriever --domain toy"):
        make_retriever("dense-ft", toy_domain)


def test_a_domain_without_training_questions_is_a_clear_error(tmp_path, tiny_encoder):
    from mdrag.errors import BenchmarkError
    from mdrag.training.retriever import train_retriever

    queries = [{"id": "t0", "text": "what is the capital of France", "answers": ["Paris"], "gold_ids": ["c0a"],
                "split": "test"}]
    passages = [{"id": "c0a", "title": "France", "text": "The capital of France is Paris."}]
    with (registered_domain(tmp_path, "testonly", queries, passages, "general"),
          pytest.raises(BenchmarkError, match="no training questions")):
        train_retriever(["testonly"], base=tiny_encoder, out_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_lora_on_the_packaged_encoder_ships_small_and_loads_from_assets(toy_domain, tmp_path, monkeypatch):
    import shutil

    from mdrag.retrieval import adapted
    from mdrag.retrieval.retrievers import make_retriever
    from mdrag.training import retriever as training

    monkeypatch.setattr(adapted, "SHIPPED_RETRIEVERS", tmp_path / "assets" / "retrievers")
    card = training.train_retriever(["toy"], training.RetrieverSettings(batch_size=8, max_steps=3, lora_rank=4,
                                                                       hard_negatives=0))
    assert card["base_path"] is None and card["trainable_parameters"] < 200_000
    shipped = training.ship_retriever("toy")
    assert (shipped / "adapter_model.safetensors").stat().st_size < 1_000_000
    shutil.rmtree(training.adapted_dir("toy"))  # a fresh clone: only the shipped copy exists
    assert training.find_adapted("toy") == shipped
    idx, scores = make_retriever("dense-ft:toy", toy_domain).search("what is the capital of Peru", 3)
    assert toy_domain.passages[int(idx[0])].id.startswith("c6") and scores[0] >= scores[1]


def test_a_full_copy_or_a_foreign_base_never_ships(toy_domain, tiny_encoder):
    from mdrag.errors import BenchmarkError
    from mdrag.training.retriever import RetrieverSettings, ship_retriever, train_retriever

    for rank, why in ((0, "only a LoRA"), (4, "not the packaged encoder")):
        train_retriever(["toy"], RetrieverSettings(batch_size=8, max_steps=2, lora_rank=rank, hard_negatives=0),
                        base=tiny_encoder)
        with pytest.raises(BenchmarkError, match=why):
            ship_retriever("toy")


@pytest.mark.parametrize("damage", ["foreign base", "pickle weights", "truncated"])
def test_a_bad_adapted_encoder_is_a_clear_error(toy_domain, tiny_encoder, damage):
    import json

    from mdrag.generation.adapters import AdapterError
    from mdrag.retrieval.retrievers import make_retriever
    from mdrag.training.retriever import RetrieverSettings, adapted_dir, train_retriever

    train_retriever(["toy"], RetrieverSettings(batch_size=8, max_steps=2, lora_rank=4, hard_negatives=0),
                    base=tiny_encoder)
    folder = adapted_dir("toy")
    weights = folder / "adapter_model.safetensors"
    if damage == "foreign base":  # the card says packaged MiniLM (no local base), the weights are 32-wide
        card = json.loads((folder / "card.json").read_text())
        card["base_path"] = None
        (folder / "card.json").write_text(json.dumps(card))
        match = "another base"
    elif damage == "pickle weights":
        weights.rename(folder / "adapter_model.bin")
        match = "Refusing pickle"
    else:
        weights.write_bytes(weights.read_bytes()[:100])
        match = "unreadable"
    with pytest.raises(AdapterError, match=match):
        make_retriever("dense-ft:toy", toy_domain)


def test_two_phase_training_examples_come_from_the_adapted_retriever(toy_domain, tiny_encoder, tmp_path,
                                                                     monkeypatch):
    import argparse

    from mdrag.cli import _examples
    from mdrag.engine import Engine
    from mdrag.generation.variants import get_variant
    from mdrag.retrieval.retrievers import make_retriever
    from mdrag.training.examples import ExampleSpec, rag_examples
    from mdrag.training.retriever import RetrieverSettings, train_retriever

    assert get_variant("qk_att_2p").retriever == "dense-ft:nq_open" and get_variant("qk_att").retriever == "splade"
    train_retriever(["toy"], RetrieverSettings(batch_size=8, max_steps=2, lora_rank=4, hard_negatives=0),
                    base=tiny_encoder)
    spec = ExampleSpec(domain="toy", n=4, retriever="dense-ft:toy", reranker="none")
    assert spec.key() != ExampleSpec(domain="toy", n=4, reranker="none").key()  # never the plain examples' cache
    rows = rag_examples(spec)
    adapted = make_retriever("dense-ft:toy", toy_domain)
    for row, q in zip(rows, toy_domain.split("train")[:4], strict=True):
        idx, _ = adapted.search(q.text, 50)
        assert row["passage_ids"] == [toy_domain.passages[int(i)].id for i in idx[:5]]
    # the train command picks the variant's retriever for its examples (here: one neither trained nor shipped)
    from mdrag.retrieval import adapted

    monkeypatch.setattr(adapted, "SHIPPED_RETRIEVERS", tmp_path / "no-shipped-retrievers")
    with pytest.raises(Exception, match="train-retriever --domain nq_open"):
        _examples(argparse.Namespace(variant="qk_att_2p", examples=2, engine=Engine()))


def test_retriever_compare_stores_the_table_in_the_card_retrieval_uses(toy_domain, tmp_path, monkeypatch, capsys):
    import json
    import shutil

    from mdrag.cli import main
    from mdrag.evaluation.retrieval_metrics import compare_retrievers
    from mdrag.retrieval import adapted
    from mdrag.training import retriever as training

    monkeypatch.setattr(adapted, "SHIPPED_RETRIEVERS", tmp_path / "assets" / "retrievers")
    assert main(["retriever-compare", "--encoder", "toy", "--no-forgetting"]) == 2  # nothing trained yet
    assert "train-retriever --domain toy" in capsys.readouterr().err
    training.train_retriever(["toy"], training.RetrieverSettings(batch_size=8, max_steps=2, lora_rank=4,
                                                                 hard_negatives=0))
    shipped = training.ship_retriever("toy")
    shutil.rmtree(training.adapted_dir("toy"))  # a fresh clone: the shipped copy is the one compared
    assert main(["retriever-compare", "--encoder", "dense-ft:toy", "--no-forgetting", "--split", "test"]) == 0
    stored = json.loads((shipped / "card.json").read_text())["evaluation"]
    want = compare_retrievers("dense", "dense-ft:toy", ["toy"], ["toy"], split="test")
    assert stored["split"] == "test" and stored["rows"] == want
    table = training.adaptation_table()
    assert set(table["where"]) == {"shipped"} and len(table) == len(want) and table["trained_on_it"].all()
