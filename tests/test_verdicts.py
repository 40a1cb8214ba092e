"""Verdicts kept apart from answers: the schema-3 -> 4 upgrade, judging a store without the generator,
resuming, and reading one judge's verdicts back."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from mdrag.evaluation.judge import PROMPT_VERSION, Verdict, get_judge
from mdrag.evaluation.store import LEGACY_PROMPT, ResultsStore, answer_id, answer_key
from mdrag.evaluation.verdicts import judge_store

SAMPLE = Path(__file__).parent / "data" / "store-schema3-sample.sqlite"  # rows of the shipped schema-3 store


def test_a_schema_3_store_upgrades_in_place_keeping_every_row_and_verdict(tmp_path):
    path = tmp_path / "copy.sqlite"
    shutil.copy(SAMPLE, path)
    old = sqlite3.connect(SAMPLE)
    old_rows = old.execute("SELECT key, run_id, domain, query_id, variant, setting, retriever, prompt_hash, question, "
                           "gold, answer, judge, judge_score, judge3_score, metrics FROM results").fetchall()
    configs = {r: json.loads(c) for r, c in old.execute("SELECT run_id, config FROM runs")}
    before = path.read_bytes()
    read = ResultsStore(path, read_only=True)  # read-only: upgraded in memory, the file untouched
    assert len(read.answers_frame()) == len(old_rows) and path.read_bytes() == before

    store = ResultsStore(path)
    assert store.version == "4" and "upgraded to schema 4" in store.upgrade_notes[0]
    assert "kept their old key" not in store.upgrade_notes[0]  # every shipped key reproduced
    assert store.db.execute("SELECT value FROM mdrag_meta WHERE name='schema'").fetchone()[0] == "4"
    verdicts = store.verdict_frame()
    for key, run, domain, qid, variant, setting, retriever, prompt, question, gold, answer, judge, s2, s3, \
            metrics in old_rows:
        config = configs[run]
        # the key a new run computes for the same answer (no judge in it): the row is found, not regenerated
        new = answer_key(domain=domain, query=qid, setting=setting, prompt=prompt, variant=variant,
                         adapter=config["adapters"][variant], max_new_tokens=config["max_new_tokens"],
                         generation=config.get("generation") or {"generator": config["generator_fingerprint"],
                                                                  "dtype": config["dtype"]}, retriever=retriever)
        row = store.get(new)
        assert row is not None and new != key and row["answer"] == answer and row["metrics"] == json.loads(metrics)
        aid = answer_id(question, json.loads(gold), answer)
        mine = verdicts[(verdicts.answer_id == aid) & (verdicts.judge == judge)].set_index("levels")
        assert set(mine["prompt_version"]) == {LEGACY_PROMPT}
        assert {mine.loc[2, "score"], mine.loc[3, "score"]} <= {s2, s3} | {
            v for (v,) in old.execute("SELECT judge_score FROM results WHERE question=? AND answer=?",
                                      (question, answer))} | {
            v for (v,) in old.execute("SELECT judge3_score FROM results WHERE question=? AND answer=?",
                                      (question, answer))}
    assert ResultsStore(path).upgrade_notes == []  # opening again changes nothing
    frame = ResultsStore(path, read_only=True).frame()
    assert frame["judge_score"].notna().all() and "135M stand-in" in frame["judge"].iloc[0]


@pytest.fixture
def judged_grid(tmp_path, tiny_engine):
    from test_evaluation_runner import QUERIES, register

    from mdrag.data.domains import DOMAINS
    from mdrag.evaluation.runner import Grid, evaluate

    register(tmp_path)
    store = ResultsStore(tmp_path / "r.sqlite")
    evaluate(Grid(["evaltiny"], ["vanilla"], ["retrieved", "oracle"], retrievers=["bm25"], reranker="none",
                  n_distractors=2), store, tiny_engine, show_progress=False)
    yield store, len(QUERIES)
    DOMAINS.pop("evaltiny", None)


def test_judging_a_store_never_touches_the_generator_and_resumes(judged_grid, tiny_generator_dir, monkeypatch,
                                                                 capsys):
    import mdrag.generation.generator as generator
    import mdrag.generation.model as model
    from mdrag.cli import main
    from mdrag.pipeline import RagPipeline

    store, _ = judged_grid
    calls = []

    def forbidden(*a, **k):
        calls.append(a)
        raise AssertionError("the generator was called")

    for target, name in ((RagPipeline, "answer"), (generator.Generator, "generate"), (model, "load_generator")):
        monkeypatch.setattr(target, name, forbidden)
    answers = store.db.execute("SELECT COUNT(DISTINCT answer_id) FROM results").fetchone()[0]
    rows_before = store.db.execute("SELECT key, answer FROM results ORDER BY key").fetchall()
    spec = f"hf:{tiny_generator_dir}"
    assert main(["judge", "--store", str(store.path), "--judge", spec, "--limit", "3"]) == 0
    assert "3 verdicts written" in capsys.readouterr().out
    assert main(["judge", "--store", str(store.path), "--judge", spec, "--levels", "2,3"]) == 2
    assert "no 3-level form" in capsys.readouterr().err  # the tiny tokenizer has no 'Partially'
    assert main(["judge", "--store", str(store.path), "--judge", spec]) == 0
    assert f"{answers - 3} verdicts written, 0 failed" in capsys.readouterr().out
    assert main(["judge", "--store", str(store.path), "--judge", spec]) == 0
    assert "0 verdicts written" in capsys.readouterr().out  # idempotent
    assert calls == [] and store.db.execute("SELECT key, answer FROM results ORDER BY key").fetchall() == rows_before
    verdicts = store.verdict_frame()
    assert verdicts["key"].is_unique and len(verdicts) == answers
    assert set(verdicts["prompt_version"]) == {PROMPT_VERSION}
    judge = get_judge(spec)
    frame = store.frame(judge.fingerprint)
    assert frame["judge_score"].notna().all()
    assert set(frame["judge"]) == {judge.name} and frame["judge_mass"].between(0, 1).all()
    first = frame.iloc[0]
    want = judge.judge_many([(first["question"], "Paris", first["answer"])])[0]
    assert first["judge_score"] == pytest.approx(want.score, abs=1e-6)


class Broken:
    name, fingerprint, weak = "broken", "broken-judge", False

    def __init__(self, fail: bool = True):
        self.fail = fail

    def judge_many(self, items, levels=2, batch_size=8):
        if self.fail:
            raise RuntimeError("out of memory (simulated)")
        return [Verdict(0.9, 0.9, 0.1, mass=1.0) for _ in items]


def test_a_failing_judge_loses_nothing_and_is_retried(judged_grid):
    store, _ = judged_grid
    counts = judge_store(store, Broken(), show_progress=False)
    assert counts["judged"] == 0 and counts["failed"] > 0
    errors = store.verdict_frame()["error"]
    assert errors.str.contains("RuntimeError: out of memory").all()
    again = judge_store(store, Broken(fail=False), show_progress=False)
    assert again["judged"] == counts["failed"] and store.verdict_frame()["error"].isna().all()
    assert judge_store(store, Broken(), show_progress=False)["failed"] == 0  # good verdicts are never redone


@pytest.mark.parametrize("only", [{"setting": ["oracle"]}, {"variant": ["vanilla"], "setting": ["retrieved"]}])
def test_judging_a_selection_judges_exactly_its_answers_first(judged_grid, only):
    store, _ = judged_grid
    # the tiny model answers alike whatever its passages: make the oracle rows' answers their own
    for key, question, gold, answer in store.db.execute(
            "SELECT key, question, gold, answer FROM results WHERE setting = 'oracle'").fetchall():
        mine = answer + " (from the gold passage)"
        store.db.execute("UPDATE results SET answer = ?, answer_id = ? WHERE key = ?",
                         (mine, answer_id(question, json.loads(gold), mine), key))
    store.db.commit()
    rows = store.answers_frame()
    chosen = rows
    for column, names in only.items():
        chosen = chosen[chosen[column].isin(names)]
    assert 0 < chosen["answer_id"].nunique() < rows["answer_id"].nunique()  # a real subset of the store
    counts = judge_store(store, Broken(fail=False), show_progress=False, only=only)
    judged = set(store.verdict_frame()["answer_id"])
    assert judged == set(chosen["answer_id"]) and counts["judged"] == len(judged) and counts["already"] == 0
    rest = judge_store(store, Broken(fail=False), show_progress=False)  # then the rest, nothing twice
    assert rest["judged"] == rows["answer_id"].nunique() - len(judged)
    assert store.verdict_frame()["key"].is_unique


def test_the_judge_command_refuses_an_unknown_selection_before_loading_a_judge(judged_grid, capsys):
    from mdrag.cli import main

    store, _ = judged_grid
    for flag, value, says in (("--settings", "orcale", "--settings takes"), ("--variants", "ful", "ful"),
                              ("--domains", "nowhere", "Unknown domain")):
        assert main(["judge", "--store", str(store.path), "--judge", "hf:/nonexistent", flag, value]) == 2
        assert says in capsys.readouterr().err
    assert store.verdict_frame().empty


def test_adding_a_judge_after_the_answers_regenerates_nothing(judged_grid, tiny_engine):
    from mdrag.evaluation.runner import Grid, evaluate

    store, n = judged_grid
    grid = Grid(["evaltiny"], ["vanilla"], ["retrieved", "oracle"], retrievers=["bm25"], reranker="none",
                n_distractors=2)
    counts = evaluate(grid, store, tiny_engine, judge=Broken(fail=False), show_progress=False)
    assert counts["generated"] == 0 and counts["cached"] == 2 * n and counts["judged"] > 0


def test_with_no_judge_named_the_one_that_agrees_with_match_is_shown(tmp_path):
    """Two judges' verdicts on the same answers: the frame shows the one with the higher kappa against Match
    (a registry stand-in loses to it), names it, and either can be chosen by id."""
    import random

    store = ResultsStore(tmp_path / "s.sqlite")
    rng = random.Random(0)
    rows = []
    for i in range(60):
        right = i % 2
        rows.append({"key": f"k{i}", "run_id": "r", "domain": "d", "query_id": f"q{i}", "variant": "vanilla",
                     "setting": "retrieved", "retriever": "splade>minilm", "answer_type": "short",
                     "question": f"q{i}", "gold": ["g"], "answer": f"a{i}", "metrics": {"match": right},
                     "retrieval": {}, "passages": []})
    store.put_many(rows)
    good = [{"answer_id": r["answer_id"], "judge": "good", "judge_name": "Good judge", "prompt_version": "v",
             "levels": 2, "score": 0.9 if r["metrics"]["match"] else 0.1, "mass": 1.0} for r in rows]
    noise = [{**v, "judge": "smollm2-135m-x", "judge_name": "SmolLM2 (135M stand-in)", "score": rng.random()}
             for v in good]
    store.put_verdicts(good + noise)
    shown = store.frame()
    assert set(shown["judge"]) == {"Good judge"} and shown["judge_id"].iloc[0] == "good"
    assert store.frame("smollm2-135m-x")["judge"].iloc[0] == "SmolLM2 (135M stand-in)"
    from mdrag.evaluation import dashboard

    assert dashboard.judge_choices(store.path)[0][1] == "good"
    assert dashboard.load_results(store.path, "a judge of another store")["judge_id"].iloc[0] == "good"


class Interrupted(Broken):
    """Stops the process (Ctrl-C) on its third call, like a kill between two chunks' transactions."""

    def __init__(self):
        self.calls = 0

    def judge_many(self, items, levels=2, batch_size=8):
        self.calls += 1
        if self.calls == 3:
            raise KeyboardInterrupt
        return [Verdict(0.9, 0.9, 0.1, mass=1.0) for _ in items]


