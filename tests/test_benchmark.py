import hashlib
import json

import pytest

from mdrag.config import BENCHMARK_DIR, RAW_DATA_DIR
from mdrag.data.benchmark import build_benchmark, load_domain
from mdrag.data.chunking import normalise_space
from mdrag.data.domains import DOMAINS, register_jsonl_domain, resolve_domain
from mdrag.errors import EmptyCorpusError, UnknownNameError

SHIPPED = ["nq_open", "pubmedqa", "covidqa", "tatqa", "clapnq"]
needs_raw = pytest.mark.skipif(not RAW_DATA_DIR.is_dir(), reason="raw sources (../shared/data/raw) not present")


def test_shipped_files_match_their_manifest_and_stay_small():
    manifest = json.loads((BENCHMARK_DIR / "manifest.json").read_text())
    assert sorted(manifest["domains"]) == sorted(SHIPPED)
    total = 0
    for name, info in manifest["domains"].items():
        for fname, digest in info["sha256"].items():
            data = (BENCHMARK_DIR / name / fname).read_bytes()
            total += len(data)
            assert hashlib.sha256(data).hexdigest() == digest
        assert (BENCHMARK_DIR / "LICENSES" / f"{name}.LICENSE").exists()
    assert total < 50 * 2**20


@needs_raw
def test_rebuild_is_byte_identical_to_the_shipped_benchmark(tmp_path):
    a = build_benchmark(RAW_DATA_DIR, tmp_path / "a")
    b = build_benchmark(RAW_DATA_DIR, tmp_path / "b")
    shipped = json.loads((BENCHMARK_DIR / "manifest.json").read_text())
    for name in SHIPPED:
        assert a["domains"][name]["sha256"] == b["domains"][name]["sha256"] == shipped["domains"][name]["sha256"]


@needs_raw
def test_pubmedqa_test_split_is_the_official_list():
    official = set(json.loads((RAW_DATA_DIR / "pubmedqa" / "test_ground_truth.json").read_text()))
    test = {q.id.removeprefix("pubmedqa-") for q in load_domain("pubmedqa").split("test")}
    assert test == official


@pytest.mark.parametrize("name", SHIPPED)
def test_every_domain_is_well_formed(name):
    d = load_domain(name)
    ids = {p.id for p in d.passages}
    assert len(ids) == len(d.passages)
    assert {q.split for q in d.queries} == {"train", "dev", "test"}
    assert len({q.id for q in d.queries}) == len(d.queries)
    for q in d.queries:
        assert q.gold_ids and set(q.gold_ids) <= ids
        assert q.answer_type in ("short", "long", "yes-no", "unanswerable")
        assert bool(q.answers) == (q.answer_type != "unanswerable")
    if name != "nq_open":  # NQ-open's Wikipedia passages are kept as the source cut them
        assert all(len(p.text.split()) <= 120 for p in d.passages)  # chunked: nothing longer than a window


@pytest.mark.parametrize("name", ["nq_open", "covidqa"])
def test_extractive_answers_lie_in_a_gold_passage(name):
    d = load_domain(name)
    checked = 0
    for q in d.queries:
        answers = [normalise_space(a).lower() for a in q.answers]
        if all(len(a.split()) <= 20 for a in answers):  # longer than the overlap may span two chunks
            checked += 1
            assert any(a in d.by_id[g].text.lower() for a in answers for g in q.gold_ids), q.id
    assert checked > 500


def test_domain_resolution_and_errors():
    assert resolve_domain("general").name == "nq_open"
    assert resolve_domain("Finance").name == "tatqa"
    assert resolve_domain("long-form").name == "clapnq"
    with pytest.raises(UnknownNameError, match="pubmedqa, covidqa"):
        resolve_domain("biomedical")
    with pytest.raises(UnknownNameError) as err:
        resolve_domain("astrology")
    for name in SHIPPED:
        assert name in str(err.value)


def test_register_jsonl_domain_is_one_call(tiny_domain):
    assert tiny_domain.name == "tiny" and len(tiny_domain.passages) == 7
    assert tiny_domain.query_by_id["q1"].gold_ids == ["p2", "p6"]
    assert [q.id for q in tiny_domain.split("dev")] == ["q1"]


def test_empty_corpus_is_a_clear_error(tmp_path):
    (tmp_path / "q.jsonl").write_text('{"id": "q", "text": "x"}\n')
    (tmp_path / "p.jsonl").write_text("")
    register_jsonl_domain("emptydom", tmp_path / "q.jsonl", tmp_path / "p.jsonl")
    try:
        with pytest.raises(EmptyCorpusError, match="empty corpus"):
            load_domain("emptydom")
    finally:
        DOMAINS.pop("emptydom")
