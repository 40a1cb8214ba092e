"""Groundedness, claim by claim: claim splitting, the per-answer metrics, the batched checker against one prompt
at a time with plain transformers, the store rows (resumable), the validation set, the report section."""

from __future__ import annotations

import pytest
from conftest import TINY_PASSAGES, write_jsonl

from mdrag.evaluation.facts import missing_facts
from mdrag.evaluation.groundedness import (
    KINDS,
    SUPPORTED,
    GroundedAnswer,
    check_answers,
    check_messages,
    ground_store,
    grounded_answers,
    grounding_table,
    split_claims,
    validation_items,
)
from mdrag.evaluation.judge import get_judge
from mdrag.evaluation.runner import Grid, evaluate
from mdrag.evaluation.store import ResultsStore

LONG = ("The tower was built for the 1889 World's Fair in Paris by the engineer's company; it was the tallest "
        "structure in the world for forty one years after its opening day.")


@pytest.mark.parametrize("answer,claims", [
    ("1901", ["1901"]),
    ("", []),
    ("I don't know.", []),
    ("The documents do not mention it.", []),  # answer_metrics.abstained decides what declines
    ("Paris is in France. It is the capital!", ["Paris is in France.", "It is the capital!"]),
    (LONG, [LONG.split("; ")[0], LONG.split("; ")[1]]),
    ("Short one; with a semicolon.", ["Short one; with a semicolon."]),  # too short to cut
    ("  spaced \n  out  ", ["spaced out"]),
])
def test_answers_split_into_claims(answer, claims):
    assert split_claims(answer) == claims


def grounded(support, gold=(True, False, False)):
    return GroundedAnswer([f"c{i}" for i in range(len(support))], ["a", "b", "c"], list(gold), support)


@pytest.mark.parametrize("support,gold,want", [
    # claim 1 by the gold passage, claim 2 by a distractor only, claim 3 by none
    ([[0.9, 0.1, 0.2], [0.1, 0.7, 0.2], [0.1, 0.2, 0.3]], (True, False, False),
     {"n_claims": 3, "n_supported": 2, "faithfulness": 2 / 3, "unsupported": 1, "gold_support": 1.0,
      "distractor_only": 1 / 3, "ungrounded_answer": 0}),
    # nothing supported: the answer should have abstained
    ([[0.1, SUPPORTED - 0.01, 0.2]], (True, False, False),
     {"n_claims": 1, "n_supported": 0, "faithfulness": 0.0, "unsupported": 1, "gold_support": 0.0,
      "distractor_only": 0.0, "ungrounded_answer": 1}),
    # a claim both the gold passage and a distractor support is not noise
    ([[SUPPORTED, 0.8, 0.0]], (True, False, False),
     {"n_claims": 1, "n_supported": 1, "faithfulness": 1.0, "unsupported": 0, "gold_support": 1.0,
      "distractor_only": 0.0, "ungrounded_answer": 0}),
    # no gold passage in the prompt: utilisation is undefined, not 0
    ([[0.9, 0.1, 0.1]], (False, False, False),
     {"n_claims": 1, "n_supported": 1, "faithfulness": 1.0, "unsupported": 0, "gold_support": None,
      "distractor_only": 1.0, "ungrounded_answer": 0}),
    # a failed check counts as not supported
    ([[None, 0.2, 0.1]], (True, False, False),
     {"n_claims": 1, "n_supported": 0, "faithfulness": 0.0, "unsupported": 1, "gold_support": 0.0,
      "distractor_only": 0.0, "ungrounded_answer": 1}),
])
def test_metrics_of_a_known_support_matrix(support, gold, want):
    got = grounded(support, gold).metrics()
    assert got.keys() == want.keys()
    for k, v in want.items():
        assert got[k] is None if v is None else got[k] == pytest.approx(v), k


def test_an_abstention_has_no_claims_and_no_faithfulness():
    m = GroundedAnswer([], ["a"], [True]).metrics()
    assert m["n_claims"] == 0 and m["faithfulness"] is None and m["ungrounded_answer"] == 0


def test_citations_name_the_most_supporting_passage():
    g = grounded([[0.6, 0.9, 0.1], [0.1, 0.2, 0.3]])
    assert g.citation(0) == 1 and g.citation(1) is None
    assert [c["cite"] for c in g.claims_json()] == [1, None]


