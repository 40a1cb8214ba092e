"""Issue #22's controls and probes on tiny models: the position probe moves exactly the gold passage, shuffled
training is seeded and reproducible, scaling conventions give the factor asked, stratified samples are stable
and hold every answer type, paired comparisons report their power, and a registry rename keeps stored rows."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from conftest import TINY_PASSAGES, registered_domain

from analysis.probes import PROBES, probe_question, run_probe
from mdrag.data.schema import Query
from mdrag.evaluation.probe_tables import FDR_LEVEL, curves, dependence_by_domain, flagged, position_dependence
from mdrag.evaluation.sampling import sample, sample_order
from mdrag.evaluation.stats import paired_power
from mdrag.evaluation.store import ResultsStore
from mdrag.generation.variants import SCALINGS, VARIANTS, get_variant
from mdrag.trace import RetrievedPassage
from mdrag.training.examples import shuffled_passages


def _passage(i: int, gold: bool = False) -> RetrievedPassage:
    return RetrievedPassage(f"d{i}", f"title {i}", f"text {i}", f"doc{i}", i + 1, 1.0, 1.0, i + 1, gold)


# --- position probe: arrangement ------------------------------------------------------------------------

@pytest.mark.parametrize("k", [2, 3, 5, 8])
def test_position_probe_moves_exactly_the_gold_passage_and_nothing_else(k):
    gold, distractors = _passage(99, gold=True), [_passage(i) for i in range(k - 1)]
    probe = PROBES["position"]
    assert probe.conditions(k) == [str(i) for i in range(1, k + 1)]
    for condition in probe.conditions(k):
        arranged = probe.arrange(gold, distractors, condition)
        ids = [p.id for p in arranged]
        assert ids.index("d99") == int(condition) - 1  # the gold passage where the condition says
        assert [i for i in ids if i != "d99"] == [p.id for p in distractors]  # the others keep their order
        assert len(ids) == k and sum(p.is_gold for p in arranged) == 1
    assert [p.id for p in distractors] == [f"d{i}" for i in range(k - 1)]  # inputs untouched (copies)


PROBE_QUERIES = [{"id": f"q{i}", "text": q, "answers": [a], "gold_ids": [g], "answer_type": "short",
                  "split": "test"}
                 for i, (q, a, g) in enumerate([("who created python", "Guido van Rossum", "p4"),
                                                ("where is the eiffel tower", "Paris", "p2"),
                                                ("who discovered x-rays", "Röntgen", "p5")])]


@pytest.fixture
def probe_domain(tmp_path, tiny_generator_dir, tiny_adapters_root, monkeypatch):
    monkeypatch.setenv("MDRAG_ADAPTERS", str(tiny_adapters_root))
    with registered_domain(tmp_path, "probetiny", PROBE_QUERIES, TINY_PASSAGES, "test") as domain:
        yield domain


def _pipe(domain, engine):
    return engine.pipeline(domain, retriever="bm25", reranker="none")


def test_probe_question_prompts_differ_only_by_where_the_gold_passage_sits(probe_domain, tiny_engine):
    pipe = _pipe(probe_domain, tiny_engine)
    query = probe_domain.query_by_id["q0"]
    rows = probe_question(pipe, query, ["vanilla", "full"], PROBES["position"], k=4, attention=True)
    assert len(rows) == 4 * 2
    by_condition = {r["condition"]: r for r in rows if r["variant"] == "vanilla"}
    assert [r["gold_position"] for r in by_condition.values()] == [1, 2, 3, 4]
    orders = {c: [p["id"] for p in r["passages"]] for c, r in by_condition.items()}
    distractor_orders = {tuple(i for i in ids if i != "p4") for ids in orders.values()}
    assert len(distractor_orders) == 1 and "p4" not in next(iter(distractor_orders))
    assert len({r["prompt_hash"] for r in by_condition.values()}) == 4
    for r in rows:
        assert math.isfinite(r["gold_logprob"]) and r["gold_logprob"] < 0
        assert 0 <= r["gold_attention"] <= 1
        assert "match" in r["metrics"]


def test_gold_logprob_of_a_batch_equals_each_variant_alone(probe_domain, tiny_engine):
    from analysis.probes import gold_logprobs

    pipe = _pipe(probe_domain, tiny_engine)
    query = probe_domain.query_by_id["q1"]
    trace = pipe.trace_for_passages(query.text, query, [probe_domain.by_id[i] and _as_retrieved(probe_domain, i)
                                                         for i in ("p0", "p2", "p4")], "probe:position=2")
    both = gold_logprobs(trace, ["vanilla", "qk_att"], "Paris", tiny_engine)
    for v in ("vanilla", "qk_att"):
        assert both[v] == pytest.approx(gold_logprobs(trace, [v], "Paris", tiny_engine)[v], rel=1e-4)
    assert both["vanilla"] != pytest.approx(both["qk_att"])  # the adapter changes the model


def _as_retrieved(domain, pid: str) -> RetrievedPassage:
    p = domain.by_id[pid]
    return RetrievedPassage(p.id, p.title, p.text, p.doc_id, 0, None, None, None, pid == "p2")


def test_probe_run_stores_rows_resumes_without_duplicates_and_reports(probe_domain, tiny_engine, tmp_path):
    store = ResultsStore(tmp_path / "probe.sqlite")
    first = run_probe("position", ["probetiny"], ["vanilla", "full"], store, tiny_engine, limit=2, k=3,
                      attention=False, show_progress=False)
    assert first == {"rows": 2 * 3 * 2, "questions": 2, "skipped": 0}
    again = run_probe("position", ["probetiny"], ["vanilla", "full", "mlp"], store, tiny_engine, limit=3, k=3,
                      attention=False, show_progress=False)
    assert again["rows"] == 2 * 3 * 1 + 1 * 3 * 3  # only mlp on the first two, everything on the third
    frame = store.probe_frame("position")
    assert len(frame) == 3 * 3 * 3 and frame["key"].is_unique
    table = curves(frame)
    assert set(table["condition"]) == {"1", "2", "3"} and (table["n"] == 3).all()
    dependence = position_dependence(frame)
    assert set(dependence["variant"]) == {"vanilla", "full", "mlp"}


def test_a_probe_in_another_dtype_reuses_probed_cells_and_counts_each_once(probe_domain, tiny_engine,
                                                                            tiny_generator_dir, tmp_path):
    """As `evaluate` does: extending a bf16 probe on a float32 machine probes only the new questions; with
    --own-dtype it probes them all again, and the curves still count each (question, position, variant) once."""
    from mdrag.engine import Engine, Settings

    store = ResultsStore(tmp_path / "probe.sqlite")
    bf16 = Engine(Settings(dtype="bfloat16", generator=str(tiny_generator_dir)))
    assert run_probe("position", ["probetiny"], ["vanilla", "full"], store, bf16, limit=2, k=3, attention=False,
                     show_progress=False)["rows"] == 2 * 3 * 2
    more = run_probe("position", ["probetiny"], ["vanilla", "full"], store, tiny_engine, limit=3, k=3,
                     attention=False, show_progress=False)
    assert more["rows"] == 1 * 3 * 2 and more["questions"] == 3  # only the third question, in float32
    assert len(store.probe_frame("position")) == 3 * 3 * 2
    again = run_probe("position", ["probetiny"], ["vanilla", "full"], store, tiny_engine, limit=3, k=3,
                      attention=False, show_progress=False, own_dtype=True)
    assert again["rows"] == 2 * 3 * 2  # the bf16 questions answered again in float32, beside theirs
    frame = store.probe_frame("position")
    assert store.db.execute("SELECT COUNT(*) FROM probe_rows").fetchone()[0] == 3 * 3 * 2 + 2 * 3 * 2
    assert len(frame) == 3 * 3 * 2 and (curves(frame)["n"] == 3).all()  # each cell once: the first stored row
    made_in = {r["run_id"]: r["config"]["generation"]["dtype"] for r in store.runs()}
    assert frame["run_id"].map(made_in).value_counts().to_dict() == {"bfloat16": 12, "float32": 6}


def test_unknown_probe_lists_known_ones(probe_domain, tmp_path, tiny_engine):
    from mdrag.errors import UnknownNameError

    with pytest.raises(UnknownNameError, match="Known: position"):
        run_probe("count", ["probetiny"], ["vanilla"], ResultsStore(tmp_path / "s.sqlite"), tiny_engine,
                  show_progress=False)


def _synthetic_probe(first_gain: dict[str, float], n: int = 60, k: int = 5, seed: int = 0) -> pd.DataFrame:
    """Probe rows where each variant is right with probability 0.5 + gain at position 1, 0.5 elsewhere."""
    rng = np.random.default_rng(seed)
    rows = []
    for q in range(n):
        for v, gain in first_gain.items():
            for c in range(1, k + 1):
                p = 0.5 + (gain if c == 1 else 0.0)
                rows.append({"probe": "position", "domain": "d", "query_id": f"q{q}", "variant": v,
                             "condition": str(c), "m_match": float(rng.random() < p), "gold_logprob": -1.0,
                             "gold_attention": None})
    return pd.DataFrame(rows)


def test_a_variant_answering_from_document_1_is_flagged_and_vanilla_is_not():
    frame = _synthetic_probe({"vanilla": 0.0, "full": 0.45, "qk_att": 0.0}, n=80)
    dependence = position_dependence(frame)
    assert flagged(dependence) == ["full"]
    row = dependence.set_index("variant").loc["full"]
    assert row["first - rest"] > 0.3 and row["vs low"] > 0


def test_the_per_domain_table_says_where_a_pooled_shortcut_comes_from():
    """Full answers from Document 1 only in domain a; QK-Att's gold log-prob (not its Match) leans on it only in b."""
    a = _synthetic_probe({"vanilla": 0.0, "full": 0.45, "qk_att": 0.0}, n=80, seed=1).assign(domain="a")
    b = _synthetic_probe({"vanilla": 0.0, "full": 0.0, "qk_att": 0.0}, n=80, seed=3).assign(domain="b")
    b.loc[(b["variant"] == "qk_att") & (b["condition"] == "1"), "gold_logprob"] = 1.0
    table = dependence_by_domain(pd.concat([a, b])).set_index(["domain", "variant"])
    assert list(table.index) == [("a", "full"), ("a", "qk_att"), ("b", "full"), ("b", "qk_att")]  # no vanilla row
    assert table["shortcut on"].to_dict() == {("a", "full"): "Match", ("a", "qk_att"): "-", ("b", "full"): "-",
                                              ("b", "qk_att"): "log-prob"}
    assert (table["n"] == 80).all()
    assert table.loc[("b", "qk_att"), "log-prob vs vanilla"].startswith("+2.000")  # 1 - (-1) at position 1 only
    # both real effects are strong: they survive the false-discovery correction over the table's 8 tests
    assert table["after FDR"].to_dict() == table["shortcut on"].to_dict()
    assert table.loc[("a", "full"), "Match vs vanilla"].startswith("+0.")
    # a domain without the reference variant gives no rows rather than an error
    assert dependence_by_domain(a[a["variant"] != "vanilla"]).empty


