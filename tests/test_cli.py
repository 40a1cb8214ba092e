"""The CLI as a user runs it: a real subprocess, the shipped NQ-open corpus, BM25 and a tiny generator."""

import json
import os
import subprocess
import sys

import pytest


def run_cli(*args, env_extra=None):
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "mdrag", *args], capture_output=True, text=True, env=env, timeout=300)


def test_ask_json_prints_the_full_trace(tiny_generator_dir):
    res = run_cli("ask", "who got the first nobel prize in physics", "--domain", "general", "--retriever", "bm25",
                  "--reranker", "none", "--generator", str(tiny_generator_dir), "--json")
    assert res.returncode == 0, res.stderr
    trace = json.loads(res.stdout)
    assert trace["domain"] == "nq_open" and trace["query_id"] == "nq-q0"
    assert trace["gold_answers"] == ["Wilhelm Conrad Röntgen"]
    assert len(trace["passages"]) == 5 and trace["passages"][0]["is_gold"]
    assert "vanilla" in trace["answers"] and trace["prompt"].count("Document ") == 5


def test_ask_text_shows_scores_gold_mark_prompt_and_timings(tiny_generator_dir):
    res = run_cli("ask", "who got the first nobel prize in physics", "--domain", "general", "--retriever", "bm25",
                  "--reranker", "none", "--generator", str(tiny_generator_dir), "--oracle")
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "GOLD" in out and "Question: who got the first nobel prize in physics" in out
    assert "Timings:" in out and "Answer [vanilla]" in out and "setting: oracle" in out


@pytest.mark.parametrize("args,match", [
    (["ask", "x", "--domain", "astrology"], "Known domains: nq_open (general)"),
    (["ask", "   ", "--domain", "general", "--retriever", "bm25", "--reranker", "none"], "query is empty"),
    (["ask", "x", "--domain", "general", "--retriever", "faiss"], "Unknown retriever 'faiss'"),
    (["attention-summary", "--store", "/nonexistent/r.sqlite"], "No results store"),
    (["evaluate", "--domains", "nq_open", "--variants", "vanilla", "--settings", "sideways", "--store",
      "/tmp/never.sqlite"], "Unknown setting 'sideways'"),
    (["evaluate", "--domains", "nq_open", "--variants", "vanilla", "--judge", "openai:model", "--store",
      "/tmp/never.sqlite"], "write openai:MODEL@BASE_URL"),
    (["judge", "--store", "/nonexistent/r.sqlite"], "No results store"),
    (["report", "--judge", "no-such-judge", "--domains", "nq_open"], "no verdicts from judge 'no-such-judge'"),
])
def test_errors_are_one_readable_line_and_exit_2(args, match):
    res = run_cli(*args)
    assert res.returncode == 2
    assert match in res.stderr and "Traceback" not in res.stderr


def test_report_without_a_store_reads_the_shipped_one_and_names_its_judge(tmp_path):
    res = subprocess.run([sys.executable, "-m", "mdrag", "report", "--domains", "nq_open"], capture_output=True,
                         text=True, timeout=300, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("LLMEval figures: judge ") and "## Judge validity" in res.stdout


@pytest.mark.slow
def test_attention_summary_only_reads_the_store(tmp_path):
    import hashlib
    import shutil

    from mdrag.config import ASSETS_DIR

    store = tmp_path / "shipped.sqlite"
    shutil.copy(ASSETS_DIR / "results" / "results.sqlite", store)
    before = hashlib.sha256(store.read_bytes()).hexdigest()
    res = run_cli("attention-summary", "--store", str(store), "--domains", "nq_open", "--variants", "vanilla",
                  "--settings", "noisy", "--limit", "1")
    assert res.returncode == 0, res.stderr
    assert "gold share" in res.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shipped.sqlite"]  # no -wal / -shm written beside it
    assert hashlib.sha256(store.read_bytes()).hexdigest() == before
