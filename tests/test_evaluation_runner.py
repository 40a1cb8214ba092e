"""Results store and the evaluation grid on the tiny corpus with a tiny generator."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TINY_PASSAGES, write_jsonl

from mdrag.evaluation.judge import Verdict
from mdrag.evaluation.runner import Grid, evaluate
from mdrag.evaluation.store import ResultsStore, StoreError

QUERIES = [{"id": f"q{i}", "text": f"question {i}: who created python or where is paris", "answers": ["Paris"],
            "gold_ids": [["p4"], ["p6"], ["p2", "p6"]][i % 3], "answer_type": "short", "split": "test"}
           for i in range(8)]


def register(tmp: Path) -> None:
    from mdrag.data.domains import register_jsonl_domain

    register_jsonl_domain("evaltiny", write_jsonl(tmp / "q.jsonl", QUERIES),
                          write_jsonl(tmp / "p.jsonl", TINY_PASSAGES))


@pytest.fixture
def grid(tmp_path):
    from mdrag.data.domains import DOMAINS

    register(tmp_path)
    yield Grid(["evaltiny"], ["vanilla"], ["retrieved", "oracle", "noisy"], retrievers=["bm25"], reranker="none",
               n_distractors=2)
    DOMAINS.pop("evaltiny", None)


@pytest.fixture
def engine(tiny_engine):
    """The grid's engine: the tiny generator (and its adapters), float32."""
    return tiny_engine


class FlakyJudge:
    name = "flaky"
    fingerprint = "flaky-judge"

    def __init__(self):
        self.calls = 0

    def judge(self, question, answer, prediction):
        self.calls += 1
        return Verdict(None, error="endpoint down") if self.calls % 2 else Verdict(0.25, 0.1, 0.3, mass=0.4)

    def judge_many(self, items, levels=2, batch_size=8):
        return [self.judge(*item) for item in items]  # no de-duplication: every other call fails


def test_grid_fills_every_cell_once_and_caches(grid, tmp_path, engine):
    store = ResultsStore(tmp_path / "r.sqlite")
    counts = evaluate(grid, store, engine, show_progress=False)
    assert counts["generated"] == 8 * 3
    df = store.frame()
    assert len(df) == 24 and df["key"].is_unique
    assert set(df["setting"]) == {"retrieved", "oracle", "noisy"}
    oracle = df[df.setting == "oracle"]
    assert all(all(p["gold"] for p in ps) for ps in oracle["passages"])
    assert {"m_match", "m_recall", "m_f1", "r_nDCG@10"} <= set(df.columns)
    again = evaluate(grid, store, engine, show_progress=False)
    assert again["generated"] == 0 and again["cached"] == 24 and len(store.frame()) == 24
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert len(store.runs()) == 2


def test_judge_failures_are_recorded_and_only_they_are_retried(grid, tmp_path, engine):
    grid.settings = ["retrieved"]
    store = ResultsStore(tmp_path / "r.sqlite")
    judge = FlakyJudge()
    first = evaluate(grid, store, engine, judge=judge, show_progress=False)
    assert first["judge_failures"] == 4 and first["judged"] == 4 and len(store.frame()) == 8
    answers = dict(zip(store.frame()["key"], store.frame()["answer"], strict=True))
    second = evaluate(grid, store, engine, judge=judge, show_progress=False)
    assert second["generated"] == 0 and second["cached"] == 8
    assert second["judged"] + second["judge_failures"] == 4  # only the failed verdicts were retried
    df = store.frame("flaky-judge")
    assert dict(zip(df["key"], df["answer"], strict=True)) == answers  # answers reused, not regenerated
    assert df["judge_score"].notna().sum() >= 6 and set(df["judge"].dropna()) == {"flaky"}
    assert df.loc[df["judge_score"].notna(), "judge_low_mass"].all()  # mass 0.4 < 0.5: flagged
    verdicts = store.verdict_frame()
    assert verdicts["key"].is_unique and len(verdicts) == 8


@pytest.mark.parametrize("content,match", [(b"hello, not a database at all", "not a SQLite file"),
                                           ("foreign", "something else")])
def test_bad_store_files_are_refused_and_left_untouched(tmp_path, content, match):
    path = tmp_path / "x.sqlite"
    if content == "foreign":
        db = sqlite3.connect(path)
        db.execute("CREATE TABLE invoices (id INTEGER)")
        db.commit()
        db.close()
    else:
        path.write_bytes(content)
    before = path.read_bytes()
    for read_only in (False, True):
        with pytest.raises(StoreError, match=match):
            ResultsStore(path, read_only=read_only)
    assert path.read_bytes() == before