def test_a_weak_single_domain_flag_among_many_null_domains_does_not_survive_the_fdr_correction():
    """One domain where Full's gold log-prob leans on Document 1 by a small margin (t about 2.3, p about 0.01: its
    CI lies above 0) among ten domains with no effect; a strong effect in one more domain. Uncorrected, both flag;
    over 24 tests, Benjamini-Hochberg keeps only the strong one."""
    z = np.random.default_rng(5).standard_normal(60)
    weak_gain = 0.3 + (z - z.mean()) / z.std(ddof=1)  # mean 0.3, sd 1 exactly: t = 0.3 * sqrt(60) = 2.32
    frames = []
    for d in [f"null{i}" for i in range(10)] + ["weak", "strong"]:
        f = _synthetic_probe({"vanilla": 0.0, "full": 0.0}, n=60, seed=1).assign(domain=d, m_match=1.0)
        at_1 = (f["variant"] == "full") & (f["condition"] == "1")
        if d == "weak":
            f.loc[at_1, "gold_logprob"] = -1.0 + weak_gain[f.loc[at_1, "query_id"].str[1:].astype(int)]
        if d == "strong":
            f.loc[at_1, "gold_logprob"] = 1.0
        frames.append(f)
    table = dependence_by_domain(pd.concat(frames)).set_index("domain")
    assert table.loc["weak", "shortcut on"] == "log-prob" and table.loc["weak", "after FDR"] == "-"
    assert table.loc["strong", "shortcut on"] == table.loc["strong", "after FDR"] == "log-prob"
    assert (table.drop(["weak", "strong"])[["shortcut on", "after FDR"]] == "-").all().all()


