"""The results store: one SQLite file (WAL mode) with run metadata, one row per (query, variant, setting)
answer, and the judges' verdicts on those answers in a table of their own.

Each answer row has a key hashing everything that determines the answer (domain, query, setting, the exact
prompt, variant, generator and adapter fingerprints, decoding settings): identical work is never
recomputed, and a killed run resumes without duplicates because rows are written in transactions and the key
is the primary key. A file that is not SQLite, or a SQLite file that is not an mdrag store, is refused and
never overwritten.

Verdicts are not answers (schema 4). A verdict is keyed by what determines it: the answer it judges
(`answer_id` = question + gold answers + answer text), the judge's fingerprint, the judge prompt's version
and the number of levels (2: Yes/No, 3: Yes/Partially/No). Adding or changing a judge therefore never
regenerates an answer; several judges' verdicts sit side by side and every reader names the one it shows.

Upgrades run in place, in one transaction, when a store is opened for writing, and on an in-memory copy when
it is opened read-only (the file is never touched):
- schema 2 -> 3 adds `retriever` to each row (schema 2 kept it only in the run config);
- schema 3 -> 4 moves the judge columns out of `results` into `verdicts` (attributed to the judge that made
  them, prompt version `LEGACY_PROMPT`) and drops the judge from each answer's key, recomputed from the row
  and its run's config; a row whose old key cannot be reproduced keeps it (and is counted).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mdrag.errors import MdragError

SCHEMA_VERSION = "4"
CASE_PREFIX = "probe:"  # probe rows read as answers get the setting probe:<probe>=<condition>
DEFAULT_RETRIEVAL = "splade>minilm"  # the paper's pipeline: SPLADE first stage, then a reranker
COLUMNS = ["key", "run_id", "domain", "cluster", "query_id", "variant", "setting", "retriever", "answer_type",
           "prompt_hash", "question", "gold", "passages", "answer", "answer_id", "n_tokens", "seconds", "metrics",
           "retrieval", "created"]
VERDICT_COLUMNS = ["key", "answer_id", "judge", "judge_name", "prompt_version", "levels", "score", "p_yes", "p_no",
                   "p_partially", "mass", "low_mass", "error", "seconds", "created"]
# Answers that are not generator outputs but probes of a judge (sanity checks, human-labelled pairs):
# judged like any answer, read by evaluation/judge_validity.py.
ITEM_COLUMNS = ["answer_id", "suite", "item", "kind", "expect", "domain", "question", "gold", "answer", "extra"]
# Probe answers (analysis/probes.py): one row per (probe, condition, question, variant), keyed like answers (the
# exact prompt, adapter, generation); what the probe measures beside the answer: the gold answer's
# log-probability and the answer's attention mass on the gold passage.
PROBE_COLUMNS = ["key", "run_id", "probe", "condition", "domain", "query_id", "variant", "answer_type", "question",
                 "gold", "passages", "gold_position", "prompt_hash", "answer", "answer_id", "n_tokens", "seconds",
                 "metrics", "gold_logprob", "gold_attention", "created"]
# Forgetting canaries (evaluation/canaries.py): one row per (canary, item, variant), keyed by the adapter file and
# the generation; accuracy (0/1, raw and length-normalised) for choice canaries, NLL per token for loss canaries.
CANARY_COLUMNS = ["key", "run_id", "canary", "item", "variant", "adapter", "dtype", "correct", "correct_norm", "nll",
                  "n_tokens", "created"]
# Groundedness (evaluation/groundedness.py): one row per (answer, its prompt's passages, checker, check version),
# keyed like verdicts (adding it never regenerates an answer); `claims` holds each claim's support per passage.
GROUNDING_COLUMNS = ["key", "answer_id", "passage_ids", "checker", "checker_name", "version", "n_claims",
                     "n_supported", "faithfulness", "unsupported", "gold_support", "distractor_only",
                     "ungrounded_answer", "claims", "errors", "seconds", "created"]
# The checker's validation set: one row per (item, kind, checker, version); split: "dev" (where the checker's
# threshold was chosen; NULL on rows written before the split existed) or "held-out". Added columns go last: rows
# are written positionally and ALTER TABLE appends.
CHECK_COLUMNS = ["key", "domain", "item", "kind", "expect", "passage", "question", "claim", "checker", "checker_name",
                 "version", "p_yes", "mass", "correct", "created", "split"]
ADDED_COLUMNS = {"grounding_checks": ["split"]}  # columns added to a table after stores were shipped with it
# The checker's citations against passage ablation (analysis/citations.py): one row per (stored answer row, checker).
CITATION_COLUMNS = ["key", "result_key", "checker", "domain", "setting", "query_id", "variant", "top_ablation", "cited",
                    "agree", "top_is_gold", "cites_gold", "created"]
# Context-attribution methods scored on held-out ablations (analysis/attribution_scores.py): one row per (stored
# answer row, method + its parameters, target span of the answer, held-out masks, dtype).
ATTRIBUTION_COLUMNS = ["key", "result_key", "domain", "setting", "query_id", "variant", "method", "params", "target",
                       "n_sources", "n_eval", "lds", "drop1", "drop3", "forwards", "seconds", "dtype", "created"]
# Keyed tables beside the answers that merge-store copies: (table, columns, the column that is 0 on a good row
# (a failed row here is replaced by a good one there) or None: a row already here stays).
MERGED_TABLES = [("probe_rows", PROBE_COLUMNS, None), ("canary_rows", CANARY_COLUMNS, None),
                 ("grounding", GROUNDING_COLUMNS, "errors"), ("grounding_checks", CHECK_COLUMNS, None),
                 ("citation_agreement", CITATION_COLUMNS, None), ("attribution_scores", ATTRIBUTION_COLUMNS, None)]
LEGACY_COLUMNS = ["judge", "judge_score", "judge3_score", "judge_error"]  # schema <= 3, on the results rows
V3_COLUMNS = [c for c in COLUMNS if c != "answer_id"] + LEGACY_COLUMNS  # a schema-3 results row
LEGACY_PROMPT = "bergen-v1-first-alias"  # the judge prompt before schema 4: only the first gold alias shown
LOW_MASS = 0.5  # a verdict whose first token put less than this on the allowed words is flagged
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


def answer_id(question: str, gold: list[str] | None, answer: str) -> str:
    """What a verdict judges: the same answer to the same question against the same gold is judged once."""
    return row_key(question=question, gold=list(gold or []), answer=answer)


def verdict_key(answer: str, judge: str, prompt_version: str, levels: int) -> str:
    """`answer`: an answer_id; `judge`: the judge's fingerprint."""
    return row_key(answer=answer, judge=judge, prompt=prompt_version, levels=int(levels))


