"""Adapter-aware views and the gold-passage attention summary, on the tiny corpus and tiny adapters."""

from __future__ import annotations

import pytest
from test_evaluation_runner import register

from analysis.attention import answer_attention
from analysis.attribution import passage_ablation
from analysis.gold_attention import gold_attention_rows, layer_band, summarize, trace_from_rows
from analysis.lora_views import attention_shift, lora_norms, norms_beside_shift, what_changed
from mdrag.data.domains import DOMAINS
from mdrag.evaluation.runner import Grid, evaluate
from mdrag.evaluation.store import ResultsStore
from mdrag.generation.adapters import update_norms

VARIANTS = ["vanilla", "full", "qk_att"]


@pytest.fixture
def store(tmp_path, tiny_engine):
    register(tmp_path)
    store = ResultsStore(tmp_path / "r.sqlite")
    evaluate(Grid(["evaltiny"], VARIANTS, ["noisy", "retrieved", "oracle"], retrievers=["bm25"], reranker="none",
                  n_distractors=2, limit=3), store, tiny_engine, show_progress=False)
    yield store
    DOMAINS.pop("evaltiny", None)


def test_lora_norms_come_from_the_adapter_files(store, tiny_adapters_root):
    norms = lora_norms(VARIANTS)
    assert set(norms["variant"]) == {"full", "qk_att"}  # vanilla has no update
    want = sum(r["norm"] for r in update_norms(tiny_adapters_root / "qk_att"))
    assert norms[norms["variant"] == "qk_att"]["norm"].sum() == pytest.approx(want)
    assert set(norms[norms["variant"] == "qk_att"]["module"]) == {"q_proj", "k_proj"}


def test_gold_rows_rebuild_the_stored_prompt_and_match_a_direct_computation(store, tiny_engine):
    df = store.frame()
    rows = gold_attention_rows(df, "evaltiny", VARIANTS, ["noisy", "retrieved", "oracle"], tiny_engine)
    assert not rows.empty and "oracle" not in set(rows["setting"])  # oracle has no distractors
    assert rows["gold_share"].between(0, 1).all()
    one = rows.iloc[0]
    group = df[(df["query_id"] == one["query_id"]) & (df["setting"] == one["setting"])]
    trace = trace_from_rows(group, tiny_engine)
    assert trace is not None and trace.answers["full"].text == group[group.variant == "full"]["answer"].iloc[0]
    frame = answer_attention(trace, tiny_engine, [one["variant"]]).frame()
    n_layers = frame["layer"].max() + 1
    frame = frame[[layer_band(x, n_layers) == one["band"] for x in frame["layer"]]]
    gold = {f"passage_{i + 1}" for i, p in enumerate(trace.passages) if p.is_gold}
    per_head = frame.assign(g=frame["segment"].astype(str).isin(gold) * frame["mass"]).groupby(
        ["layer", "head"])["g"].sum()
    assert one["gold"] == pytest.approx(per_head.mean(), abs=1e-5)
    table = summarize(rows)
    assert set(table["variant"]) == set(VARIANTS) and (table["CI low"] <= table["gold_share"] + 1e-9).all()


def test_attention_shift_and_what_changed(store, tiny_engine):
    df = store.frame()
    group = df[(df["setting"] == "noisy") & (df["query_id"] == df["query_id"].iloc[0])]
    trace = trace_from_rows(group, tiny_engine)
    for answer in trace.answers.values():  # the random model often stops at once: force a short target
        answer.token_ids = answer.token_ids[:4] or trace.prompt_ids[-3:]
    attention = answer_attention(trace, tiny_engine, VARIANTS)
    same = attention_shift(attention, "vanilla", "vanilla")
    assert same["attention_shift"].abs().max() < 1e-9
    shift = norms_beside_shift(lora_norms(VARIANTS), attention, "qk_att")
    assert shift["attention_shift"].max() > 0 and shift["update_norm"].notna().all()
    attrs = {v: passage_ablation(trace, v, tiny_engine) for v in ("full", "qk_att")}
    table = what_changed(trace, "qk_att", "full", attention, attrs)
    assert len(table) == len(trace.passages)
    assert list(table["Δ ablation"].abs()) == sorted(table["Δ ablation"].abs(), reverse=True)


def test_ablation_rows_name_the_top_passage_correctly(store, tiny_engine):
    from analysis.gold_attention import ablation_rows, summarize_ablation

    df = store.frame()
    # The random tiny model leaves most answers empty; its "full" adapter answers every noisy question.
    rows = ablation_rows(df, "evaltiny", ["full"], ["noisy"], tiny_engine, limit=2)
    assert not rows.empty  # otherwise the loop below would check nothing
    for _, row in rows.iterrows():
        group = df[(df["query_id"] == row["query_id"]) & (df["setting"] == "noisy")]
        trace = trace_from_rows(group[group["variant"] == "full"], tiny_engine)
        attr = passage_ablation(trace, "full", tiny_engine)
        best = max(range(len(attr.scores)), key=attr.scores.__getitem__)
        assert row["top_is_gold"] == trace.passages[best].is_gold
    table = summarize_ablation(rows) if not rows.empty else None
    assert table is None or table["top is gold"].between(0, 1).all()