def test_after_fdr_keeps_only_flagged_measures_when_the_t_test_and_the_bootstrap_disagree():
    """Full right at position 1 (not 2) on 3 of 30 questions: the one-sided t-test gives p about 0.04 (it survives
    BH over this table's two tests), but 4% of bootstrap resamples hold none of the three, so the CI reaches 0 and
    Match is not flagged. 'after FDR' must not name a measure the table does not flag."""
    rows = []
    for q in range(30):
        for v in ("vanilla", "full"):
            for c in ("1", "2"):
                right = v == "full" and c == "1" and q < 3
                rows.append({"probe": "position", "domain": "d", "query_id": f"q{q}", "variant": v, "condition": c,
                             "m_match": float(right), "gold_logprob": 1.0 if (v, c) == ("full", "1") else -1.0,
                             "gold_attention": None})
    frame = pd.DataFrame(rows)
    match = position_dependence(frame).set_index("variant").loc["full"]
    assert match["p"] < FDR_LEVEL and match["vs low"] <= 0  # the two tests disagree
    row = dependence_by_domain(frame).set_index("variant").loc["full"]
    assert row["shortcut on"] == "log-prob" and row["after FDR"] == "log-prob"


# --- shuffled training ----------------------------------------------------------------------------------

def _train_examples(n: int = 12) -> list[dict]:
    return [{"query_id": f"q{i}", "question": f"question {i}", "passages": [f"passage {i}.{j}" for j in range(5)],
             "passage_ids": [f"p{i}.{j}" for j in range(5)], "gold": "x"} for i in range(n)]