@pytest.fixture
def checker(tiny_generator_dir):
    return get_judge(f"hf:{tiny_generator_dir}", dtype="float32")


def test_batched_checks_equal_one_prompt_at_a_time_with_plain_transformers(checker):
    """Every (claim, passage) score of the batched, prefix-cached checker equals P(Yes) / (P(Yes) + P(No)) of one
    plain forward over that prompt alone: caching and batching change nothing."""
    import torch

    passages = [(p["id"], f"{p['title']}: {p['text']}", i == 0) for i, p in enumerate(TINY_PASSAGES[:3])]
    answers = [{"question": "who got the first nobel prize in physics", "answer": a, "passages": passages}
               for a in ("Röntgen got it in 1901. It was for X-rays.", "1901", "I don't know.")]
    checked = check_answers(checker, answers, batch_size=3)
    assert [len(g.claims) for g in checked] == [2, 1, 0]
    for a, g in zip(answers, checked, strict=True):
        for i, claim in enumerate(g.claims):
            for j, (_, text, _) in enumerate(a["passages"]):
                ids = checker.tokenizer.apply_chat_template(check_messages((text, a["question"], claim)),
                                                            add_generation_prompt=True, tokenize=True,
                                                            return_dict=True)["input_ids"]
                with torch.inference_mode():
                    probs = torch.softmax(checker.model(input_ids=torch.tensor([ids])).logits[0, -1].float(), -1)
                yes, no = probs[checker.ids["yes"]].sum(), probs[checker.ids["no"]].sum()
                assert g.support[i][j] == pytest.approx(float(yes / (yes + no)), abs=1e-4)


QUERIES = [{"id": f"g{i}", "text": f"question {i}: who created python or where is paris", "answers": ["Paris"],
            "gold_ids": [["p4"], ["p6"], ["p2", "p6"]][i % 3], "answer_type": "short", "split": "test"}
           for i in range(4)]


@pytest.fixture
def grounded_store(tmp_path, tiny_engine):
    from mdrag.data.domains import DOMAINS, register_jsonl_domain

    register_jsonl_domain("groundtiny", write_jsonl(tmp_path / "q.jsonl", QUERIES),
                          write_jsonl(tmp_path / "p.jsonl", TINY_PASSAGES))
    store = ResultsStore(tmp_path / "r.sqlite")
    evaluate(Grid(["groundtiny"], ["vanilla", "full"], ["retrieved", "oracle"], retrievers=["bm25"],
                  reranker="none"), store, tiny_engine, show_progress=False)
    yield store
    DOMAINS.pop("groundtiny", None)


class Dies:
    """A checker that dies on its second call (a killed run)."""

    def __init__(self, checker):
        self.checker, self.calls = checker, 0
        self.name, self.fingerprint = checker.name, checker.fingerprint

    def score_many(self, *args, **kwargs):
        self.calls += 1
        if self.calls == 2:
            raise KeyboardInterrupt
        return self.checker.score_many(*args, **kwargs)


def test_a_store_is_grounded_once_and_a_killed_run_resumes_without_duplicates(grounded_store, tiny_engine,
                                                                              checker):
    store = grounded_store
    answers = store.answers_frame()
    with pytest.raises(KeyboardInterrupt):
        ground_store(store, tiny_engine, Dies(checker))
    first = store.grounding_frame()
    assert 0 < len(first) < answers["answer_id"].nunique() + len(answers)  # one question's rows landed
    counts = ground_store(store, tiny_engine, checker)
    rows = store.grounding_frame()
    keys = {(r.answer_id, tuple(p["id"] for p in r.passages)) for r in answers.itertuples()}
    assert len(rows) == len(keys) and rows["key"].is_unique  # one row per (answer, passages): no duplicate
    assert counts["answers"] == len(keys) - len(first)  # the killed run's rows were kept, not redone
    assert ground_store(store, tiny_engine, checker)["answers"] == 0
    joined = grounded_answers(store.answers_frame(), rows)
    assert len(joined) == len(answers)  # every answer row finds its grounding row
    texts = {p.id: p.content for p in tiny_engine.domain("groundtiny").passages}
    for r in joined.itertuples():  # the stored numbers are the claims' own
        claims = r.claims
        assert r.n_claims == len(claims) == len(split_claims(r.answer))
        for c in claims:  # the fact check's verdict per passage is stored beside the judge's reading
            assert c["missing"] == [missing_facts(c["claim"], texts[p["id"]], r.question) for p in r.passages]
        supported = [any(p is not None and p >= SUPPORTED and not m for p, m in zip(c["support"], c["missing"],
                                                                                      strict=True)) for c in claims]
        assert supported == [c["cite"] is not None for c in claims]
        if claims:
            assert r.faithfulness == pytest.approx(sum(supported) / len(claims))
        assert all(len(c["support"]) == len(r.passages) for c in claims)