def test_read_only_store_reads_and_leaves_no_trace(grid, tmp_path, engine):
    path = tmp_path / "r.sqlite"
    store = ResultsStore(path)
    grid.settings = ["retrieved"]
    evaluate(grid, store, engine, show_progress=False)
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.db.execute("PRAGMA journal_mode=DELETE")
    store.close()
    before = sorted(p.name for p in tmp_path.iterdir())
    frame = ResultsStore(path, read_only=True).frame()
    assert len(frame) == 8 and sorted(p.name for p in tmp_path.iterdir()) == before
    with pytest.raises(StoreError, match="No results store"):
        ResultsStore(tmp_path / "absent.sqlite", read_only=True)


RUN = """
import sys; sys.path.insert(0, {tests!r})
from pathlib import Path
from test_evaluation_runner import register
from mdrag.evaluation.runner import Grid, evaluate
from mdrag.evaluation.store import ResultsStore
from mdrag.engine import Engine, Settings
register(Path({tmp!r}))
grid = Grid(["evaltiny"], ["vanilla"], ["retrieved", "oracle", "noisy"], retrievers=["bm25"], reranker="none",
            n_distractors=2)
engine = Engine(Settings(dtype="float32", generator={gen!r}))
print(evaluate(grid, ResultsStore(Path({store!r})), engine, show_progress=False), flush=True)
"""


def test_a_killed_run_resumes_without_duplicates_or_loss(tmp_path, tiny_generator_dir):
    store_path = tmp_path / "r.sqlite"
    script = tmp_path / "run.py"
    script.write_text(RUN.format(tests=str(Path(__file__).parent), tmp=str(tmp_path), gen=str(tiny_generator_dir),
                                 store=str(store_path)))
    env = {**os.environ, "MDRAG_CACHE": str(tmp_path / "cache")}
    proc = subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    n = 0
    while time.time() < deadline and proc.poll() is None:
        if store_path.exists():
            try:
                n = sqlite3.connect(store_path).execute("SELECT count(*) FROM results").fetchone()[0]
            except sqlite3.OperationalError:
                n = 0
            if n >= 3:
                break
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert 0 < n < 24, "the run should have been killed part-way"
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    counts = json.loads(done.stdout.strip().splitlines()[-1].replace("'", '"'))
    rows = sqlite3.connect(store_path).execute("SELECT key, domain, query_id, variant, setting FROM results").fetchall()
    assert len(rows) == 24 and len({r[0] for r in rows}) == 24
    assert len({r[2:] for r in rows}) == 24  # every (query, variant, setting) exactly once
    assert counts["cached"] >= 3 and counts["generated"] + counts["cached"] == 24


def test_report_numbers_equal_an_independent_recomputation(grid, tmp_path, engine):
    from mdrag.evaluation.report import judge_agreement, report, setting_table

    store = ResultsStore(tmp_path / "r.sqlite")
    evaluate(grid, store, engine, judge=FlakyJudge(), show_progress=False)
    df = store.frame()
    db = sqlite3.connect(tmp_path / "r.sqlite")
    for setting in ("retrieved", "oracle", "noisy"):
        values = [json.loads(m)["match"] for (m,) in db.execute(
            "SELECT metrics FROM results WHERE setting=? AND variant='vanilla'", (setting,))]
        table = setting_table(df).set_index("variant")
        assert table.loc["vanilla", setting] == pytest.approx(sum(values) / len(values))
    judged = [(s > 0.5, json.loads(m)["match"]) for s, m in db.execute(
        "SELECT v.score, r.metrics FROM results r JOIN verdicts v ON v.answer_id = r.answer_id "
        "WHERE v.score IS NOT NULL AND v.levels = 2")]
    agree = judge_agreement(df)
    assert agree["n"] == len(judged)
    assert agree["accuracy_vs_match"] == pytest.approx(sum(a == bool(b) for a, b in judged) / len(judged))
    text = report(df, tmp_path / "csv")
    assert "vanilla" in text and "noisy/oracle" in text and "Judge: flaky" in text
    assert (tmp_path / "csv" / "clusters.csv").exists()
    # the flaky judge read about half the answers: no LLMEval cell mean poses as the cell's, the CI cells say k of n
    from mdrag.evaluation.report import cluster_table

    assert 0 < df["judge_score"].notna().mean() < 0.95
    assert setting_table(df, "judge_score").set_index("variant").isna().all().all()
    cell = cluster_table(df).iloc[0]
    judged = int(df[(df.setting == "retrieved")]["judge_score"].notna().sum())
    assert cell["LLMEval"].endswith(f"({judged} of {cell['n']})") and "of" not in cell["Match"]