def test_shuffled_training_order_is_seeded_reproducible_and_keeps_each_prompts_passages():
    examples = _train_examples()
    once, twice = shuffled_passages(examples, seed=0), shuffled_passages(examples, seed=0)
    assert once == twice  # same seed, same order
    assert shuffled_passages(examples, seed=1) != once
    for before, after in zip(examples, once, strict=True):
        assert sorted(after["passages"]) == sorted(before["passages"])
        # ids move with their passages
        assert [p.split(" ")[1] for p in after["passages"]] == [i[1:] for i in after["passage_ids"]]
    assert sum(a["passage_ids"][0] != b["passage_ids"][0] for a, b in zip(once, examples, strict=True)) >= 6
    assert examples[0]["passage_ids"][0] == "p0.0"  # inputs untouched
    # an example's order depends on its own id only: adding examples changes no earlier one
    assert shuffled_passages(examples[:5], seed=0) == once[:5]


def test_a_shuffled_variant_trains_on_shuffled_prompts(tiny_generator_dir, tmp_path, monkeypatch):
    from mdrag.training import trainer

    seen = {}
    real = trainer.sft_rows

    def spy(examples, labels=None):
        seen["passages"] = [e["passages"] for e in examples]
        return real(examples, labels)

    monkeypatch.setattr(trainer, "sft_rows", spy)
    monkeypatch.setenv("MDRAG_CACHE", str(tmp_path / "cache"))
    examples = _train_examples(4)
    card = trainer.train_variant("qk_att_shuf", generator_path=str(tiny_generator_dir), examples=examples,
                                 settings=trainer.TrainSettings(max_steps=1), out_dir=tmp_path / "out")
    assert seen["passages"] == [e["passages"] for e in shuffled_passages(examples, 0)]
    assert card["passage_order"].startswith("shuffled")


# --- scaling conventions --------------------------------------------------------------------------------

@pytest.mark.parametrize("rank", [1, 16, 42, 85])
def test_scaling_conventions_give_the_factor_asked(rank):
    assert SCALINGS["fixed"].factor(rank) == pytest.approx(32 / rank)
    assert SCALINGS["equal"].alpha(rank) == 2 * rank and SCALINGS["equal"].factor(rank) == pytest.approx(2.0)
    assert SCALINGS["rslora"].factor(rank) == pytest.approx(32 / math.sqrt(rank))