def case_setting(probe: str, condition: str) -> str:
    """The setting name of a probe's condition (its rows' setting when read as answers; a case setting in Ask)."""
    return f"{CASE_PREFIX}{probe}={condition}"


def parse_case_setting(setting: str) -> tuple[str, str]:
    probe, _, condition = setting.removeprefix(CASE_PREFIX).partition("=")
    return probe, condition


def case_label(setting: str) -> str:
    """How selectors show a case setting: 'attack: injection'."""
    return ": ".join(parse_case_setting(setting))


def is_case_setting(setting: str) -> bool:
    return str(setting).startswith(CASE_PREFIX)


def answer_key(*, domain: str, query: str, setting: str, prompt: str, variant: str, adapter: str,
               max_new_tokens: int, generation: dict, retriever: str, **legacy: Any) -> str:
    """The key of one answer row: everything that determines the answer, nothing about how it was judged.
    The retriever is left out for oracle rows (gold passages: the same prompt whatever the retriever) and for
    the paper's pipeline (rows stored before the retriever dimension keep their keys). `legacy`: parts older
    keys also held (schema <= 3: the judge), to recompute those keys on upgrade."""
    by = {} if setting == "oracle" or retriever == DEFAULT_RETRIEVAL else {"retriever": retriever}
    return row_key(domain=domain, query=query, setting=setting, prompt=prompt, variant=variant, adapter=adapter,
                   max_new_tokens=max_new_tokens, **generation, **by, **legacy)


def cell_key(*, domain: str, query: str, setting: str, prompt: str, variant: str, adapter: str | None,
             max_new_tokens: int | None, generator: str | None, retriever: str | None) -> str:
    """An experiment cell: what answer_key holds less the dtype (and library versions). Two answers to one cell
    are the same experiment run twice (bf16 vs float32 greedy decoding: on 102 ClapNQ cells Match never
    differed); the views count the first stored one and `evaluate` reuses it. The retriever is left out for
    oracle rows, as in answer_key (gold passages: the same prompt whatever the retriever)."""
    return json.dumps([domain, query, setting, prompt, variant, adapter, max_new_tokens, generator,
                       None if setting == "oracle" else retriever])


def _run_generation(config: dict) -> dict:
    """A run's {generator, dtype} as keys hold it (the first runs kept them at the top level)."""
    return config.get("generation") or {"generator": config.get("generator_fingerprint"),
                                        "dtype": config.get("dtype")}


def _key_parts(row: dict, config: dict) -> dict:
    """What answer_key needs, from a stored row and its run's config."""
    return {"domain": row["domain"], "query": row["query_id"], "setting": row["setting"],
            "prompt": row["prompt_hash"], "variant": row["variant"],
            "adapter": config.get("adapters", {}).get(row["variant"]),
            "max_new_tokens": config.get("max_new_tokens"), "generation": _run_generation(config),
            "retriever": row["retriever"]}


