"""Builders that turn each raw source (../shared/data/raw, see SOURCES.md) into normalised records.

Each builder returns (passages, queries) for one domain. Split sizes are fixed here and documented in
the README; PubMedQA keeps its official 500-id test list and TAT-QA its official (gold) test set.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Iterable
from pathlib import Path

from mdrag.data.chunking import Chunk, chunk_words, normalise_space
from mdrag.data.schema import Passage, Query
from mdrag.data.splits import assign_splits

Built = tuple[list[Passage], list[Query]]


def _overlapping(chunks: list[Chunk], start: int, end: int) -> list[int]:
    return [k for k, c in enumerate(chunks) if c.start < end and start < c.end]


def _containing(chunks: list[Chunk], start: int, end: int) -> list[int]:
    return [k for k, c in enumerate(chunks) if c.start <= start and end <= c.end]


def gold_chunks_for_span(chunks: list[Chunk], start: int, end: int) -> list[int]:
    """Chunks holding the whole answer span; if it is longer than the overlap and no chunk holds it
    whole, every chunk that holds part of it."""
    return _containing(chunks, start, end) or _overlapping(chunks, start, end)


def build_nq_open(raw: Path) -> Built:
    """NQ-open (lost-in-the-middle oracle file): 100-word Wikipedia passages, kept as they are."""
    with gzip.open(raw / "nq_open" / "nq-open-oracle.jsonl.gz", "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    passages: dict[tuple[str, str], Passage] = {}
    queries = []
    splits = assign_splits([f"nq-q{i}" for i in range(len(rows))], n_test=500, n_dev=300)
    for i, row in enumerate(rows):
        ctx = row["ctxs"][0]
        key = (ctx["title"], normalise_space(ctx["text"]))
        if key not in passages:
            passages[key] = Passage(f"nq-p{len(passages)}", key[0], key[1], f"nq-p{len(passages)}")
        qid = f"nq-q{i}"
        queries.append(
            Query(qid, row["question"], list(row["answers"]), [passages[key].id], "short", splits[qid])
        )
    return list(passages.values()), queries


def build_pubmedqa(raw: Path) -> Built:
    """PubMedQA (PQA-L): each abstract is chunked; all chunks of a question's abstract are gold
    (the yes/no decision needs the whole abstract). Official 500-id test list; 100 dev, 400 train."""
    data = json.loads((raw / "pubmedqa" / "ori_pqal.json").read_text())
    test_ids = set(json.loads((raw / "pubmedqa" / "test_ground_truth.json").read_text()))
    rest = assign_splits([p for p in data if p not in test_ids], n_test=0, n_dev=100)
    passages, queries = [], []
    for pmid, row in data.items():
        chunks = chunk_words(" ".join(row["CONTEXTS"]))
        ids = [f"pubmedqa-{pmid}-c{k}" for k in range(len(chunks))]
        passages += [Passage(pid, "", c.text, f"pubmed-{pmid}") for pid, c in zip(ids, chunks, strict=True)]
        queries.append(
            Query(
                f"pubmedqa-{pmid}",
                row["QUESTION"],
                [row["final_decision"]],
                ids,
                "yes-no",
                "test" if pmid in test_ids else rest[pmid],
                long_answer=normalise_space(row["LONG_ANSWER"]),
                meta={"decision": row["final_decision"]},
            )
        )
    return passages, queries


def build_covidqa(raw: Path) -> Built:
    """CovidQA: 98 full papers chunked (100 words, 20 overlap, title prefixed); the gold passage is the
    chunk holding the answer span given by `answer_start`. 500 test, 200 dev, rest train."""
    data = json.loads((raw / "covidqa" / "200423_covidQA.json").read_text())["data"]
    passages, queries, pending = [], [], []
    for doc in data:
        para = doc["paragraphs"][0]
        context, doc_id = para["context"], str(para["document_id"])
        title = normalise_space(context.split("\n", 1)[0])
        chunks = chunk_words(context)
        ids = [f"covidqa-{doc_id}-c{k}" for k in range(len(chunks))]
        passages += [Passage(pid, title, c.text, f"covidqa-{doc_id}") for pid, c in zip(ids, chunks, strict=True)]
        for qa in para["qas"]:
            ans = qa["answers"][0]
            text = ans["text"].strip()
            start = ans["answer_start"] + (len(ans["text"]) - len(ans["text"].lstrip()))
            if context[start : start + len(text)] != text:  # offsets off: find the text instead
                start = context.find(text)
            gold = gold_chunks_for_span(chunks, start, start + len(text)) if start >= 0 else []
            kind = "long" if len(text.split()) > 20 else "short"
            pending.append((f"covidqa-{qa['id']}", qa["question"], normalise_space(text), [ids[k] for k in gold], kind))
    splits = assign_splits([p[0] for p in pending], n_test=500, n_dev=200)
    for qid, question, answer, gold, kind in pending:
        queries.append(Query(qid, normalise_space(question), [answer], gold, kind, splits[qid]))
    return passages, queries


def _format_number(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def linearise_table(table: list[list[str]]) -> str:
    """One line per row, cells joined by ' | ' (empty cells dropped)."""
    rows = (" | ".join(normalise_space(c) for c in row if normalise_space(c)) for row in table)
    return "\n".join(r for r in rows if r)


def _tatqa_doc(doc: dict) -> tuple[str, dict[str, tuple[int, int]]]:
    """The table linearised followed by its paragraphs; returns the text and each unit's char range."""
    parts, units, pos = [], {}, 0
    for name, text in [("table", linearise_table(doc["table"]["table"]))] + [
        (str(p["order"]), normalise_space(p["text"])) for p in sorted(doc["paragraphs"], key=lambda p: p["order"])
    ]:
        units[name] = (pos, pos + len(text))
        parts.append(text)
        pos += len(text) + 1
    return "\n".join(parts), units