def test_alpha_2r_gives_qk_att_fulls_scaling_in_peft(tiny_generator_dir):
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from mdrag.training.lora import lora_config

    factors = {}
    for variant in ("full", "qk_att", "qk_att_eq", "qk_att_rs"):
        model = AutoModelForCausalLM.from_pretrained(tiny_generator_dir)
        peft_model = get_peft_model(model, lora_config(variant, model.config))
        factors[variant] = {m.scaling["default"] for m in peft_model.modules() if hasattr(m, "scaling")
                            and isinstance(m.scaling, dict) and "default" in m.scaling}
    assert factors["full"] == {2.0} and factors["qk_att_eq"] == {2.0}  # what peft multiplies B @ A by
    assert len(factors["qk_att"]) == 1 and next(iter(factors["qk_att"])) < 2.0  # the paper's damped QK-Att
    r = get_variant("qk_att_eq")
    assert r.target_modules == get_variant("qk_att").target_modules and r.scaling == "equal"
    (rs,) = factors["qk_att_rs"]
    assert rs == pytest.approx(SCALINGS["rslora"].factor(round(32 / next(iter(factors["qk_att"])))))


def test_controls_are_registered_beside_the_variants_they_control():
    assert VARIANTS["full_shuf"].target_modules == VARIANTS["full"].target_modules and VARIANTS["full_shuf"].shuffle
    assert VARIANTS["qk_att_shuf"].target_modules == VARIANTS["qk_att"].target_modules
    assert VARIANTS["full_skd"].teacher == "qwen2.5-coder-1.5b" and VARIANTS["full_skd_self"].teacher == "self-distill"


# --- stratified samples ---------------------------------------------------------------------------------

def _queries() -> list[Query]:
    types = ["long"] * 30 + ["unanswerable"] * 30 + ["short"] * 6
    return [Query(f"q{i:03d}", f"question {i}", [] if t == "unanswerable" else ["a"], [f"doc{i % 7}-c{i % 3}"], t,
                  "test") for i, t in enumerate(types)]


@pytest.mark.parametrize("n", [3, 10, 20, 50])
def test_stratified_sample_is_stable_and_holds_every_answer_type(n):
    queries = _queries()
    chosen = sample(queries, n)
    assert [q.id for q in chosen] == [q.id for q in sample(list(reversed(queries)), n)]  # not file order
    types = [q.answer_type for q in chosen]
    assert set(types) == {"long", "unanswerable", "short"}
    for t, share in (("long", 30 / 66), ("unanswerable", 30 / 66), ("short", 6 / 66)):
        assert abs(types.count(t) - n * share) <= 1  # proportional at every prefix
    assert [q.id for q in sample(queries, n + 5)][:n] == [q.id for q in chosen]  # raising the limit keeps them


def test_stratified_sample_spreads_over_source_documents_and_other_seeds_differ():
    queries = _queries()
    longs = [q for q in sample_order(queries) if q.answer_type == "long"][:7]
    assert len({q.gold_ids[0].split("-c")[0] for q in longs}) == 7  # one per document before a second
    assert [q.id for q in sample(queries, 10, seed=1)] != [q.id for q in sample(queries, 10, seed=0)]
    assert [q.id for q in sample(queries, 10, how="file")] == [q.id for q in queries[:10]]


def test_the_grid_evaluates_unanswerable_questions_in_a_stratified_sample(tmp_path, tiny_engine):
    from mdrag.evaluation.runner import Grid, evaluate

    queries = [{"id": f"a{i}", "text": f"who created python {i}", "answers": ["Guido"], "gold_ids": ["p4"],
                "answer_type": "short", "split": "test"} for i in range(4)]
    queries += [{"id": f"u{i}", "text": f"what is the moon made of {i}", "answers": [], "gold_ids": ["p6"],
                 "answer_type": "unanswerable", "split": "test"} for i in range(4)]
    with registered_domain(tmp_path, "stratiny", queries, TINY_PASSAGES, "test"):
        store = ResultsStore(tmp_path / "r.sqlite")
        evaluate(Grid(["stratiny"], ["vanilla"], ["retrieved"], limit=4, retrievers=["bm25"], reranker="none"),
                 store, tiny_engine, show_progress=False)
        df = store.frame()
    assert sorted(df["answer_type"].value_counts().to_dict().items()) == [("short", 2), ("unanswerable", 2)]
    assert df.loc[df["answer_type"] == "unanswerable", "m_abstained"].notna().all()


