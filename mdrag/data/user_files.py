"""Your own corpora: JSONL domain files and the BEIR layout, read row by row with the file and line in every error.

Field names vary between datasets, so each field accepts the common spellings (`question` or `query` for a
query's `text`, `_id` for `id`, `gold_passage_ids` or `positive_ids` for `gold_ids`, ...). A row missing a
required field, a field of the wrong type, a value outside the known answer types or splits, a duplicate id or a
gold id that names no passage is an error naming the file, the line and the fields the row has. Fields that
are none of these are kept in the query's `meta` (and counted), never silently taken for something else.

BEIR (`corpus.jsonl`, `queries.jsonl`, `qrels/<split>.tsv`), the layout most retrieval datasets ship in:
passages from the corpus, each split's questions from its qrels (relevance > 0 marks a gold passage),
answers optional (a query's `metadata.answer(s)` when present; without one, Match and the judge have nothing
to compare with, and the question serves retrieval metrics and the analysis views).
"""

from __future__ import annotations

import csv
import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mdrag.data.schema import ANSWER_TYPES, SPLITS, Passage, Query
from mdrag.errors import BenchmarkError

PASSAGE_FIELDS = {"id": ("id", "_id", "pid", "passage_id"), "text": ("text", "contents", "content", "passage", "body"),
                  "title": ("title",), "doc_id": ("doc_id", "document_id", "doc")}
QUERY_FIELDS = {"id": ("id", "_id", "qid", "query_id"), "text": ("text", "question", "query"),
                "answers": ("answers", "answer", "gold_answers"),
                "gold_ids": ("gold_ids", "gold_passage_ids", "positive_ids", "positive_passage_ids", "gold_passages"),
                "answer_type": ("answer_type",), "split": ("split",), "long_answer": ("long_answer",),
                "meta": ("meta", "metadata")}
REQUIRED = {"passage": ("id", "text"), "query": ("id", "text")}


class DomainFileError(BenchmarkError):
    pass


def read_rows(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) per non-empty line of a JSONL file (gzip when it ends in .gz)."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise DomainFileError(f"{path}:{number}: not valid JSON ({err.msg})") from err
                if not isinstance(row, dict):
                    raise DomainFileError(f"{path}:{number}: each line must be a JSON object, got "
                                          f"{type(row).__name__}")
                yield number, row
    except (OSError, UnicodeDecodeError) as err:
        raise DomainFileError(f"{path}: cannot be read ({err})") from err


def _pick(row: dict, fields: dict[str, tuple[str, ...]], kind: str, where: str) -> tuple[dict, dict]:
    """Our field -> value from the first accepted spelling present; the row's other fields apart."""
    found, used = {}, set()
    for ours, spellings in fields.items():
        present = [s for s in spellings if s in row]
        if len(present) > 1 and len({json.dumps(row[s], sort_keys=True) for s in present}) > 1:
            raise DomainFileError(f"{where}: fields {present} all mean '{ours}' and disagree; keep one")
        if present:
            found[ours] = row[present[0]]
            used.update(present)
    for ours in REQUIRED[kind]:
        if found.get(ours) in (None, ""):
            raise DomainFileError(f"{where}: no '{ours}' field (accepted: {', '.join(fields[ours])}); this row has "
                                  f"{', '.join(sorted(row)) or 'no fields'}")
    return found, {k: v for k, v in row.items() if k not in used}


def _strings(value: Any, what: str, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str | int):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str | int) and not isinstance(v, bool) for v in value):
        raise DomainFileError(f"{where}: '{what}' must be a list of strings, got {json.dumps(value)[:80]}")
    return [str(v) for v in value]


def _records(path: Path, fields: dict[str, tuple[str, ...]], kind: str) -> Iterator[tuple[str, str, dict, dict]]:
    """(where, id, our fields, other fields) per row; an id seen before is an error naming both lines."""
    seen: dict[str, int] = {}
    for number, row in read_rows(path):
        where = f"{path}:{number}"
        f, rest = _pick(row, fields, kind, where)
        rid = str(f["id"])
        if rid in seen:
            raise DomainFileError(f"{where}: {kind} id '{rid}' repeats line {seen[rid]}")
        seen[rid] = number
        yield where, rid, f, rest