def test_grounding_table_and_report_section_equal_a_recomputation(grounded_store, tiny_engine, checker):
    from mdrag.evaluation.report import grounding_section

    store = grounded_store
    ground_store(store, tiny_engine, checker, limit=1)  # one question of four: the table says it covers a sample
    partial = grounding_table(grounded_answers(store.answers_frame(), store.grounding_frame()),
                              answers=store.answers_frame())
    assert (partial["of answers"] > partial["n"]).all()
    by_variant = grounding_table(grounded_answers(store.answers_frame(), store.grounding_frame()), ("variant",),
                                 store.answers_frame())
    assert (by_variant["of answers"] == store.answers_frame().groupby("variant").size()[by_variant["variant"]]
            .to_numpy()).all()  # one grouping column too
    ground_store(store, tiny_engine, checker)
    joined = grounded_answers(store.answers_frame(), store.grounding_frame())
    answers = store.answers_frame()
    table = grounding_table(joined, answers=answers)
    for _, r in table.iterrows():
        part = joined[(joined["variant"] == r.variant) & (joined["setting"] == r.setting)]
        assert r.n == len(part)
        assert r["of answers"] == len(answers[(answers["variant"] == r.variant) & (answers["setting"] == r.setting)])
        assert r.abstained == pytest.approx((part["n_claims"] == 0).mean())
        faith = part["faithfulness"].dropna()
        shown = r.faithfulness
        assert shown == "–" if faith.empty else shown.startswith(f"{faith.mean():.2f} [")
    parts, csvs = grounding_section(store)
    assert parts[0].startswith("## Groundedness") and "not been validated" in "\n".join(parts)
    assert set(csvs) == {"grounding"}