def test_paired_differences_equal_a_hand_recomputation():
    import pandas as pd

    from mdrag.evaluation.report import paired_table

    rows = []
    for qid, (a, b) in enumerate([(1, 0), (1, 1), (0, 1), (1, 0), (1, 0)]):
        rows += [{"domain": "d", "query_id": str(qid), "setting": "oracle", "variant": "qk_att", "m_match": a},
                 {"domain": "d", "query_id": str(qid), "setting": "oracle", "variant": "full", "m_match": b}]
    rows.append({"domain": "d", "query_id": "9", "setting": "oracle", "variant": "qk_att", "m_match": 1})  # unpaired
    table = paired_table(pd.DataFrame(rows), pairs=[("qk_att", "full")])
    row = table.iloc[0]
    assert row["n"] == 5 and row["mean"] == pytest.approx(2 / 5)
    assert row["CI low"] <= row["mean"] <= row["CI high"]


def test_retrievers_are_a_grid_dimension_and_oracle_rows_are_shared(grid, tmp_path, tiny_adapters_root,
                                                                   monkeypatch, engine):
    from mdrag.evaluation.dashboard import filtered, retriever_comparison
    from mdrag.evaluation.report import retriever_table, tables

    monkeypatch.setenv("MDRAG_ADAPTERS", str(tiny_adapters_root))
    grid.retrievers, grid.variants = ["bm25", "dense"], ["vanilla", "full"]
    store = ResultsStore(tmp_path / "r.sqlite")
    counts = evaluate(grid, store, engine, show_progress=False)
    # retrieved and noisy rows per retriever; oracle prompts hold the gold passages: one row serves both
    assert counts["generated"] == 8 * 2 * (2 * 2 + 1) and counts["cached"] == 8 * 2
    df = store.frame()
    assert df["key"].is_unique and len(df) == 8 * 2 * 5
    for setting, want in (("retrieved", {"bm25>none", "dense>none"}), ("noisy", {"bm25>none", "dense>none"})):
        assert set(df[df.setting == setting]["retriever"]) == want
    assert len(df[df.setting == "oracle"]) == 16
    # the passages of a row are the ones its retriever ranked
    dense = df[(df.setting == "retrieved") & (df.retriever == "dense>none")]
    assert dense["r_nDCG@10"].notna().all()

    # report: main tables on one retriever, then both compared; numbers equal a direct pandas mean
    found = tables(df)
    assert found["clusters"]["n"].sum() == 8 * 2  # one retriever's retrieved rows, not both
    table = retriever_table(df).set_index(["retriever", "variant"])
    want = df[(df.setting == "retrieved") & (df.retriever == "dense>none") & (df.variant == "full")]["m_match"].mean()
    assert table.loc[("dense>none", "full"), "Match"].startswith(f"{want:.3f}")
    paired = retriever_comparison(df).set_index("change")
    wide = df[df.setting == "retrieved"].pivot_table(index="query_id", columns=["retriever", "variant"],
                                                     values="m_match")
    main, other = "bm25>none", "dense>none"  # no splade>minilm here: the most used (a tie: the first)
    row = paired.loc[f"retriever {other} instead of {main} (vanilla)"]
    assert row["mean"] == pytest.approx((wide[(other, "vanilla")] - wide[(main, "vanilla")]).mean())
    assert paired.loc[f"adapter full instead of vanilla ({main})", "n"] == 8
    shown = filtered(df)  # the dashboards' default: the main retriever (and every oracle row)
    assert set(shown[shown.setting != "oracle"]["retriever"]) == {main} and (shown.setting == "oracle").sum() == 16


