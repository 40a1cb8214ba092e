"""The results store: one SQLite file (WAL mode) with run metadata and one row per
(query, variant, setting) result.

Each row has a key hashing everything that determines it (domain, query, setting, the exact prompt,
variant, generator and adapter fingerprints, decoding settings, judge): identical work is never
recomputed, and a killed run resumes without duplicates because rows are written in transactions and
the key is the primary key. A file that is not SQLite, or a SQLite file that is not an mdrag store,
is refused and never overwritten.

Schema 3 adds `retriever` (first stage > reranker, e.g. "splade>minilm") to each row, for the grid's
retriever dimension. A schema-2 store is upgraded in place when opened for writing (each row gets its run's
retriever, which schema 2 kept only in the run config) and read as if upgraded when opened read-only.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from mdrag.errors import MdragError

SCHEMA_VERSION = "3"
DEFAULT_RETRIEVAL = "splade>minilm"  # the paper's pipeline: SPLADE first stage, then a reranker
COLUMNS = ["key", "run_id", "domain", "cluster", "query_id", "variant", "setting", "retriever", "answer_type",
           "prompt_hash",
           "question", "gold", "passages", "answer", "n_tokens", "seconds", "metrics", "retrieval", "judge",
           "judge_score", "judge3_score", "judge_error", "created"]
_JSON = {"gold", "passages", "metrics", "retrieval"}


class StoreError(MdragError):
    pass


def retrieval_id(retriever: str, reranker: str) -> str:
    """How a row's passages were found: first-stage retriever > reranker."""
    return f"{retriever}>{reranker}"


def run_retrieval(config: dict) -> str:
    """The retrieval id of a run from its config (what a schema-2 row's retriever was: its run's)."""
    return retrieval_id(config.get("retriever", "splade"), config.get("reranker", "minilm"))