def test_the_ground_cli_validates_and_checks_resumably(grounded_store, tiny_generator_dir, tiny_adapters_root,
                                                        monkeypatch, capsys):
    from mdrag.cli import main
    from mdrag.evaluation.report import grounding_section

    monkeypatch.setenv("MDRAG_DTYPE", "float32")
    path = str(grounded_store.path)
    args = ["ground", "--store", path, "--checker", f"hf:{tiny_generator_dir}", "--domains", "groundtiny",
            "--validate", "2", "--limit", "2"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "answers (" in out and "faithfulness" in out and "| gold sentence" in out
    checks = ResultsStore(grounded_store.path).grounding_checks_frame()
    assert len(checks) and checks["p_yes"].notna().all()
    assert main(args) == 0 and " 0 answers (" in capsys.readouterr().out  # nothing done twice
    assert len(ResultsStore(grounded_store.path).grounding_checks_frame()) == len(checks)
    _, csvs = grounding_section(ResultsStore(grounded_store.path, read_only=True))
    assert set(csvs) == {"grounding", "grounding_validation"}
    assert main(["ground", "--store", path + ".missing"]) == 2


def test_the_validation_set_is_deterministic_and_each_kind_is_what_it_says():
    from mdrag.data.benchmark import load_domain

    items = validation_items(4, domains=["nq_open"])
    assert items == validation_items(4, domains=["nq_open"]) and items != validation_items(4, 1, ["nq_open"])
    domain = load_domain("nq_open")
    by_item: dict[str, dict[str, dict]] = {}
    for it in items:
        by_item.setdefault(it["item"], {})[it["kind"]] = it
    assert len(by_item) == 4 and {k for kinds in by_item.values() for k in kinds} == set(KINDS)
    for qid, kinds in by_item.items():
        q = domain.query_by_id[qid]
        passage = domain.by_id[q.gold_ids[0]].content
        assert all(it["passage"] == passage and it["expect"] == KINDS[k] for k, it in kinds.items())
        gold = kinds["gold sentence"]["claim"]
        assert gold in passage and q.answers[0].lower() in gold.lower()
        if "swapped number/entity" in kinds:
            swapped = kinds["swapped number/entity"]["claim"]
            assert q.answers[0].lower() not in swapped.lower() and swapped not in passage
        if "other passage's sentence" in kinds:
            assert kinds["other passage's sentence"]["claim"] not in passage


def test_a_long_answers_validation_claims_come_from_its_closest_passage_sentence():
    """ClapNQ's long answers paraphrase their passage: the gold sentence is the passage's sentence closest to the
    answer (token F1 >= LONG_OVERLAP), and the swapped claim is that sentence with a number or name changed."""
    from mdrag.data.benchmark import load_domain
    from mdrag.data.chunking import sentences
    from mdrag.evaluation.answer_metrics import token_f1
    from mdrag.evaluation.groundedness import LONG_OVERLAP

    items = validation_items(4, domains=["clapnq"])
    domain = load_domain("clapnq")
    golds = [it for it in items if it["kind"] == "gold sentence"]
    assert len(golds) == 4 and items == validation_items(4, domains=["clapnq"])
    for it in golds:
        q = domain.query_by_id[it["item"]]
        text = domain.by_id[q.gold_ids[0]].text
        spans = [text[s:e] for s, e in sentences(text)]
        assert it["claim"] in spans and token_f1(it["claim"], q.answers[0]) >= LONG_OVERLAP
        assert token_f1(it["claim"], q.answers[0]) == max(token_f1(x, q.answers[0]) for x in spans)
    swapped = [it for it in items if it["kind"] == "swapped number/entity"]
    assert swapped and all(it["claim"] not in it["passage"] for it in swapped)
    for it in swapped:
        gold = next(g["claim"] for g in golds if g["item"] == it["item"])
        assert len(set(gold.split()) ^ set(it["claim"].split())) <= 8  # one number or name changed, not all


class KeywordChecker:
    """A deterministic checker for tests of what reads its output: a passage supports a claim when both mention
    the same capitalised word."""

    name = fingerprint = "keyword-checker"

    def score_many(self, items, render, words=("yes", "no"), **_):
        from mdrag.evaluation.judge import Verdict

        def caps(text):
            return {w.strip(".,:;!?") for w in text.split() if w[:1].isupper()}

        return [Verdict(0.9 if caps(p) & caps(c) else 0.1) for p, _, c in items]


def test_citations_are_compared_with_passage_ablation_of_each_answer(grounded_store, tiny_engine, monkeypatch):
    from analysis.attribution import passage_ablation
    from analysis.citations import citation_rows
    from analysis.gold_attention import trace_from_rows
    from mdrag.evaluation.groundedness import citation_table
    from mdrag.evaluation.report import grounding_section

    store = grounded_store
    answers = store.answers_frame()
    # answers that name a capitalised word of a passage, so the keyword checker cites something
    store.db.execute("UPDATE results SET answer = 'Paris is in France. Guido van Rossum made it.'")
    store.db.execute("UPDATE results SET answer_id = key")  # each row its own answer (text changed under it)
    store.db.commit()
    ground_store(store, tiny_engine, KeywordChecker())
    made = citation_rows(store, tiny_engine, limit=2)
    assert len(made) == 2 * answers["variant"].nunique()  # two prompts, every variant's answer
    frame = store.answers_frame()
    for row in made:
        stored = frame[frame["key"] == row["result_key"]]
        trace = trace_from_rows(stored, tiny_engine)
        attr = passage_ablation(trace, row["variant"], tiny_engine)
        assert row["top_ablation"] == 1 + max(range(len(attr.scores)), key=attr.scores.__getitem__)
        words = [{w.strip(".,:") for w in p.content.split()} for p in trace.passages]
        # each claim's citation: the first passage sharing one of its names (all supporting ones score the same)
        want = sorted({1 + next(i for i, w in enumerate(words) if names & w)
                       for names in ({"Paris", "France"}, {"Guido", "Rossum"}) if any(names & w for w in words)})
        assert row["cited"] == want and row["agree"] == int(row["top_ablation"] in want)
    more = citation_rows(store, tiny_engine, limit=2)  # resumable: the next prompts, never the same answer twice
    assert not {r["result_key"] for r in more} & {r["result_key"] for r in made}
    table = citation_table(store.citations_frame())
    assert table["n"].sum() == len(made) + len(more)
    parts, csvs = grounding_section(store)
    assert "citation_agreement" in csvs and any("passage ablation" in p for p in parts)


def test_merging_a_store_brings_its_groundedness_rows_and_prefers_good_ones(grounded_store, tiny_engine, tmp_path):
    ground_store(grounded_store, tiny_engine, KeywordChecker())
    source = ResultsStore(grounded_store.path, read_only=True)
    target = ResultsStore(tmp_path / "target.sqlite")
    counts = target.merge_from(source)
    theirs = source.grounding_frame().sort_values("key").reset_index(drop=True)
    assert counts["other_rows_added"] == len(theirs) > 0
    assert target.grounding_frame().sort_values("key").reset_index(drop=True).equals(theirs)
    assert target.merge_from(source)["other_rows_added"] == 0  # keys identify the work: nothing twice
    with target.db:  # a failed row here is replaced by the good one there; a good one here is never touched
        target.db.execute("UPDATE grounding SET errors = 3 WHERE key = ?", (theirs["key"][0],))
    assert target.merge_from(source)["other_rows_added"] == 1
    assert target.grounding_frame().set_index("key").loc[theirs["key"][0], "errors"] == 0


class NeverCalled:
    """A checker that fails the test when asked anything: every reading must come from the store."""

    def __init__(self, checker):
        self.name, self.fingerprint = checker.name, checker.fingerprint

    def score_many(self, items, *args, **kwargs):
        raise AssertionError(f"the checker was asked {len(items)} prompts")


def test_an_earlier_versions_readings_of_the_same_prompt_are_reused_never_recomputed(grounded_store, tiny_engine,
                                                                                     checker):
    """entail-v2 adds the fact check to entail-v1's prompt: a v1 row's P(Yes) readings become a v2 row without
    asking the judge again, and the v2 calls are the fact check applied to them."""
    from mdrag.evaluation.groundedness import CHECK_VERSION, grounding_key

    store = grounded_store
    ground_store(store, tiny_engine, checker)
    now = store.grounding_frame().set_index("key")
    with store.db:  # make every row an entail-v1 row (its own key, as v1 wrote it)
        for key, r in now.iterrows():
            old = grounding_key(r.answer_id, r.passage_ids, r.checker, "entail-v1")
            store.db.execute("UPDATE grounding SET key=?, version='entail-v1' WHERE key=?", (old, key))
    assert grounded_answers(store.answers_frame(), store.grounding_frame()).empty  # v1 calls are not v2's
    counts = ground_store(store, tiny_engine, NeverCalled(checker))
    assert counts["answers"] == len(now)
    again = store.grounding_frame()
    again = again[again["version"] == CHECK_VERSION].set_index("key").sort_index()
    assert again.index.equals(now.sort_index().index)
    same = ["claims", "n_claims", "n_supported", "faithfulness", "unsupported", "gold_support", "distractor_only"]
    assert again[same].equals(now.sort_index()[same]) and again["n_claims"].sum() > 0


def test_validation_reuses_readings_keeps_held_out_questions_apart_and_shows_the_judge_alone(tmp_path, checker):
    from mdrag.evaluation.groundedness import (
        CHECK_VERSION,
        HELD_OUT_SEED,
        supported,
        validate_checker,
        validation_table,
    )

    dev = validation_items(3, domains=["nq_open"])
    held = validation_items(3, HELD_OUT_SEED, ["nq_open"])
    assert {it["split"] for it in dev} == {"dev"} and {it["split"] for it in held} == {"held-out"}
    assert held and not {it["item"] for it in dev} & {it["item"] for it in held}
    store = ResultsStore(tmp_path / "v.sqlite")
    store.put_grounding_checks(validate_checker(checker, dev + held))
    rows = store.grounding_checks_frame()
    assert len(rows) == len(dev) + len(held) and set(rows["split"]) == {"dev", "held-out"}
    for r in rows.itertuples():
        assert r.correct == int(supported(r.p_yes, r.claim, r.passage, r.question) == bool(r.expect))
    readings = {(r.passage, r.question, r.claim): (r.p_yes, r.mass) for r in rows.itertuples()}
    again = validate_checker(NeverCalled(checker), dev + held, readings=readings)
    assert [(r["item"], r["kind"], r["p_yes"], r["correct"]) for r in again] == [
        (it["item"], it["kind"], readings[(it["passage"], it["question"], it["claim"])][0],
         rows.set_index(["item", "kind"]).loc[(it["item"], it["kind"]), "correct"]) for it in dev + held]
    table = validation_table(rows)
    assert list(table["split"].unique()) == ["dev", "held-out"] and "judge alone" in table
    for _, r in table[table["kind"] != "all"].iterrows():
        part = rows[(rows["split"] == r["split"]) & (rows["kind"] == r["kind"])]
        alone = ((part["p_yes"] >= SUPPORTED) == part["expect"].astype(bool)).mean()
        assert r["n"] == len(part) and r["accuracy"].startswith(f"{part['correct'].mean():.2f} [")
        assert r["judge alone"].startswith(f"{alone:.2f} [")
    old = rows.assign(version="entail-v1")
    assert validation_table(old).empty  # an earlier version's calls are not shown as this one's
    assert CHECK_VERSION != "entail-v1"


def test_a_store_from_before_the_split_column_gains_it_and_reads_it_empty(tmp_path):
    import sqlite3

    from mdrag.evaluation.store import CHECK_COLUMNS

    path = tmp_path / "old.sqlite"
    ResultsStore(path).seal()
    db = sqlite3.connect(path)  # a grounding_checks table as stores shipped it before the split column
    db.execute("DROP TABLE grounding_checks")
    db.execute(f"CREATE TABLE grounding_checks ({', '.join(c for c in CHECK_COLUMNS if c != 'split')})")
    db.execute("INSERT INTO grounding_checks (key, item, kind, version, p_yes, correct) VALUES "
               "('k', 'q1', 'gold sentence', 'entail-v2', 0.9, 1)")
    db.commit()
    db.close()
    frame = ResultsStore(path, read_only=True).grounding_checks_frame()  # read-only: the file is not touched
    assert list(frame.columns) == CHECK_COLUMNS and frame["split"].isna().all() and len(frame) == 1
    assert "split" not in [r[1] for r in sqlite3.connect(path).execute("PRAGMA table_info(grounding_checks)")]
    store = ResultsStore(path)  # opened to write: the column is added, the row kept
    assert "split" in store._columns("grounding_checks") and len(store.grounding_checks_frame()) == 1


def test_citation_agreement_reads_the_checkers_side_from_the_current_grounding():
    """Ablation's top passage is stored once per answer; which passages the checker cites comes from the current
    check version's claims, so a new version (the fact check) changes agreement without re-running ablation."""
    import pandas as pd

    from mdrag.evaluation.groundedness import current_citations

    rows = pd.DataFrame([{"result_key": k, "checker": "c", "variant": "v", "setting": "s", "top_ablation": top,
                          "cited": [1], "agree": 1, "top_is_gold": 1, "cites_gold": 1}
                         for k, top in (("a", 1), ("b", 2), ("gone", 1), ("none", 1))])
    gold = [{"gold": True}, {"gold": False}, {"gold": False}]
    joined = pd.DataFrame([
        {"key": "a", "passages": gold, "claims": [{"cite": 1}, {"cite": None}]},  # now cites Doc 2 only
        {"key": "b", "passages": gold, "claims": [{"cite": 1}, {"cite": 0}]},  # Docs 1 and 2
        {"key": "none", "passages": gold, "claims": [{"cite": None}]},  # no longer supported: nothing to compare
    ])
    got = current_citations(rows, joined).set_index("result_key")
    assert list(got.index) == ["a", "b"]
    assert got.loc["a", "cited"] == [2] and got.loc["a", "agree"] == 0 and got.loc["a", "cites_gold"] == 0
    assert got.loc["b", "cited"] == [1, 2] and got.loc["b", "agree"] == 1 and got.loc["b", "cites_gold"] == 1