def test_a_schema_2_store_is_read_and_upgraded_with_each_rows_retriever(tmp_path):
    from mdrag.evaluation.store import V3_COLUMNS

    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE mdrag_meta (name TEXT PRIMARY KEY, value TEXT)")
    db.execute("INSERT INTO mdrag_meta VALUES ('schema', '2')")
    db.execute("CREATE TABLE runs (run_id TEXT PRIMARY KEY, created REAL, config TEXT)")
    old = [c for c in V3_COLUMNS if c != "retriever"]
    db.execute(f"CREATE TABLE results ({', '.join(old)})")
    for run, retriever in (("r1", "splade"), ("r2", "bm25")):
        db.execute("INSERT INTO runs VALUES (?, 0, ?)", (run, json.dumps({"retriever": retriever,
                                                                          "reranker": "minilm"})))
        row = {c: None for c in old} | {"key": f"k-{run}", "run_id": run, "setting": "retrieved",
                                        "metrics": "{}", "retrieval": "{}", "passages": "[]", "gold": "[]"}
        db.execute(f"INSERT INTO results VALUES ({', '.join('?' for _ in old)})", [row[c] for c in old])
    db.commit()
    db.close()
    before = path.read_bytes()
    frame = ResultsStore(path, read_only=True).frame()
    assert dict(zip(frame["key"], frame["retriever"], strict=True)) == {"k-r1": "splade>minilm",
                                                                        "k-r2": "bm25>minilm"}
    assert path.read_bytes() == before  # read-only: nothing written
    merged = ResultsStore(tmp_path / "new.sqlite")  # merged into a schema-3 store: each row keeps its retriever
    assert merged.merge_from(ResultsStore(path, read_only=True))["added"] == 2
    assert merged.get("k-r2")["retriever"] == "bm25>minilm" and path.read_bytes() == before
    store = ResultsStore(path)  # writable: upgraded in place; keys that cannot be recomputed are kept
    assert store.get("k-r2")["retriever"] == "bm25>minilm" and store.version == "4"
    assert store.db.execute("SELECT value FROM mdrag_meta WHERE name='schema'").fetchone()[0] == "4"


def test_unknown_retriever_in_the_grid_is_refused_early(grid):
    from mdrag.errors import UnknownNameError

    with pytest.raises(UnknownNameError, match="Unknown retriever 'sparse'"):
        Grid(["evaltiny"], ["vanilla"], retrievers=["sparse"])


@pytest.mark.parametrize("name, source", [("dense-ft", "evaltiny"), ("dense-ft:nowhere", "nowhere")])
def test_a_retriever_without_its_adapted_encoder_is_refused_before_any_cell(grid, name, source):
    from mdrag.errors import MissingModelError

    with pytest.raises(MissingModelError, match=f"train-retriever --domain {source}"):
        Grid(["evaltiny"], ["vanilla"], retrievers=["bm25", name])


class SteadyJudge(FlakyJudge):
    def judge(self, question, answer, prediction):
        return Verdict(0.75, 0.5, 0.9, mass=0.95)


def test_merging_stores_adds_each_row_once_and_prefers_judged_rows(grid, tmp_path, capsys, engine):
    import shutil

    from mdrag.cli import main

    grid.settings = ["retrieved"]
    flaky = ResultsStore(tmp_path / "flaky.sqlite")
    evaluate(grid, flaky, engine, judge=FlakyJudge(), show_progress=False)  # 8 rows, 4 judge failures
    flaky.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    shutil.copy(tmp_path / "flaky.sqlite", tmp_path / "flaky-copy.sqlite")
    grid.settings = ["retrieved", "oracle"]
    steady = ResultsStore(tmp_path / "steady.sqlite")
    evaluate(grid, steady, engine, judge=SteadyJudge(), show_progress=False)  # same 8 keys judged, plus 8 oracle rows
    steady.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    new_answers = {a for (a,) in steady.db.execute("SELECT answer_id FROM results")} - \
        {a for (a,) in flaky.db.execute("SELECT answer_id FROM results")}  # oracle answers may repeat retrieved ones
    assert main(["merge-store", str(tmp_path / "steady.sqlite"), "--into", str(tmp_path / "flaky.sqlite")]) == 0
    assert (f"8 rows added, 8 already there; {len(new_answers)} verdicts added, 4 failed verdicts replaced"
            in capsys.readouterr().out)
    merged = ResultsStore(tmp_path / "flaky.sqlite").frame("flaky-judge")
    assert len(merged) == 16 and merged["key"].is_unique and merged["judge_error"].isna().all()
    assert {r["run_id"] for r in ResultsStore(tmp_path / "flaky.sqlite").runs()} == \
        {r["run_id"] for r in flaky.runs() + steady.runs()}
    again = ResultsStore(tmp_path / "flaky.sqlite").merge_from(ResultsStore(tmp_path / "steady.sqlite",
                                                                            read_only=True))
    assert again == {"added": 0, "replaced": 0, "kept": 16, "verdicts_added": 0, "other_rows_added": 0}
    # the other way round: failed verdicts never replace good ones
    back = steady.merge_from(ResultsStore(tmp_path / "flaky-copy.sqlite", read_only=True))
    assert back == {"added": 0, "replaced": 0, "kept": 8, "verdicts_added": 0, "other_rows_added": 0}
    assert steady.frame("flaky-judge")["judge_error"].isna().all()
    assert main(["merge-store", str(tmp_path / "steady.sqlite"), "--into", str(tmp_path / "steady.sqlite")]) == 2