# --- power ----------------------------------------------------------------------------------------------

def test_paired_power_reports_discordance_and_the_detectable_difference():
    d = [1, -1] * 10 + [0] * 80  # 20% discordant, mean 0
    out = paired_power(d)
    assert out["n"] == 100 and out["discordant"] == pytest.approx(0.2)
    assert out["mde"] == pytest.approx(2.801585 * np.std(d, ddof=1) / 10, rel=1e-5)
    assert paired_power([1, 0, 1] * 400)["mde"] < paired_power([1, 0, 1] * 40)["mde"]  # more n, finer
    assert math.isnan(paired_power([1])["mde"])


def test_report_marks_underpowered_comparisons():
    from mdrag.evaluation.report import PAPER_EFFECT, paired_table

    rng = np.random.default_rng(0)
    rows = []
    for n_q, domain in ((40, "small"), (4000, "big")):
        for q in range(n_q):
            for v in ("qk_att", "full"):
                rows.append({"setting": domain, "domain": domain, "query_id": f"q{q}", "variant": v,
                             "m_match": float(rng.random() < 0.5)})
    table = paired_table(pd.DataFrame(rows), pairs=[("qk_att", "full")]).set_index("setting")
    assert table.loc["small", "power"] == "underpowered" and table.loc["small", "MDE (80%)"] > PAPER_EFFECT
    assert table.loc["big", "power"] == "no effect at this power" and 0.4 < table.loc["big", "discordant"] < 0.6
    rows = [{"setting": "s", "domain": "d", "query_id": f"q{q}", "variant": v, "m_match": float(v == "qk_att")}
            for q in range(30) for v in ("qk_att", "full")]
    assert paired_table(pd.DataFrame(rows), pairs=[("qk_att", "full")]).loc[0, "power"] == "detected"


# --- teachers and the registry rename -------------------------------------------------------------------

def test_the_default_teacher_is_the_packaged_model_without_the_gold_and_naming_it_loads_nothing(monkeypatch):
    from mdrag.generation import model
    from mdrag.training import teacher

    monkeypatch.setattr(model, "load_generator", lambda *a: pytest.fail("naming a teacher must not load it"))
    t = teacher.get_teacher()
    assert t.name.startswith("qwen2.5-coder-1.5b") and "no gold" in t.name and not t.show_gold
    assert teacher.get_teacher("self-distill").show_gold
    with pytest.raises(teacher.UnknownNameError, match="needs its server"):
        teacher.get_teacher("openai:gpt")


def test_renaming_a_variant_rekeys_its_rows_so_a_run_of_the_new_name_reuses_them(tmp_path, tiny_engine,
                                                                                 tiny_adapters_root, monkeypatch):
    from mdrag.evaluation.runner import Grid, adapter_fingerprint, evaluate

    monkeypatch.setenv("MDRAG_ADAPTERS", str(tiny_adapters_root))
    queries = [{"id": "q0", "text": "who created python", "answers": ["Guido"], "gold_ids": ["p4"],
                "answer_type": "short", "split": "test"}]
    with registered_domain(tmp_path, "renametiny", queries, TINY_PASSAGES, "test"):
        store = ResultsStore(tmp_path / "r.sqlite")
        grid = dict(retrievers=["bm25"], reranker="none")
        evaluate(Grid(["renametiny"], ["full"], ["retrieved", "oracle"], **grid), store, tiny_engine,
                 show_progress=False)
        fp = adapter_fingerprint("full")
        assert store.rename_variant("full", "full_shuf", "0" * 16)["other_adapter"] == 2  # another adapter: kept
        assert store.rename_variant("full", "full_shuf", fp) == {"renamed": 2, "other_adapter": 0,
                                                                  "key_not_reproduced": 0}
        # the renamed variant now has the same adapter file (as a registry rename would): nothing to generate
        (tiny_adapters_root / "full_shuf").symlink_to(tiny_adapters_root / "full")
        try:
            counts = evaluate(Grid(["renametiny"], ["full_shuf"], ["retrieved", "oracle"], **grid), store,
                              tiny_engine, show_progress=False)
        finally:
            (tiny_adapters_root / "full_shuf").unlink()
    assert counts["generated"] == 0 and counts["cached"] == 2
    assert set(store.frame()["variant"]) == {"full_shuf"}
    assert json.loads(store.db.execute("SELECT config FROM runs").fetchone()[0])["adapters"]["full_shuf"] == fp