def _tatqa_answers(q: dict) -> list[str]:
    answer = q["answer"]
    if isinstance(answer, list):
        return [", ".join(normalise_space(str(a)) for a in answer)]
    return [_format_number(answer)]


def build_tatqa(raw: Path) -> Built:
    """TAT-QA: each report's table (linearised, one row per line) and paragraphs form one document,
    chunked 100/20. Gold = chunks containing the answer text (span answers), otherwise the chunks
    covering the evidence the source names (the table, `rel_paragraphs`). Official test set = test;
    the official dev set gives 300 dev and the rest train."""
    passages, pending = [], []
    for official, fname in [("dev", "tatqa_dataset_dev.json"), ("test", "tatqa_dataset_test_gold.json")]:
        for doc in json.loads((raw / "tatqa" / fname).read_text()):
            text, units = _tatqa_doc(doc)
            chunks = chunk_words(text)
            doc_id = f"tatqa-{doc['table']['uid']}"
            ids = [f"{doc_id}-c{k}" for k in range(len(chunks))]
            passages += [Passage(pid, "", c.text, doc_id) for pid, c in zip(ids, chunks, strict=True)]
            for q in doc["questions"]:
                answers = _tatqa_answers(q)
                gold: set[int] = set()
                if q["answer_type"] in ("span", "multi-span"):
                    spans = q["answer"] if isinstance(q["answer"], list) else [q["answer"]]
                    for span in spans:
                        at = text.find(normalise_space(str(span)))
                        if at >= 0:
                            gold.update(_containing(chunks, at, at + len(normalise_space(str(span)))))
                if not gold:
                    evidence = (["table"] if "table" in q["answer_from"] else []) + [
                        p for p in q.get("rel_paragraphs", []) if p in units
                    ]
                    for unit in evidence:
                        gold.update(_overlapping(chunks, *units[unit]))
                meta = {k: q[k] for k in ("answer_type", "answer_from", "scale", "derivation") if k in q}
                if isinstance(q["answer"], list):
                    meta["answer_parts"] = [normalise_space(str(a)) for a in q["answer"]]
                pending.append((official, f"tatqa-{q['uid']}", normalise_space(q["question"]), answers,
                                [ids[k] for k in sorted(gold)], meta))
    dev_split = assign_splits([p[1] for p in pending if p[0] == "dev"], n_test=0, n_dev=300)
    queries = [
        Query(qid, question, answers, gold, "short", "test" if official == "test" else dev_split[qid], meta=meta)
        for official, qid, question, answers, gold, meta in pending
    ]
    return passages, queries


def build_clapnq(raw: Path) -> Built:
    """ClapNQ dev (answerable + unanswerable): Wikipedia passages chunked 100/20 when longer than 120
    words. Gold = chunks overlapping the annotators' selected sentences; for unanswerable questions the
    gold ids are the passage the source pairs with the question (it does not hold the answer).
    Per group: half test, 1/6 dev, the rest train."""
    docs: dict[tuple[str, str], list[tuple[str, Chunk]]] = {}
    passages, queries = [], []
    for kind, fname in [("long", "clapnq_dev_answerable.jsonl"), ("unanswerable", "clapnq_dev_unanswerable.jsonl")]:
        with (raw / "clapnq" / fname).open(encoding="utf-8") as f:
            rows = [json.loads(line) for line in f]
        splits = assign_splits([f"clapnq-{r['id']}" for r in rows], n_test=len(rows) // 2, n_dev=len(rows) // 6)
        for row in rows:
            src = row["passages"][0]
            text = normalise_space(src["text"])
            key = (src["title"], text)
            if key not in docs:
                doc_id = f"clapnq-d{len(docs)}"
                chunks = chunk_words(text)
                docs[key] = [(f"{doc_id}-c{k}", c) for k, c in enumerate(chunks)]
                passages += [Passage(pid, src["title"], c.text, doc_id) for pid, c in docs[key]]
            chunk_list = [c for _, c in docs[key]]
            out = row["output"][0]
            gold: set[int] = set()
            for sentence in out.get("selected_sentences", []):
                at = text.find(normalise_space(sentence))
                if at >= 0:
                    gold.update(_overlapping(chunk_list, at, at + len(normalise_space(sentence))))
            if not gold:
                gold = set(range(len(chunk_list)))
            answer = normalise_space(out.get("answer", ""))
            qid = f"clapnq-{row['id']}"
            queries.append(
                Query(qid, normalise_space(row["input"]), [answer] if answer else [],
                      [docs[key][k][0] for k in sorted(gold)], kind, splits[qid], long_answer=answer)
            )
    return passages, queries


BUILDERS: dict[str, Callable[[Path], Built]] = {
    "nq_open": build_nq_open,
    "pubmedqa": build_pubmedqa,
    "covidqa": build_covidqa,
    "tatqa": build_tatqa,
    "clapnq": build_clapnq,
}


def iter_licences(raw: Path) -> Iterable[tuple[str, Path]]:
    for name in BUILDERS:
        yield name, raw / name / "LICENSE"
