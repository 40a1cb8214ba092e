"""Your own data: JSONL domains validated row by row (file and line in every error, common field names
accepted), one bad domain never breaking the others, and the BEIR layout imported directly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import registered_domain, write_jsonl

from mdrag.data.user_files import DomainFileError, read_beir_domain, read_jsonl_domain

PASSAGES = [{"id": "p1", "title": "Paris", "text": "Paris is the capital of France."},
            {"_id": "p2", "contents": "Rome is the capital of Italy."}]


def _files(tmp_path: Path, queries: list, passages: list = PASSAGES) -> tuple[Path, Path]:
    return write_jsonl(tmp_path / "q.jsonl", queries), write_jsonl(tmp_path / "p.jsonl", passages)


def test_common_field_names_are_accepted_and_other_fields_kept_in_meta(tmp_path):
    q, p = _files(tmp_path, [{"qid": "a", "question": "capital of France?", "answer": "Paris",
                              "gold_passage_ids": ["p1"], "source": "mine"},
                             {"id": "b", "query": "capital of Italy?", "answers": ["Rome"], "positive_ids": "p2",
                              "split": "dev"}])
    passages, queries = read_jsonl_domain(q, p)
    assert [x.id for x in passages] == ["p1", "p2"] and passages[1].text.startswith("Rome")
    a, b = queries
    assert (a.text, a.answers, a.gold_ids, a.meta) == ("capital of France?", ["Paris"], ["p1"], {"source": "mine"})
    assert (b.gold_ids, b.split) == (["p2"], "dev")


@pytest.mark.parametrize("rows, match", [
    ([{"id": "a", "answers": ["x"]}], r"q.jsonl:1: no 'text' field \(accepted: text, question, query\); this row "
                                      r"has answers, id"),
    ([{"id": "a", "text": "ok"}, {"id": "b", "text": "?", "gold_ids": ["p9"]}],
     r"q.jsonl:2: gold passage ids \['p9'\] are not in the passages file"),
    ([{"id": "a", "text": "ok", "answer_type": "essay"}], "q.jsonl:1: answer_type 'essay' is not one of"),
    ([{"id": "a", "text": "ok", "split": "holdout"}], "q.jsonl:1: split 'holdout' is not one of"),
    ([{"id": "a", "text": "ok"}, {"id": "a", "text": "again"}], "q.jsonl:2: query id 'a' repeats line 1"),
    ([{"id": "a", "text": "ok", "answers": {"x": 1}}], "q.jsonl:1: 'answers' must be a list of strings"),
    ([{"id": "a", "text": "ok", "question": "other"}], "q.jsonl:1: fields .* all mean 'text' and disagree"),
])
def test_bad_rows_name_the_file_and_line(tmp_path, rows, match):
    q, p = _files(tmp_path, rows)
    with pytest.raises(DomainFileError, match=match):
        read_jsonl_domain(q, p)


def test_bad_json_and_bad_passages_name_the_line(tmp_path):
    q, p = _files(tmp_path, [{"id": "a", "text": "ok"}])
    p.write_text(p.read_text() + '{"id": "p3", "text": \n')
    with pytest.raises(DomainFileError, match=r"p.jsonl:3: not valid JSON"):
        read_jsonl_domain(q, p)
    p.write_text('{"id": "p1"}\n')
    with pytest.raises(DomainFileError, match=r"p.jsonl:1: no 'text' field"):
        read_jsonl_domain(q, p)


def test_a_registered_domain_with_other_field_names_loads(tmp_path):
    with registered_domain(tmp_path, "mine", [{"id": "a", "question": "capital of France?", "answer": "Paris",
                                               "gold_passage_ids": ["p1"]}], PASSAGES, "custom") as domain:
        assert domain.queries[0].gold_ids == ["p1"] and domain.by_id["p2"].text.startswith("Rome")


def _beir(folder: Path, qrels: str) -> Path:
    folder.mkdir()
    write_jsonl(folder / "corpus.jsonl", [{"_id": "d1", "title": "Paris", "text": "Paris is in France."},
                                          {"_id": "d2", "title": "", "text": "Rome is in Italy."}])
    write_jsonl(folder / "queries.jsonl", [{"_id": "q1", "text": "where is paris", "metadata": {"answer": "France"}},
                                           {"_id": "q2", "text": "where is rome"},
                                           {"_id": "q3", "text": "not in any qrels"}])
    (folder / "qrels").mkdir()
    (folder / "qrels" / "test.tsv").write_text(qrels)
    return folder


def test_beir_folders_import_with_gold_from_qrels_and_optional_answers(tmp_path):
    folder = _beir(tmp_path / "beir", "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t2\nq2\td1\t0\n")
    passages, queries = read_beir_domain(folder)
    assert [p.id for p in passages] == ["d1", "d2"]
    by_id = {q.id: q for q in queries}
    assert set(by_id) == {"q1", "q2"}  # q3 has no judgement
    assert by_id["q1"].answers == ["France"] and by_id["q1"].gold_ids == ["d1"] and by_id["q1"].split == "test"
    assert by_id["q2"].answers == [] and by_id["q2"].gold_ids == ["d2"]  # score 0 is not gold


def test_beir_errors_name_the_file_and_line(tmp_path):
    folder = _beir(tmp_path / "beir", "query-id\tcorpus-id\tscore\nq1\td9\t1\n")
    with pytest.raises(DomainFileError, match=r"qrels/test.tsv:2: corpus id 'd9' is not in the corpus"):
        read_beir_domain(folder)
    (folder / "corpus.jsonl").unlink()
    with pytest.raises(DomainFileError, match=r"no corpus\.jsonl"):
        read_beir_domain(folder)


def test_one_bad_domain_never_breaks_the_others(tmp_path):
    good_q, good_p = _files(tmp_path, [{"id": "a", "question": "capital of France?", "gold_ids": ["p1"]}])
    write_jsonl(tmp_path / "bad.jsonl", [{"id": "x", "answers": ["y"]}])
    _beir(tmp_path / "beir", "q1\td1\t1\n")
    (tmp_path / "domains.json").write_text(json.dumps([
        {"name": "good", "queries": "q.jsonl", "passages": "p.jsonl"},
        {"name": "broken", "queries": "bad.jsonl", "passages": "p.jsonl"},
        {"name": "missing", "queries": "nowhere.jsonl", "passages": "p.jsonl"},
        {"name": "scifake", "beir": "beir"}]))
    env = {**os.environ, "MDRAG_DOMAINS_FILE": str(tmp_path / "domains.json")}
    res = subprocess.run([sys.executable, "-m", "mdrag", "domains"], capture_output=True, text=True, env=env,
                         timeout=300)
    assert res.returncode == 2 and "Traceback" not in res.stderr + res.stdout
    lines = {line.split()[0]: line for line in res.stdout.splitlines()}
    for shipped in ("nq_open", "pubmedqa", "covidqa", "tatqa", "clapnq", "good", "scifake"):
        assert "passages" in lines[shipped], res.stdout
    assert "bad.jsonl:1: no 'text' field" in lines["broken"]
    assert "file not found" in lines["missing"]
    assert good_q.exists() and good_p.exists()