def row_key(**parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class ResultsStore:
    def __init__(self, path: Path, read_only: bool = False):
        """`read_only`: for dashboards over a shipped or shared store; never writes, not even WAL files."""
        self.path = Path(path)
        if read_only and not self.path.is_file():
            raise StoreError(f"No results store at {self.path}.")
        if self.path.exists() and self.path.stat().st_size:
            with open(self.path, "rb") as f:
                if f.read(16) != b"SQLite format 3\x00":
                    raise StoreError(f"{self.path} is not a SQLite file; it was left untouched. Pick another path.")
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            target = f"file:{self.path.resolve()}?mode=ro" if read_only else str(self.path)
            self.db = sqlite3.connect(target, timeout=30, check_same_thread=False, uri=read_only)
            tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        except sqlite3.DatabaseError as err:
            raise StoreError(f"{self.path} is a corrupt SQLite file ({err}); it was left untouched.") from None
        if tables and "mdrag_meta" not in tables:
            self.db.close()
            raise StoreError(f"{self.path} is a SQLite file of something else (tables: {sorted(tables)[:5]}); "
                             "it was left untouched.")
        if read_only and not tables:
            raise StoreError(f"{self.path} is an empty SQLite file, not a results store.")
        if not read_only:
            self.db.execute("PRAGMA journal_mode=WAL")
        if not tables:
            self._create()
        version = self.db.execute("SELECT value FROM mdrag_meta WHERE name='schema'").fetchone()
        self.version = version[0] if version else None
        if self.version == "2" and not read_only:
            self._upgrade_from_2()
        elif self.version not in (SCHEMA_VERSION, "2"):
            raise StoreError(f"{self.path} has store schema {self.version}, expected {SCHEMA_VERSION}.")

    def _create(self) -> None:
        with self.db:
            self.db.execute("CREATE TABLE mdrag_meta (name TEXT PRIMARY KEY, value TEXT)")
            self.db.execute("INSERT INTO mdrag_meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
            self.db.execute("CREATE TABLE runs (run_id TEXT PRIMARY KEY, created REAL, config TEXT)")
            cols = ", ".join(f"{c} {'TEXT PRIMARY KEY' if c == 'key' else ''}" for c in COLUMNS)
            self.db.execute(f"CREATE TABLE results ({cols})")
            self.db.execute("CREATE INDEX results_cell ON results (domain, variant, setting)")

    def _upgrade_from_2(self) -> None:
        """Schema 2 -> 3 in one transaction: add `retriever`, filled from each row's run config."""
        with self.db:
            self.db.execute("ALTER TABLE results ADD COLUMN retriever TEXT")
            for run_id, config in self.db.execute("SELECT run_id, config FROM runs").fetchall():
                cfg = json.loads(config)
                self.db.execute("UPDATE results SET retriever=? WHERE run_id=?",
                                (run_retrieval(cfg), run_id))
            self.db.execute("UPDATE results SET retriever=? WHERE retriever IS NULL", (DEFAULT_RETRIEVAL,))
            self.db.execute("UPDATE mdrag_meta SET value=? WHERE name='schema'", (SCHEMA_VERSION,))
        self.version = SCHEMA_VERSION

    def add_run(self, run_id: str, config: dict) -> None:
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO runs VALUES (?, ?, ?)",
                            (run_id, time.time(), json.dumps(config, sort_keys=True)))

    def has(self, key: str) -> bool:
        found = self.db.execute("SELECT 1 FROM results WHERE key=? AND judge_error IS NULL", (key,)).fetchone()
        return found is not None

    def _columns(self) -> list[str]:
        return COLUMNS if self.version == SCHEMA_VERSION else [c for c in COLUMNS if c != "retriever"]

    def get(self, key: str) -> dict | None:
        cols = self._columns()
        cur = self.db.execute(f"SELECT {', '.join(cols)} FROM results WHERE key=?", (key,))
        found = cur.fetchone()
        if found is None:
            return None
        return {c: (json.loads(v) if c in _JSON and isinstance(v, str) else v) for c, v in zip(cols, found,
                                                                                               strict=True)}

    def put_many(self, rows: list[dict]) -> None:
        """Insert rows in one transaction (all or none land); a row with the same key is replaced."""
        marks = ", ".join("?" for _ in COLUMNS)
        values = [tuple(json.dumps(r.get(c), ensure_ascii=False) if c in _JSON else r.get(c) for c in COLUMNS)
                  for r in rows]
        with self.db:
            self.db.executemany(f"INSERT OR REPLACE INTO results ({', '.join(COLUMNS)}) VALUES ({marks})", values)

    def frame(self):
        """All results as a pandas DataFrame, metrics expanded into columns."""
        import pandas as pd

        df = pd.read_sql_query("SELECT * FROM results", self.db)
        if "retriever" not in df:  # a schema-2 store opened read-only: each row's run says
            runs = {r["run_id"]: r["config"] for r in self.runs()}
            df["retriever"] = [run_retrieval(runs.get(r, {})) for r in df["run_id"]]
        for c in _JSON:
            df[c] = df[c].map(lambda v: json.loads(v) if isinstance(v, str) else v)
        metrics = pd.json_normalize(df["metrics"].tolist()).add_prefix("m_") if len(df) else pd.DataFrame()
        retrieval = pd.json_normalize(df["retrieval"].tolist()).add_prefix("r_") if len(df) else pd.DataFrame()
        return pd.concat([df.reset_index(drop=True), metrics, retrieval], axis=1)

    def merge_from(self, other: ResultsStore) -> dict[str, int]:
        """Copy another store's runs and rows into this one in one transaction (grids run elsewhere, e.g. on
        a GPU endpoint, or beside a running grid). Keys identify the work, so merging twice adds nothing; a
        row whose judge failed here is replaced by the other store's judged copy, never the other way round."""
        cols = other._columns()
        runs = other.db.execute("SELECT run_id, created, config FROM runs").fetchall()
        configs = {r[0]: json.loads(r[2]) for r in runs}
        counts = {"added": 0, "replaced": 0, "kept": 0}
        mine = dict(self.db.execute("SELECT key, judge_error FROM results").fetchall())  # key -> judge_error
        values = []
        for found in other.db.execute(f"SELECT {', '.join(cols)} FROM results"):
            row = dict(zip(cols, found, strict=True))
            if "retriever" not in row:  # schema 2: the row's run config says which retriever
                row["retriever"] = run_retrieval(configs.get(row["run_id"], {}))
            if row["key"] in mine and (mine[row["key"]] is None or row["judge_error"] is not None):
                counts["kept"] += 1
                continue
            counts["replaced" if row["key"] in mine else "added"] += 1
            values.append(tuple(row[c] for c in COLUMNS))
        marks = ", ".join("?" for _ in COLUMNS)
        with self.db:
            self.db.executemany("INSERT OR IGNORE INTO runs VALUES (?, ?, ?)", runs)
            self.db.executemany(f"INSERT OR REPLACE INTO results ({', '.join(COLUMNS)}) VALUES ({marks})", values)
        return counts

    def runs(self) -> list[dict]:
        return [{"run_id": r[0], "created": r[1], "config": json.loads(r[2])}
                for r in self.db.execute("SELECT * FROM runs ORDER BY created")]

    def close(self) -> None:
        self.db.close()