def read_passages(path: Path) -> list[Passage]:
    passages = []
    for where, pid, f, _ in _records(path, PASSAGE_FIELDS, "passage"):
        if not isinstance(f["text"], str):
            raise DomainFileError(f"{where}: 'text' must be a string")
        passages.append(Passage(pid, str(f.get("title") or ""), f["text"], str(f.get("doc_id") or pid)))
    return passages


def read_queries(path: Path, passage_ids: set[str]) -> tuple[list[Query], int]:
    """Queries and the number of rows that carried fields kept only in `meta`."""
    queries, extra_rows = [], 0
    for where, qid, f, rest in _records(path, QUERY_FIELDS, "query"):
        answers = _strings(f.get("answers"), "answers", where)
        gold = _strings(f.get("gold_ids"), "gold_ids", where)
        unknown = sorted(set(gold) - passage_ids)
        if unknown:
            raise DomainFileError(f"{where}: gold passage ids {unknown[:3]} are not in the passages file")
        answer_type = f.get("answer_type") or "short"  # no answers and no type: a retrieval-only question
        if answer_type not in ANSWER_TYPES:
            raise DomainFileError(f"{where}: answer_type '{answer_type}' is not one of {', '.join(ANSWER_TYPES)}")
        split = f.get("split") or "test"
        if split not in SPLITS:
            raise DomainFileError(f"{where}: split '{split}' is not one of {', '.join(SPLITS)}")
        meta = f.get("meta") if isinstance(f.get("meta"), dict) else {}
        if rest:
            extra_rows += 1
            meta = {**meta, **rest}
        queries.append(Query(qid, str(f["text"]), answers, gold, answer_type, split, str(f.get("long_answer") or ""),
                             meta))
    return queries, extra_rows


def read_jsonl_domain(queries: Path, passages: Path) -> tuple[list[Passage], list[Query]]:
    found = read_passages(Path(passages))
    qs, _ = read_queries(Path(queries), {p.id for p in found})
    return found, qs


def read_beir_domain(folder: Path) -> tuple[list[Passage], list[Query]]:
    """A BEIR folder: corpus.jsonl(.gz), queries.jsonl(.gz), qrels/{train,dev,test}.tsv."""
    folder = Path(folder)

    def one(name: str) -> Path:
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
        raise DomainFileError(f"{folder}: no {name} (a BEIR folder holds corpus.jsonl, queries.jsonl and "
                              "qrels/test.tsv)")

    passages = read_passages(one("corpus.jsonl"))
    ids = {p.id for p in passages}
    qrels = sorted((folder / "qrels").glob("*.tsv")) if (folder / "qrels").is_dir() else []
    if not qrels:
        raise DomainFileError(f"{folder}: no qrels/<split>.tsv file")
    gold: dict[str, dict[str, list[str]]] = {}
    for path in qrels:
        split = {"validation": "dev", "val": "dev"}.get(path.stem, path.stem)
        if split not in SPLITS:
            raise DomainFileError(f"{path}: split '{path.stem}' is not one of train, dev (or validation), test")
        with path.open(encoding="utf-8") as f:
            for number, cells in enumerate(csv.reader(f, delimiter="\t"), 1):
                if not cells or (number == 1 and not cells[-1].lstrip("-").isdigit()):
                    continue  # the header line
                if len(cells) < 3 or not cells[-1].lstrip("-").isdigit():
                    raise DomainFileError(f"{path}:{number}: expected 'query-id<TAB>corpus-id<TAB>score'")
                qid, pid, score = cells[0], cells[-2], int(cells[-1])
                if pid not in ids:
                    raise DomainFileError(f"{path}:{number}: corpus id '{pid}' is not in the corpus")
                if score > 0:
                    gold.setdefault(qid, {}).setdefault(split, []).append(pid)
    queries: list[Query] = []
    queries_file = one("queries.jsonl")  # located once, not per row
    for number, row in read_rows(queries_file):
        where = f"{queries_file}:{number}"
        f, rest = _pick(row, QUERY_FIELDS, "query", where)
        meta = {**(f.get("meta") or {}), **rest} if isinstance(f.get("meta") or {}, dict) else rest
        answers = _strings(f.get("answers") or meta.get("answer") or meta.get("answers"), "answers", where)
        for split, pids in gold.get(str(f["id"]), {}).items():
            queries.append(Query(str(f["id"]), str(f["text"]), answers, pids, "short", split, "", meta))
    if not queries:
        raise DomainFileError(f"{folder}: no query of queries.jsonl appears in the qrels")
    return passages, queries