class ResultsStore:
    def __init__(self, path: Path, read_only: bool = False):
        """`read_only`: for dashboards over a shipped or shared store; never writes to the store (a store left in
        WAL mode still gets SQLite's -shm / -wal files beside it when read: `seal` a store before shipping it).
        An older schema opened read-only is upgraded on an in-memory copy."""
        self.path = Path(path)
        self.read_only = read_only
        self.upgrade_notes: list[str] = []
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
            raise StoreError(f"{self.path} is a corrupt SQLite file ({err}); it was left untouched.") from err
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
        if self.version not in (SCHEMA_VERSION, "3", "2"):
            raise StoreError(f"{self.path} has store schema {self.version}, expected {SCHEMA_VERSION} (or 2-3, "
                             "which are upgraded).")
        if self.version == SCHEMA_VERSION and not read_only:
            with self.db:
                self._create_items()  # a schema-4 store written before the judge probes existed
        if self.version != SCHEMA_VERSION:
            if read_only:  # upgrade a copy in memory: the file stays as it is
                memory = sqlite3.connect(":memory:", check_same_thread=False)
                self.db.backup(memory)
                self.db.close()
                self.db = memory
            self._upgrade()

    def _create(self) -> None:
        with self.db:
            self.db.execute("CREATE TABLE mdrag_meta (name TEXT PRIMARY KEY, value TEXT)")
            self.db.execute("INSERT INTO mdrag_meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
            self.db.execute("CREATE TABLE runs (run_id TEXT PRIMARY KEY, created REAL, config TEXT)")
            self._create_results()
            self._create_verdicts()
            self._create_items()

    def _create_results(self, name: str = "results") -> None:
        cols = ", ".join(f"{c} {'TEXT PRIMARY KEY' if c == 'key' else ''}" for c in COLUMNS)
        self.db.execute(f"CREATE TABLE {name} ({cols})")

    def _create_verdicts(self) -> None:
        cols = ", ".join(f"{c} {'TEXT PRIMARY KEY' if c == 'key' else ''}" for c in VERDICT_COLUMNS)
        self.db.execute(f"CREATE TABLE verdicts ({cols})")
        self.db.execute("CREATE INDEX verdicts_by_judge ON verdicts (judge, levels, answer_id)")

    def _create_items(self) -> None:
        """Tables added within schema 4 (a store written before them simply has none of their rows)."""
        self.db.execute(f"CREATE TABLE IF NOT EXISTS judge_items ({', '.join(ITEM_COLUMNS)}, "
                        "PRIMARY KEY (suite, item, kind))")
        cols = ", ".join(f"{c} {'TEXT PRIMARY KEY' if c == 'key' else ''}" for c in PROBE_COLUMNS)
        self.db.execute(f"CREATE TABLE IF NOT EXISTS probe_rows ({cols})")
        cols = ", ".join(f"{c} {'TEXT PRIMARY KEY' if c == 'key' else ''}" for c in CANARY_COLUMNS)
        self.db.execute(f"CREATE TABLE IF NOT EXISTS canary_rows ({cols})")
        for table, columns in (("grounding", GROUNDING_COLUMNS), ("grounding_checks", CHECK_COLUMNS),
                               ("citation_agreement", CITATION_COLUMNS),
                               ("attribution_scores", ATTRIBUTION_COLUMNS)):
            cols = ", ".join(f"{c} {'TEXT PRIMARY KEY' if c == 'key' else ''}" for c in columns)
            self.db.execute(f"CREATE TABLE IF NOT EXISTS {table} ({cols})")
        for table, added in ADDED_COLUMNS.items():
            for column in added:
                if column not in self._columns(table):
                    self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column}")

    def _columns(self, table: str) -> list[str]:
        return [r[1] for r in self.db.execute(f"PRAGMA table_info({table})")]

    def _upgrade(self) -> None:
        """Schema 2 or 3 -> 4 in one transaction: nothing lands unless every row made it."""
        with self.db:
            if self.version == "2":
                self.db.execute("ALTER TABLE results ADD COLUMN retriever TEXT")
                for run_id, config in self.db.execute("SELECT run_id, config FROM runs").fetchall():
                    self.db.execute("UPDATE results SET retriever=? WHERE run_id=?",
                                    (run_retrieval(json.loads(config)), run_id))
                self.db.execute("UPDATE results SET retriever=? WHERE retriever IS NULL", (DEFAULT_RETRIEVAL,))
            self._verdicts_apart()
            self._create_items()
            self.db.execute("UPDATE mdrag_meta SET value=? WHERE name='schema'", (SCHEMA_VERSION,))
        self.version = SCHEMA_VERSION

    def _verdicts_apart(self) -> None:
        """Schema 3 -> 4: verdicts to their own table, the judge out of each answer's key."""
        configs = {r: json.loads(c) for r, c in self.db.execute("SELECT run_id, config FROM runs")}
        old_cols = V3_COLUMNS
        rows = [dict(zip(old_cols, r, strict=True))
                for r in self.db.execute(f"SELECT {', '.join(old_cols)} FROM results").fetchall()]
        self._create_results("results_v4")
        self._create_verdicts()
        kept_keys, answers, verdicts = 0, [], {}
        for row in rows:
            parts = _key_parts(row, configs.get(row["run_id"], {}))
            old = answer_key(**parts, judge=row["judge"])
            if old == row["key"]:  # reproducible: the same key as a new run computes for the same answer
                row["key"] = answer_key(**parts)
            else:
                kept_keys += 1
            gold = json.loads(row["gold"]) if isinstance(row["gold"], str) else row["gold"]
            row["answer_id"] = answer_id(row["question"], gold, row["answer"])
            answers.append(tuple(row[c] for c in COLUMNS))
            if row["judge"] is None:
                continue
            for levels, score in ((2, row["judge_score"]), (3, row["judge3_score"])):
                if score is None and (levels == 3 or row["judge_error"] is None):
                    continue
                key = verdict_key(row["answer_id"], row["judge"], LEGACY_PROMPT, levels)
                verdicts[key] = (key, row["answer_id"], row["judge"], row["judge"], LEGACY_PROMPT, levels, score,
                                 None, None, None, None, None, row["judge_error"] if levels == 2 else None, None,
                                 row["created"])
        self.db.executemany(f"INSERT OR REPLACE INTO results_v4 VALUES ({', '.join('?' for _ in COLUMNS)})",
                            answers)
        self.db.executemany(f"INSERT OR REPLACE INTO verdicts VALUES ({', '.join('?' for _ in VERDICT_COLUMNS)})",
                            list(verdicts.values()))
        self.db.execute("DROP TABLE results")
        self.db.execute("ALTER TABLE results_v4 RENAME TO results")
        self.db.execute("CREATE INDEX IF NOT EXISTS results_cell ON results (domain, variant, setting)")
        self.db.execute("CREATE INDEX results_answer ON results (answer_id)")
        self.upgrade_notes.append(f"upgraded to schema 4: {len(answers)} answers, {len(verdicts)} verdicts moved "
                                  "to their own table" + (f"; {kept_keys} rows kept their old key" if kept_keys
                                                          else ""))

    def rename_variant(self, old: str, new: str, adapter: str) -> dict[str, int]:
        """Rows of variant `old` made with the adapter whose fingerprint is `adapter` become rows of `new`,
        under the key a run of `new` with that adapter computes (so they are reused, never regenerated). For a
        registry rename, e.g. the self-distilled SKD adapter once `full_skd` was retrained on another teacher.
        Rows of `old` made with another adapter, and rows whose key cannot be reproduced, are left as they are."""
        configs = {r: json.loads(c) for r, c in self.db.execute("SELECT run_id, config FROM runs")}
        rows = [dict(zip(["key", "run_id", "domain", "query_id", "setting", "prompt_hash", "variant", "retriever"],
                         r, strict=True))
                for r in self.db.execute("SELECT key, run_id, domain, query_id, setting, prompt_hash, variant, "
                                         "retriever FROM results WHERE variant=?", (old,))]
        counts = {"renamed": 0, "other_adapter": 0, "key_not_reproduced": 0}
        with self.db:
            for run_id in {r["run_id"] for r in rows}:
                config = configs.get(run_id, {})
                if config.get("adapters", {}).get(old) == adapter:
                    config["adapters"][new] = adapter
                    self.db.execute("UPDATE runs SET config=? WHERE run_id=?", (json.dumps(config, sort_keys=True),
                                                                               run_id))
            for row in rows:
                config = configs.get(row["run_id"], {})
                parts = _key_parts(row, config)
                if parts["adapter"] != adapter:
                    counts["other_adapter"] += 1
                elif answer_key(**parts) != row["key"]:
                    counts["key_not_reproduced"] += 1
                else:
                    key = answer_key(**{**parts, "variant": new})
                    self.db.execute("UPDATE results SET key=?, variant=? WHERE key=?", (key, new, row["key"]))
                    counts["renamed"] += 1
        return counts

    def add_run(self, run_id: str, config: dict) -> None:
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO runs VALUES (?, ?, ?)",
                            (run_id, time.time(), json.dumps(config, sort_keys=True)))

    def has(self, key: str) -> bool:
        return self.db.execute("SELECT 1 FROM results WHERE key=?", (key,)).fetchone() is not None

    def get(self, key: str) -> dict | None:
        cur = self.db.execute(f"SELECT {', '.join(COLUMNS)} FROM results WHERE key=?", (key,))
        found = cur.fetchone()
        if found is None:
            return None
        return {c: (json.loads(v) if c in _JSON and isinstance(v, str) else v)
                for c, v in zip(COLUMNS, found, strict=True)}

    def put_many(self, rows: list[dict]) -> None:
        """Insert answer rows in one transaction (all or none land); a row with the same key is replaced."""
        for r in rows:
            r.setdefault("answer_id", answer_id(r["question"], r.get("gold"), r["answer"]))
        marks = ", ".join("?" for _ in COLUMNS)
        values = [tuple(json.dumps(r.get(c), ensure_ascii=False) if c in _JSON else r.get(c) for c in COLUMNS)
                  for r in rows]
        with self.db:
            self.db.executemany(f"INSERT OR REPLACE INTO results ({', '.join(COLUMNS)}) VALUES ({marks})", values)

    # ---------------------------------------------------------------------------------------- verdicts

    def put_verdicts(self, verdicts: list[dict]) -> None:
        """Verdict rows (VERDICT_COLUMNS; key and low_mass filled in) in one transaction. A failed verdict never
        replaces a good one."""
        values = []
        for v in verdicts:
            v = {**v, "created": v.get("created") or time.time()}
            v["key"] = verdict_key(v["answer_id"], v["judge"], v["prompt_version"], v["levels"])
            v["low_mass"] = None if v.get("mass") is None else int(v["mass"] < LOW_MASS)
            values.append(tuple(v.get(c) for c in VERDICT_COLUMNS))
        marks = ", ".join("?" for _ in VERDICT_COLUMNS)
        with self.db:
            self.db.executemany(f"INSERT OR REPLACE INTO verdicts VALUES ({marks})",
                                [v for v in values if v[VERDICT_COLUMNS.index("error")] is None])
            self.db.executemany(f"INSERT OR IGNORE INTO verdicts VALUES ({marks})",
                                [v for v in values if v[VERDICT_COLUMNS.index("error")] is not None])

    def put_items(self, items: list[dict]) -> None:
        """Judge probes (ITEM_COLUMNS; answer_id filled in): idempotent."""
        values = []
        for it in items:
            it = {**it, "answer_id": answer_id(it["question"], it["gold"], it["answer"])}
            values.append(tuple(json.dumps(it.get(c), ensure_ascii=False) if c in ("gold", "extra") else it.get(c)
                                for c in ITEM_COLUMNS))
        with self.db:
            self.db.executemany(f"INSERT OR REPLACE INTO judge_items VALUES ({', '.join('?' for _ in ITEM_COLUMNS)})",
                                values)

    def has_probe(self, key: str) -> bool:
        return self.db.execute("SELECT 1 FROM probe_rows WHERE key=?", (key,)).fetchone() is not None

    def put_probe_rows(self, rows: list[dict]) -> None:
        """Probe rows (PROBE_COLUMNS) of one (question, condition) in one transaction: a killed probe run
        resumes without duplicates or half-written conditions."""
        values = []
        for r in rows:
            r = {**r, "answer_id": answer_id(r["question"], r["gold"], r["answer"])}
            values.append(tuple(json.dumps(r[c], ensure_ascii=False) if c in _JSON else r.get(c)
                                for c in PROBE_COLUMNS))
        with self.db:
            self.db.executemany(f"INSERT OR REPLACE INTO probe_rows VALUES ({', '.join('?' for _ in PROBE_COLUMNS)})",
                                values)

    def has_canary(self, key: str) -> bool:
        return self.db.execute("SELECT 1 FROM canary_rows WHERE key=?", (key,)).fetchone() is not None

    def put_canary_rows(self, rows: list[dict]) -> None:
        """Canary rows (CANARY_COLUMNS) of one item in one transaction (a killed run resumes without duplicates)."""
        with self.db:
            self.db.executemany(f"INSERT OR REPLACE INTO canary_rows VALUES ({', '.join('?' for _ in CANARY_COLUMNS)})",
                                [tuple(r.get(c) for c in CANARY_COLUMNS) for r in rows])

    def canary_frame(self):
        """Canary rows as a DataFrame; empty when the store has none (or predates the table)."""
        import pandas as pd

        if not self.db.execute("SELECT 1 FROM sqlite_master WHERE name='canary_rows'").fetchone():
            return pd.DataFrame(columns=CANARY_COLUMNS)
        return pd.read_sql_query(f"SELECT {', '.join(CANARY_COLUMNS)} FROM canary_rows", self.db)

    def put_grounding(self, rows: list[dict]) -> None:
        """Grounding rows (GROUNDING_COLUMNS, key filled in) in one transaction; a row with checker errors never
        replaces one without."""
        self._put("grounding", GROUNDING_COLUMNS, rows, keep_good=True)

    def put_grounding_checks(self, rows: list[dict]) -> None:
        """The checker's validation rows (CHECK_COLUMNS less key) in one transaction: idempotent."""
        keyed = [{**r, "key": hashlib.sha256(json.dumps([r["item"], r["kind"], r["checker"], r["version"]])
                                             .encode()).hexdigest()[:32]} for r in rows]
        self._put("grounding_checks", CHECK_COLUMNS, keyed, keep_good=True)

    def put_citations(self, rows: list[dict]) -> None:
        """Citation-agreement rows (CITATION_COLUMNS less key) in one transaction: idempotent."""
        keyed = [{**r, "key": hashlib.sha256(json.dumps([r["result_key"], r["checker"]]).encode()).hexdigest()[:32],
                  "cited": json.dumps(r["cited"])} for r in rows]
        self._put("citation_agreement", CITATION_COLUMNS, keyed, keep_good=False)

    def citations_frame(self):
        import pandas as pd

        if not self._exists("citation_agreement"):
            return pd.DataFrame(columns=CITATION_COLUMNS)
        df = pd.read_sql_query(f"SELECT {', '.join(CITATION_COLUMNS)} FROM citation_agreement", self.db)
        df["cited"] = [json.loads(v) if isinstance(v, str) else v for v in df["cited"]]
        return df

    def put_attribution_scores(self, rows: list[dict]) -> None:
        """Attribution-score rows (ATTRIBUTION_COLUMNS less key) in one transaction: idempotent."""
        keyed = [{**r, "key": hashlib.sha256(json.dumps([r["result_key"], r["method"], r["params"], r["target"],
                                                         r["n_eval"], r["dtype"]]).encode()).hexdigest()[:32]}
                 for r in rows]
        self._put("attribution_scores", ATTRIBUTION_COLUMNS, keyed, keep_good=False)

    def attribution_scores_frame(self):
        import pandas as pd

        if not self._exists("attribution_scores"):
            return pd.DataFrame(columns=ATTRIBUTION_COLUMNS)
        return pd.read_sql_query(f"SELECT {', '.join(ATTRIBUTION_COLUMNS)} FROM attribution_scores", self.db)

    def _put(self, table: str, columns: list[str], rows: list[dict], keep_good: bool) -> None:
        now = time.time()
        values = [tuple({**r, "created": r.get("created") or now}.get(c) for c in columns) for r in rows]
        bad = [bool(r.get("errors")) or ("p_yes" in r and r["p_yes"] is None) for r in rows]
        marks = ", ".join("?" for _ in columns)
        with self.db:
            self.db.executemany(f"INSERT OR REPLACE INTO {table} VALUES ({marks})",
                                [v for v, b in zip(values, bad, strict=True) if not (b and keep_good)])
            self.db.executemany(f"INSERT OR IGNORE INTO {table} VALUES ({marks})",
                                [v for v, b in zip(values, bad, strict=True) if b and keep_good])

    def has_grounding(self, key: str) -> bool:
        return self._exists("grounding") and self.db.execute(
            "SELECT 1 FROM grounding WHERE key=? AND errors = 0", (key,)).fetchone() is not None

    def _exists(self, table: str) -> bool:
        return self.db.execute("SELECT 1 FROM sqlite_master WHERE name=?", (table,)).fetchone() is not None

    def grounding_frame(self):
        """Grounding rows as a DataFrame (claims and passage_ids parsed); empty when the store has none."""
        import pandas as pd

        if not self._exists("grounding"):
            return pd.DataFrame(columns=GROUNDING_COLUMNS)
        df = pd.read_sql_query(f"SELECT {', '.join(GROUNDING_COLUMNS)} FROM grounding", self.db)
        for c in ("claims", "passage_ids"):
            df[c] = [json.loads(v) if isinstance(v, str) else v for v in df[c]]
        return df

    def grounding_checks_frame(self):
        import pandas as pd

        if not self._exists("grounding_checks"):
            return pd.DataFrame(columns=CHECK_COLUMNS)
        have = self._columns("grounding_checks")  # a store opened read-only keeps its older columns
        names = ", ".join(c if c in have else f"NULL AS {c}" for c in CHECK_COLUMNS)
        return pd.read_sql_query(f"SELECT {names} FROM grounding_checks", self.db)

    def probe_frame(self, probe: str | None = None):
        """Probe rows as a DataFrame (metrics expanded into m_ columns); empty when the store has none."""
        import pandas as pd

        exists = self.db.execute("SELECT 1 FROM sqlite_master WHERE name='probe_rows'").fetchone()
        if not exists:
            return pd.DataFrame(columns=PROBE_COLUMNS)
        where, args = ("WHERE probe=?", (probe,)) if probe else ("", ())
        df = pd.read_sql_query(f"SELECT {', '.join(PROBE_COLUMNS)} FROM probe_rows {where}", self.db, params=args)
        df = self.one_answer_per_cell(df)  # a question probed again in another dtype counts once
        for c in _JSON & set(PROBE_COLUMNS):
            df[c] = [json.loads(v) if isinstance(v, str) else v for v in df[c]]
        if len(df):
            metrics = pd.json_normalize(df["metrics"].tolist()).add_prefix("m_")
            df = pd.concat([df.reset_index(drop=True), metrics], axis=1)
        return df

    def items_frame(self, suite: str | None = None):
        import pandas as pd

        if not self.db.execute("SELECT 1 FROM sqlite_master WHERE name='judge_items'").fetchone():
            return pd.DataFrame(columns=ITEM_COLUMNS)
        where, params = ("WHERE suite = ?", (suite,)) if suite else ("", ())
        df = pd.read_sql_query(f"SELECT * FROM judge_items {where}", self.db, params=params)
        for c in ("gold", "extra"):
            df[c] = df[c].map(lambda v: json.loads(v) if isinstance(v, str) else v)
        return df

    @staticmethod
    def _answer_selection(source: str, only: Mapping[str, Sequence[str]] | None) -> tuple[str, list[str]]:
        """SQL (' AND r.col IN (...)', params) keeping the rows of `source` that `only` names."""
        if source not in ("results", "judge_items"):
            raise StoreError(f"unknown answer source {source}")
        where, params = "", []
        for column, names in (only or {}).items():
            if source != "results" or column not in ("domain", "variant", "setting", "retriever"):
                raise StoreError(f"cannot select {source} answers by {column}")
            where += f" AND r.{column} IN ({', '.join('?' * len(names))})"
            params += list(names)
        return where, params

    def distinct_answers(self, source: str = "results", only: Mapping[str, Sequence[str]] | None = None) -> int:
        """How many distinct answers `source` holds (those of the rows `only` names)."""
        where, params = self._answer_selection(source, only)
        return self.db.execute(f"SELECT COUNT(DISTINCT answer_id) FROM {source} r WHERE 1{where}",
                               params).fetchone()[0]

    def unjudged(self, judge: str, prompt_version: str, levels: int, source: str = "results",
                 only: Mapping[str, Sequence[str]] | None = None) -> list[dict]:
        """Distinct answers (answer_id, question, gold, answer) of `source` (results: generated answers;
        judge_items: judge probes) with no good verdict from `judge` at `levels` under `prompt_version`.
        `only` keeps the answers of some rows (results: {'domain'|'variant'|'setting'|'retriever': [names]}), so a
        comparison can be judged whole before the rest of the store."""
        where, params = self._answer_selection(source, only)
        found = self.db.execute(
            f"SELECT answer_id, question, gold, answer FROM {source} r WHERE NOT EXISTS ("
            "SELECT 1 FROM verdicts v WHERE v.answer_id = r.answer_id AND v.judge = ? AND v.levels = ? "
            f"AND v.prompt_version = ? AND v.error IS NULL){where} GROUP BY answer_id",
            [judge, int(levels), prompt_version, *params]).fetchall()
        out = [{"answer_id": a, "question": q, "gold": json.loads(g) if isinstance(g, str) else g, "answer": t}
               for a, q, g, t in found]
        # Answers to one question together (the judge caches their shared question + gold once), groups of
        # similar length together, shortest first.
        return sorted(out, key=lambda r: (len(r["question"]) + len(json.dumps(r["gold"])), r["question"],
                                          json.dumps(r["gold"]), len(r["answer"]), r["answer_id"]))

    def verdict_frame(self, levels: int | None = None):
        import pandas as pd

        where, params = ("WHERE levels = ?", (int(levels),)) if levels else ("", ())
        return pd.read_sql_query(f"SELECT * FROM verdicts {where}", self.db, params=params)

    def judges(self) -> list[dict]:
        """Judges with verdicts here: id (fingerprint), name, prompt version, levels, count."""
        found = self.db.execute("SELECT judge, MAX(judge_name), prompt_version, levels, COUNT(*) FROM verdicts "
                                "WHERE error IS NULL GROUP BY judge, prompt_version, levels ORDER BY judge")
        return [{"judge": j, "name": n, "prompt_version": p, "levels": lv, "n": c} for j, n, p, lv, c in found]

    # ---------------------------------------------------------------------------------------- frames

    def answers_frame(self):
        """All answer rows as a pandas DataFrame, metrics and retrieval expanded into m_ / r_ columns, and the
        generation dtype of each row's run (`dtype`: answers made in bf16 and in float32 sit in one store)."""
        import pandas as pd

        df = pd.read_sql_query("SELECT * FROM results", self.db)
        for c in _JSON:
            df[c] = df[c].map(lambda v: json.loads(v) if isinstance(v, str) else v)
        configs, _ = self._run_configs()
        df["dtype"] = df["run_id"].map(lambda r: _run_generation(configs.get(r, {})).get("dtype"))
        metrics = pd.json_normalize(df["metrics"].tolist()).add_prefix("m_") if len(df) else pd.DataFrame()
        retrieval = pd.json_normalize(df["retrieval"].tolist()).add_prefix("r_") if len(df) else pd.DataFrame()
        return pd.concat([df.reset_index(drop=True), metrics, retrieval], axis=1)

    def _cell_keys(self, df) -> list[str]:
        """cell_key of each row of an answers frame (domain, query_id, setting, prompt_hash, variant, retriever,
        run_id) or of a probe frame (probe and condition instead of setting: the case setting, no retriever: the
        prompt hash holds the passages), the adapter, budget and generator from its run's config."""
        configs, _ = self._run_configs()
        probe = "probe" in df.columns
        out = []
        for row in df.itertuples(index=False):
            config = configs.get(row.run_id, {})
            out.append(cell_key(domain=row.domain, query=row.query_id, prompt=row.prompt_hash, variant=row.variant,
                                setting=case_setting(row.probe, row.condition) if probe else row.setting,
                                adapter=config.get("adapters", {}).get(row.variant),
                                max_new_tokens=config.get("max_new_tokens"),
                                generator=_run_generation(config).get("generator"),
                                retriever=None if probe else row.retriever))
        return out

    def answered_cells(self, probes: bool = False) -> set[str]:
        """The cell_key of every stored answer (`probes`: of every probe row): what `evaluate` (`probe`) need not
        answer again in another dtype."""
        import pandas as pd

        if probes and not self._exists("probe_rows"):
            return set()
        sql = ("SELECT probe, condition, domain, query_id, prompt_hash, variant, run_id FROM probe_rows" if probes
               else "SELECT domain, query_id, setting, prompt_hash, variant, retriever, run_id FROM results")
        rows = pd.read_sql_query(sql, self.db)
        return set(self._cell_keys(rows)) if len(rows) else set()

    def one_answer_per_cell(self, df):
        """The first stored answer of each experiment cell (cell_key): the same question, setting, variant,
        retrieval, prompt, generator, adapter and answer budget answered again under another dtype or library
        version (`evaluate --own-dtype`, or rows stored before runs reused other dtypes' answers) counts once in
        every mean, CI and pairing; answer or probe frames (see _cell_keys). Why: the stratified ClapNQ sample
        shares 34 questions with the file-order one, and those cells were counted twice."""
        if df.empty:
            return df
        # Only rows sharing question, condition, prompt and variant can share a cell (cell_key refines this key;
        # the retriever is left out: oracle cells ignore it): hash just those. In the shipped store 934 of 30,512
        # answer rows and no probe rows; hashing every row cost ~0.2-0.8 s a call, four calls a Dashboards click.
        coarse = ["domain", "query_id", "prompt_hash", "variant",
                  *(["probe", "condition"] if "probe" in df.columns else ["setting"])]
        maybe = df.duplicated(coarse, keep=False)
        if not maybe.any():
            return df.reset_index(drop=True)
        shared = df[maybe].assign(_cell=self._cell_keys(df[maybe])).sort_values("created", kind="stable")
        return df.drop(index=shared.index[shared.duplicated("_cell", keep="first")]).reset_index(drop=True)

    def dtype_twins(self):
        """Answer rows of the cells answered in more than one dtype (e.g. bf16 on one machine, float32 on
        another with `evaluate --own-dtype`), with their `_cell`: how far the dtype alone moves an answer."""
        df = self.answers_frame()
        # cell keys (a hash per row) only for the rows whose question, setting, variant and prompt hold two dtypes
        df = df[df.groupby(["domain", "query_id", "setting", "variant", "prompt_hash"])["dtype"]
                .transform("nunique") > 1].copy()
        if df.empty:
            return df.reset_index(drop=True)
        df["_cell"] = self._cell_keys(df)
        many = df.groupby("_cell")["dtype"].transform("nunique") > 1
        return df[many].reset_index(drop=True)

    def settings(self) -> list[str]:
        """The settings of the answer rows and, as case settings, of the probe rows (distinct values: no frame)."""
        found = {s for (s,) in self.db.execute("SELECT DISTINCT setting FROM results")}
        if self._exists("probe_rows"):
            found |= {case_setting(p, c) for p, c in self.db.execute("SELECT DISTINCT probe, condition FROM "
                                                                     "probe_rows")}
        return sorted(found)

    def retrievers(self) -> list[str]:
        """The retrievals ("bm25>none") of the answer rows and of the case-setting probe rows, as `frame(cases=True)`
        names them, from distinct values (no frame: the dashboards ask once per store change)."""
        found = {r for (r,) in self.db.execute("SELECT DISTINCT retriever FROM results") if r is not None}
        if self._exists("probe_rows"):
            configs, other_k = self._run_configs()
            found |= {run_retrieval(configs.get(r, {})) for (r,) in
                      self.db.execute("SELECT DISTINCT run_id FROM probe_rows") if r not in other_k}
        return sorted(found)

    def _run_configs(self) -> tuple[dict[str, dict], set[str]]:
        """Each run's config, and the runs whose probe rows are not case-setting answers: a case setting is rebuilt
        with the probe CLI's default k (analysis.probes.CASE_K = LIMITS.rerank_k), so a run with another --k made
        other prompts under the same condition name."""
        from mdrag.config import LIMITS

        configs = {r: json.loads(c) for r, c in self.db.execute("SELECT run_id, config FROM runs")}
        return configs, {r for r, c in configs.items() if c.get("k", LIMITS.rerank_k) != LIMITS.rerank_k}

    def case_frame(self):
        """Probe rows read as answers: setting `probe:<probe>=<condition>` (a case setting, so every answer view and
        filter works on them and Ask reopens one), retriever from the probe run's config, the domain's cluster
        from its answer rows; rows of runs with a k other than the case settings' are left out. Empty when the
        store has no probe rows."""
        import pandas as pd

        df = self.probe_frame()
        configs, other_k = self._run_configs()
        df = df[~df["run_id"].isin(other_k)]
        if df.empty:
            return pd.DataFrame(columns=COLUMNS)
        df["setting"] = [case_setting(p, c) for p, c in zip(df["probe"], df["condition"], strict=True)]
        df["retriever"] = [run_retrieval(configs.get(r, {})) for r in df["run_id"]]
        df["cluster"] = df["domain"].map(dict(self.db.execute("SELECT domain, MAX(cluster) FROM results "
                                                              "GROUP BY domain").fetchall()))
        return df

    def frame(self, judge: str | None = None, cases: bool = False, answers=None):
        """Answer rows with one judge's verdicts as `judge_score` (2 levels), `judge3_score` (3 levels),
        `judge_mass`, `judge_low_mass`, `judge_error` and `judge` (its name). `judge`: a judge id (fingerprint)
        or name; None: the best judge present (evaluation.verdicts.best_judge). `cases`: the probe rows too, as
        answers of their case settings (`case_frame`). `answers`: this store's answers_frame() when the caller has
        read it already (the Dashboards click reads it once for every panel)."""
        import pandas as pd

        from mdrag.evaluation.verdicts import attach_verdicts, best_judge

        answers = self.one_answer_per_cell(self.answers_frame() if answers is None else answers)
        verdicts = self.verdict_frame()
        if cases:
            found = self.case_frame()
            if len(found):
                # the best judge is chosen on the generated answers alone, with or without the probe rows
                judge = judge or best_judge(answers, verdicts)
                answers = pd.concat([answers, found], ignore_index=True)
        return attach_verdicts(answers, verdicts, judge)

    def merge_from(self, other: ResultsStore) -> dict[str, int]:
        """Copy another store's runs, answers, verdicts and the rows keyed beside them (probes, canaries,
        groundedness, the checker's validation, citations) into this one in one transaction (grids run
        elsewhere, e.g. on a GPU endpoint, or beside a running grid). Keys identify the work, so merging twice
        adds nothing; a verdict or grounding row that failed here is replaced by the other store's good one,
        never the other way round."""
        runs = other.db.execute("SELECT run_id, created, config FROM runs").fetchall()
        mine = {r[0] for r in self.db.execute("SELECT key FROM results")}
        answers = [r for r in other.db.execute(f"SELECT {', '.join(COLUMNS)} FROM results") if r[0] not in mine]
        good = {r[0] for r in self.db.execute("SELECT key FROM verdicts WHERE error IS NULL")}
        theirs = [r for r in other.db.execute(f"SELECT {', '.join(VERDICT_COLUMNS)} FROM verdicts")
                  if r[0] not in good]
        had = {r[0] for r in self.db.execute("SELECT key FROM verdicts")}
        counts = {"added": len(answers), "kept": len(mine & {r[0] for r in other.db.execute("SELECT key FROM "
                                                                                             "results")}),
                  "verdicts_added": sum(r[0] not in had for r in theirs),
                  "replaced": sum(r[0] in had and r[VERDICT_COLUMNS.index("error")] is None for r in theirs)}
        with self.db:
            self.db.executemany("INSERT OR IGNORE INTO runs VALUES (?, ?, ?)", runs)
            self.db.executemany(f"INSERT OR IGNORE INTO results ({', '.join(COLUMNS)}) VALUES "
                                f"({', '.join('?' for _ in COLUMNS)})", answers)
            err = VERDICT_COLUMNS.index("error")
            self.db.executemany(f"INSERT OR REPLACE INTO verdicts VALUES ({', '.join('?' for _ in VERDICT_COLUMNS)})",
                                [r for r in theirs if r[err] is None])
            self.db.executemany(f"INSERT OR IGNORE INTO verdicts VALUES ({', '.join('?' for _ in VERDICT_COLUMNS)})",
                                [r for r in theirs if r[err] is not None])
            counts["other_rows_added"] = sum(self._merge_table(other, table, columns, good)
                                             for table, columns, good in MERGED_TABLES)
        return counts

    def _merge_table(self, other: ResultsStore, table: str, columns: list[str], good: str | None) -> int:
        """Rows of one keyed table of `other` that are new here (or, where `good` names the column whose rows
        are the good ones, good rows replacing failed ones here); returns how many rows were written."""
        if not other._exists(table):
            return 0
        columns = [c for c in columns if c in other._columns(table)]  # a store from before an added column
        names, marks = ", ".join(columns), ", ".join("?" for _ in columns)
        have = dict(self.db.execute(f"SELECT key, {good or 1} FROM {table}").fetchall())
        ok = (lambda r: r[columns.index(good)] == 0) if good else (lambda r: True)
        fresh = [r for r in other.db.execute(f"SELECT {names} FROM {table}")
                 if r[0] not in have or (good and have[r[0]] != 0 and ok(r))]
        self.db.executemany(f"INSERT OR REPLACE INTO {table} ({names}) VALUES ({marks})", fresh)
        return len(fresh)

    def runs(self) -> list[dict]:
        return [{"run_id": r[0], "created": r[1], "config": json.loads(r[2])}
                for r in self.db.execute("SELECT * FROM runs ORDER BY created")]

    def close(self) -> None:
        self.db.close()

    def seal(self) -> None:
        """Checkpoint and leave WAL mode, then close: the file alone holds everything, and read-only opens
        (dashboards, report, attention-summary) of a store in rollback-journal mode create no -wal / -shm files
        beside it. Run on a store before shipping it; opening it for writing again turns WAL back on."""
        if self.read_only:
            raise StoreError("A read-only store cannot be sealed.")
        with self.db:
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.db.execute("PRAGMA journal_mode=DELETE")
        self.db.close()