def test_the_order_of_adaptation_is_compared_on_the_adapted_retriever():
    import numpy as np
    import pandas as pd

    from mdrag.evaluation.report import retriever_vs_adapter

    rng = np.random.default_rng(0)
    adapted = "dense-ft:nq_open>minilm"
    rows = [{"domain": "nq_open", "query_id": f"q{i}", "setting": "retrieved", "retriever": r, "variant": v,
             "m_match": float(rng.integers(0, 2))}
            for i in range(12) for r in ("splade>minilm", adapted) for v in ("vanilla", "qk_att", "qk_att_2p")]
    df = pd.DataFrame(rows)
    table = retriever_vs_adapter(df).set_index("change")
    wide = df.pivot_table(index="query_id", columns=["retriever", "variant"], values="m_match")
    row = table.loc[f"order: two-phase qk_att_2p instead of independent qk_att (both on {adapted})"]
    assert row["n"] == 12 and row["domains"] == "nq_open"
    assert row["mean"] == pytest.approx((wide[(adapted, "qk_att_2p")]
                                                            - wide[(adapted, "qk_att")]).mean())
    assert not [c for c in table.index if c.startswith("order:") and "(both on splade" in c]


def test_report_command_reads_a_store_and_filters_domains(grid, tmp_path, capsys, engine):
    from mdrag.cli import main

    grid.settings = ["retrieved"]
    path = tmp_path / "r.sqlite"
    evaluate(grid, ResultsStore(path), engine, show_progress=False)
    assert main(["report", "--store", str(path), "--domains", "evaltiny"]) == 0
    out = capsys.readouterr().out
    assert "## Per cluster and variant, retrieved passages" in out and "| vanilla" in out
    assert main(["report", "--store", str(path), "--domains", "nq_open"]) == 2
    assert "no results for nq_open" in capsys.readouterr().err
    assert main(["report", "--store", str(path), "--domains", "atlantis"]) == 2
    assert "Unknown domain" in capsys.readouterr().err


def test_a_run_in_another_dtype_says_it_reuses_their_answers(tmp_path):
    from mdrag.evaluation.runner import dtype_note

    store = ResultsStore(tmp_path / "r.sqlite")
    assert dtype_note(store, "float32") is None  # an empty store: nothing to resume
    store.add_run("run-a", {"generation": {"generator": "g", "dtype": "bfloat16"}})
    store.add_run("run-b", {"generation": {"generator": "endpoint:x", "dtype": "endpoint"}})
    assert dtype_note(store, "bfloat16") is None
    note = dtype_note(store, "float32")
    assert "bfloat16" in note and "reuses theirs" in note and "--own-dtype" in note
    assert "answers every cell again in float32" in dtype_note(store, "float32", own_dtype=True)


def test_a_run_in_another_dtype_reuses_answered_cells_and_answers_only_new_ones(grid, tmp_path, engine,
                                                                                 tiny_generator_dir):
    """The issue's "existing rows are reused where the questions overlap" across machines: a bf16 run over a
    float32 store generates only the cells nobody answered (a larger --limit, another setting) and stores no
    second answer for the others, so the CPU time goes to new questions."""
    from mdrag.engine import Engine, Settings

    grid.settings, grid.limit = ["retrieved"], 5
    store = ResultsStore(tmp_path / "r.sqlite")
    assert evaluate(grid, store, engine, show_progress=False)["generated"] == 5
    before = store.answers_frame().set_index("key")["answer"]
    bf16 = Engine(Settings(dtype="bfloat16", generator=str(tiny_generator_dir)))
    grid.limit, grid.settings = None, ["retrieved", "oracle"]
    counts = evaluate(grid, store, bf16, show_progress=False)
    assert counts == {"generated": 3 + 8, "cached": 5, "reused": 5}
    rows = store.answers_frame()
    assert len(rows) == 16 and rows.set_index("key")["answer"].reindex(before.index).equals(before)
    assert len(store.frame()) == 16  # every cell once: nothing to de-duplicate
    made_in = {r["run_id"]: r["config"]["generation"]["dtype"] for r in store.runs()}
    assert sorted(rows["run_id"].map(made_in).value_counts().items()) == [("bfloat16", 11), ("float32", 5)]
    # resuming the bf16 run reuses its own rows by key (cached, not reused)
    assert evaluate(grid, store, bf16, show_progress=False) == {"generated": 0, "cached": 16, "reused": 5}