def test_a_judging_run_stopped_between_chunks_resumes_without_duplicates_or_loss(judged_grid, monkeypatch):
    import mdrag.evaluation.verdicts as verdicts

    store, _ = judged_grid
    monkeypatch.setattr(verdicts, "CHUNK", 2)
    answers = store.db.execute("SELECT COUNT(DISTINCT answer_id) FROM results").fetchone()[0]
    assert answers > 4
    with pytest.raises(KeyboardInterrupt):
        judge_store(store, Interrupted(), show_progress=False)
    assert len(store.verdict_frame()) == 4  # two whole chunks landed, nothing of the third
    again = judge_store(store, Broken(fail=False), show_progress=False)
    assert again["judged"] == answers - 4 and again["already"] == 4
    found = store.verdict_frame()
    assert len(found) == answers and found["answer_id"].is_unique and found["error"].isna().all()


def test_the_shipped_store_is_sealed_so_reading_it_writes_nothing_beside_it(tmp_path):
    import shutil

    from mdrag.config import ASSETS_DIR

    shipped = ASSETS_DIR / "results" / "results.sqlite"
    assert shipped.read_bytes()[18:20] == b"\x01\x01"  # rollback-journal mode, not WAL: seal() it before shipping
    copy = tmp_path / "r.sqlite"
    shutil.copy(shipped, copy)
    store = ResultsStore(copy, read_only=True)
    assert len(store.frame()) > 0
    store.close()
    assert [p.name for p in tmp_path.iterdir()] == ["r.sqlite"]