def test_probe_cli_writes_rows_and_report_prints_the_probe_section(probe_domain, tiny_generator_dir, tmp_path,
                                                                  monkeypatch, capsys, float32_generation,
                                                                  tiny_engine):
    from mdrag.cli import main
    from mdrag.evaluation.report import report
    from mdrag.evaluation.runner import Grid, evaluate

    monkeypatch.setenv("MDRAG_GENERATOR", str(tiny_generator_dir))
    path = tmp_path / "s.sqlite"
    args = ["probe", "position", "--domains", "probetiny", "--variants", "vanilla,full", "--limit", "2", "--k", "3",
            "--retriever", "bm25", "--reranker", "none", "--no-attention", "--store", str(path)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "'rows': 12" in out and "Position dependence" in out
    assert main(args) == 0 and "'rows': 0" in capsys.readouterr().out  # resumed: nothing left to do
    assert main(["probe", "passages", "--domains", "probetiny", "--store", str(path)]) == 2
    assert "Unknown probe 'passages'" in capsys.readouterr().err
    store = ResultsStore(path)
    evaluate(Grid(["probetiny"], ["vanilla"], ["retrieved"], retrievers=["bm25"], reranker="none"), store,
             tiny_engine, show_progress=False)
    text = report(store.frame(), store=store)
    assert "## Position probe" in text and "probetiny 2" in text and "Position shortcut" in text
    assert "Per domain: first minus the rest" in text and "2 intervals" in text  # full's Match and log-prob


def test_gold_position_table_splits_noisy_rows_by_where_the_gold_passage_sat():
    from mdrag.evaluation.report import gold_position_table

    rows = []
    for q in range(30):
        at = 1 if q % 3 == 0 else 3  # a third of the prompts have the gold passage first
        passages = [{"id": f"p{i}", "rank": i, "gold": i == at} for i in range(1, 6)]
        for v, right in (("vanilla", True), ("full", at == 1)):
            rows.append({"setting": "noisy", "variant": v, "passages": passages, "m_match": float(right)})
    rows.append({"setting": "oracle", "variant": "full", "passages": [{"rank": 1, "gold": True}], "m_match": 0.0})
    table = gold_position_table(pd.DataFrame(rows)).set_index("variant")
    assert table.loc["full", "n first"] == 10 and table.loc["full", "n elsewhere"] == 20
    assert table.loc["full", "first - elsewhere"] == 1.0 and table.loc["vanilla", "first - elsewhere"] == 0.0
    assert table.loc["full", "Match, gold first"].startswith("1.000")


def test_abstention_is_reported_where_a_sample_holds_unanswerable_questions():
    from mdrag.evaluation.report import abstention_table

    rows = [{"domain": "clap", "setting": "retrieved", "variant": "full", "answer_type": t, "answer": a}
            for t, a in [("unanswerable", "The documents do not mention it."), ("unanswerable", "Paris"),
                         ("long", "Paris is the capital."), ("long", "I don't know.")]]
    rows.append({"domain": "nq", "setting": "retrieved", "variant": "full", "answer_type": "short", "answer": "x"})
    table = abstention_table(pd.DataFrame(rows))
    assert list(table["domain"]) == ["clap"]  # only domains with unanswerable questions
    assert table.loc[0, "abstains when unanswerable"].startswith("0.500")
    assert table.loc[0, "abstains when answerable"].startswith("0.500")
    assert abstention_table(pd.DataFrame(rows[-1:])).empty


def _claim_rows(qk_att_value, n=200) -> pd.DataFrame:
    """Full right on every other question; QK-Att's Match per question from `qk_att_value(q, full's)`."""
    rows = []
    for q in range(n):
        base = float(q % 2)
        for v, value in (("qk_att", qk_att_value(q, base)), ("full", base)):
            rows.append({"domain": "d", "query_id": f"q{q}", "variant": v, "setting": "oracle",
                         "answer_type": "short", "m_match": value, "judge_score": None})
    return pd.DataFrame(rows)


def _flip_every_third(q, base):  # discordant both ways, exactly balanced: mean difference 0
    return 1.0 - base if q % 3 == 0 else base


@pytest.mark.parametrize("shift, n, verdict", [(lambda q, b: 1.0 if q % 3 == 0 else b, 300, "reproduced"),
                                                (lambda q, b: 0.0 if q % 3 == 0 else b, 300, "contradicted"),
                                                (_flip_every_third, 3000, "inconclusive"),
                                                (_flip_every_third, 12, "inconclusive (underpowered)")])
def test_claims_are_called_reproduced_contradicted_or_inconclusive_by_their_paired_ci(shift, n, verdict):
    from mdrag.evaluation.claims import CLAIMS, claims_table

    claim = next(c for c in CLAIMS if c.a == ("qk_att", "oracle"))
    table = claims_table(_claim_rows(shift, n), claims=[claim])
    assert list(table["metric"]) == ["Match"]  # no verdicts: no LLMEval row
    assert table.loc[0, "verdict"] == verdict and table.loc[0, "n"] == n
    assert table.loc[0, "CI low"] <= table.loc[0, "diff"] <= table.loc[0, "CI high"]


def test_a_claim_read_on_part_of_its_pairs_says_how_many():
    """LLMEval verdicts can cover only some answers (e.g. those identical to earlier-judged ones): the claim's
    LLMEval row says on how many of the pairs it stands; the Match row, on all of them, says nothing."""
    from mdrag.evaluation.claims import CLAIMS, claims_table

    claim = next(c for c in CLAIMS if c.a == ("qk_att", "oracle"))
    rows = _claim_rows(lambda q, b: b, 40)
    rows.loc[rows.index < 20, "judge_score"] = 1.0  # the first 10 questions judged for both cells
    table = claims_table(rows, claims=[claim]).set_index("metric")
    assert table.loc["LLMEval", "n"] == 10 and "LLMEval on 10 of 40 pairs" in table.loc["LLMEval", "note"]
    assert claim.note in table.loc["LLMEval", "note"] and table.loc["Match", "note"] == claim.note


def test_the_noise_ratio_divides_means_over_the_same_questions():
    """A control run on oracle prompts of one domain and noisy prompts of two must not divide one sample's mean by
    another's: noisy/oracle is read over the questions answered in both settings."""
    from mdrag.evaluation.report import setting_table

    rows = [{"variant": "x", "domain": "a", "query_id": f"q{i}", "setting": "oracle", "m_match": 1.0}
            for i in range(4)]
    rows += [{"variant": "x", "domain": d, "query_id": f"q{i}", "setting": "noisy", "m_match": float(d == "a")}
             for d in ("a", "b") for i in range(4)]  # right on a's questions, wrong on b's
    table = setting_table(pd.DataFrame(rows)).set_index("variant")
    assert table.loc["x", "noisy"] == 0.5 and table.loc["x", "oracle"] == 1.0  # each cell its own mean
    assert table.loc["x", "noisy/oracle"] == 1.0  # over domain a's four questions only, not 0.5 / 1.0


def test_probe_rows_from_the_shared_prefill_equal_rows_that_prefill_again(probe_domain, tiny_engine):
    """One prefill per variant and prompt serves the answer, the gold log-prob and the attention: the same rows
    (answers exactly, numbers to float rounding) as prefilling the prompt again for each."""
    pipe = _pipe(probe_domain, tiny_engine)
    query = probe_domain.query_by_id["q0"]
    args = (pipe, query, ["vanilla", "full", "qk_att"], PROBES["position"], 3)
    shared = probe_question(*args, attention=True)
    again = probe_question(*args, attention=True, share_prefill=False)
    assert len(shared) == len(again) == 9
    for a, b in zip(shared, again, strict=True):
        assert (a["condition"], a["variant"], a["answer"]) == (b["condition"], b["variant"], b["answer"])
        assert a["gold_logprob"] == pytest.approx(b["gold_logprob"], abs=1e-4)
        assert a["gold_attention"] == pytest.approx(b["gold_attention"], abs=1e-5)
    assert len({round(r["gold_logprob"], 3) for r in shared}) > 3  # conditions and variants differ