def test_one_answer_per_cell_keeps_the_first_of_each_cell_and_every_row_of_distinct_cells(tmp_path):
    """Answer rows read as a frame: the same oracle cell under two retrievers is one cell (gold passages: the same
    prompt), retrieved rows under two retrievers are two; a third answer to one cell, stored last, goes; rows of
    other questions, prompts or settings all stay, in their stored order."""
    import pandas as pd

    store = ResultsStore(tmp_path / "r.sqlite")
    rows = [("q1", "oracle", "p1", "bm25", 3.0), ("q1", "oracle", "p1", "e5", 1.0),  # one cell: the first stored
            ("q1", "retrieved", "p2", "bm25", 2.0), ("q1", "retrieved", "p2", "e5", 4.0),  # two cells
            ("q1", "retrieved", "p2", "bm25", 5.0),  # bm25's cell again, later: dropped
            ("q2", "oracle", "p3", "bm25", 0.5), ("q1", "oracle", "p4", "bm25", 6.0)]  # other question / prompt
    df = pd.DataFrame([{"domain": "d", "query_id": q, "setting": s, "prompt_hash": p, "variant": "vanilla",
                        "retriever": r, "run_id": "run", "created": t} for q, s, p, r, t in rows])
    kept = store.one_answer_per_cell(df)
    assert kept["created"].tolist() == [1.0, 2.0, 4.0, 0.5, 6.0]


def test_a_question_answered_again_in_another_dtype_counts_once(grid, tmp_path, engine, tiny_generator_dir):
    """A later run in another dtype with --own-dtype regenerates its cells (their keys hold the dtype): the
    store keeps both answers, every view counts the cell once (the first stored answer), and a run of another
    generator is another experiment, kept beside it."""
    from mdrag.engine import Engine, Settings
    from mdrag.evaluation.dashboard import means_with_ci

    grid.settings = ["retrieved"]
    store = ResultsStore(tmp_path / "r.sqlite")
    evaluate(grid, store, engine, show_progress=False)
    first = store.frame().set_index("query_id")["answer"]
    bf16 = Engine(Settings(dtype="bfloat16", generator=str(tiny_generator_dir)))
    assert evaluate(grid, store, bf16, show_progress=False, own_dtype=True)["generated"] == 8
    assert len(store.answers_frame()) == 16
    once = store.frame()
    assert len(once) == 8 and once.set_index("query_id")["answer"].equals(first)
    assert means_with_ci(once, "m_match", ["variant"])["n"].tolist() == [8]  # a mean over 8 questions, not 16
    # the report names the dtype each counted answer was made in, and how the two dtypes' answers compare
    from mdrag.evaluation.report import dtype_table, dtype_twin_line

    rows = store.answers_frame()
    assert sorted(rows["dtype"].value_counts().items()) == [("bfloat16", 8), ("float32", 8)]
    table = dtype_table(once).set_index("variant")
    assert table.loc["vanilla", "n"] == 8 and table.loc["vanilla", "float32"] == 8
    assert "bfloat16" not in table or table.loc["vanilla", "bfloat16"] == 0
    twins = store.dtype_twins()
    by = twins.pivot_table(index="query_id", columns="dtype", values="answer", aggfunc="first")
    same = int((by["bfloat16"] == by["float32"]).sum())
    line = dtype_twin_line(twins)
    assert len(twins) == 16 and ": 8; the same answer text in " + str(same) + " (" in line
    assert "the same Match in " in line and " of 8 (" in line
    # the same rows under another generator's fingerprint are another experiment: both kept
    later = max(store.runs(), key=lambda r: r["created"])
    config = {**later["config"], "generation": {**later["config"]["generation"], "generator": "another-model"}}
    with store.db:
        store.db.execute("UPDATE runs SET config=? WHERE run_id=?", (json.dumps(config), later["run_id"]))
    assert len(store.frame()) == 16