def test_seal_leaves_wal_mode_and_keeps_every_row(tmp_path):
    store = ResultsStore(tmp_path / "s.sqlite")
    store.add_run("r", {"x": 1})
    store.seal()
    assert (tmp_path / "s.sqlite").read_bytes()[18:20] == b"\x01\x01"
    assert not (tmp_path / "s.sqlite-wal").exists()
    assert ResultsStore(tmp_path / "s.sqlite", read_only=True).runs()[0]["run_id"] == "r"


def test_the_selectors_choices_read_from_distinct_values_match_the_shipped_frame():
    """Settings and retrievals offered per store come from DISTINCT queries, not the frame; on the shipped store
    (answers, probe cases and probe runs with another k) they name exactly what the frame holds."""
    from mdrag.evaluation import dashboard

    store = dashboard.open_store(None)
    frame = dashboard.load_results(store)
    assert store.retrievers() == dashboard.retriever_choices(frame)
    assert dashboard.setting_choices(store) == dashboard.setting_choices(frame)


def test_judging_in_another_dtype_than_the_stores_verdicts_says_so_before_it_starts(judged_grid, tiny_generator_dir,
                                                                                      monkeypatch, capsys):
    """The judge's id holds its dtype, so a float32 run over a store of bf16 verdicts (an AVX2-only CPU over the
    shipped store) judges every answer again as a second instrument: the CLI says so, with the count and the
    setting that adds to the earlier verdicts instead."""
    from mdrag.cli import main

    store, _ = judged_grid
    answers = store.db.execute("SELECT COUNT(DISTINCT answer_id) FROM results").fetchone()[0]
    spec = f"hf:{tiny_generator_dir}"
    monkeypatch.setenv("MDRAG_DTYPE", "float32")
    assert main(["judge", "--store", str(store.path), "--judge", spec, "--limit", "2"]) == 0
    assert "Note:" not in capsys.readouterr().err  # nothing earlier to extend
    monkeypatch.setenv("MDRAG_DTYPE", "bfloat16")
    assert main(["judge", "--store", str(store.path), "--judge", spec, "--limit", "1"]) == 0
    err = capsys.readouterr().err
    assert "are in float32" in err and f"judges {answers} answers again" in err and "MDRAG_DTYPE=float32" in err
    monkeypatch.setenv("MDRAG_DTYPE", "float32")
    assert main(["judge", "--store", str(store.path), "--judge", spec, "--limit", "1"]) == 0
    err = capsys.readouterr().err
    assert "are in bfloat16" in err and f"judges {answers - 2} answers again" in err
