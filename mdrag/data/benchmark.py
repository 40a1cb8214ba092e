"""The processed benchmark on disk: build it from the raw sources, write it deterministically, load it.

Layout (shipped in assets/benchmark):
    manifest.json                      version, seed, split sizes, per-domain counts and sha256 of files
    ATTRIBUTION.md, LICENSES/*.LICENSE the sources' licences, kept beside anything derived from them
    <domain>/passages.jsonl.gz         one Passage per line
    <domain>/queries.jsonl.gz          one Query per line
gzip is written with mtime=0 and no file name, rows in a fixed order with sorted keys, so two builds
give identical bytes.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from tqdm import tqdm

from mdrag.config import BENCHMARK_DIR, RAW_DATA_DIR
from mdrag.data.domains import DOMAINS, DomainSpec, resolve_domain
from mdrag.data.schema import SPLITS, Passage, Query
from mdrag.data.sources import BUILDERS, iter_licences
from mdrag.errors import BenchmarkError, EmptyCorpusError

BENCHMARK_VERSION = "1.0"


def _write_jsonl_gz(path: Path, rows: list[dict]) -> str:
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", fileobj=buf, mode="wb", mtime=0, compresslevel=9) as gz:
        for row in rows:
            gz.write((json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n").encode())
    data = buf.getvalue()
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def _read_jsonl(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def build_benchmark(raw: Path = RAW_DATA_DIR, out: Path = BENCHMARK_DIR, domains: list[str] | None = None) -> dict:
    """Build every (or the named) shipped domain from the raw sources; returns the manifest."""
    if not raw.is_dir():
        raise BenchmarkError(f"Raw data folder not found: {raw} (set MDRAG_RAW_DATA to ../shared/data/raw)")
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    manifest.update({"version": BENCHMARK_VERSION, "seed_note": "see mdrag/data/splits.py (SEED)"})
    manifest.setdefault("domains", {})
    names = domains or list(BUILDERS)
    for name in tqdm(names, desc="prepare", unit="domain"):
        if name not in BUILDERS:
            raise BenchmarkError(f"No builder for '{name}'. Buildable: {', '.join(BUILDERS)}")
        passages, queries = BUILDERS[name](raw)
        _check(name, passages, queries)
        folder = out / name
        folder.mkdir(exist_ok=True)
        spec = DOMAINS[name]
        manifest["domains"][name] = {
            "cluster": spec.cluster,
            "source": spec.source,
            "licence": spec.licence,
            "passages": len(passages),
            "queries": dict(sorted(Counter(q.split for q in queries).items())),
            "answer_types": dict(sorted(Counter(q.answer_type for q in queries).items())),
            "sha256": {
                "passages.jsonl.gz": _write_jsonl_gz(folder / "passages.jsonl.gz", [p.to_dict() for p in passages]),
                "queries.jsonl.gz": _write_jsonl_gz(folder / "queries.jsonl.gz", [q.to_dict() for q in queries]),
            },
        }
    lic_dir = out / "LICENSES"
    lic_dir.mkdir(exist_ok=True)
    for name, lic in iter_licences(raw):
        if lic.exists():
            shutil.copyfile(lic, lic_dir / f"{name}.LICENSE")
    if (raw.parent / "SOURCES.md").exists():
        shutil.copyfile(raw.parent / "SOURCES.md", out / "ATTRIBUTION.md")
    manifest["domains"] = dict(sorted(manifest["domains"].items()))
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def _check(name: str, passages: list[Passage], queries: list[Query]) -> None:
    ids = {p.id for p in passages}
    if len(ids) != len(passages):
        raise BenchmarkError(f"{name}: duplicate passage ids")
    for q in queries:
        missing = set(q.gold_ids) - ids
        if missing:
            raise BenchmarkError(f"{name}: query {q.id} names unknown gold passages {sorted(missing)[:3]}")


@dataclass
class Domain:
    """A loaded domain: its corpus and queries, indexed by id."""

    spec: DomainSpec
    passages: list[Passage]
    queries: list[Query]
    by_id: dict[str, Passage] = field(default_factory=dict, repr=False)
    query_by_id: dict[str, Query] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.by_id = {p.id: p for p in self.passages}
        self.query_by_id = {q.id: q for q in self.queries}

    @property
    def name(self) -> str:
        return self.spec.name

    def split(self, split: str) -> list[Query]:
        if split not in SPLITS:
            raise BenchmarkError(f"Unknown split '{split}'. Known: {', '.join(SPLITS)}")
        return [q for q in self.queries if q.split == split]

    @cached_property
    def _fingerprint(self) -> str:
        h = hashlib.sha256()
        for p in self.passages:
            h.update(f"{p.id}\t{p.content}\n".encode())
        return h.hexdigest()[:16]

    def fingerprint(self) -> str:
        """Hash of the corpus content (computed once): indexes built for one corpus are never used for another."""
        return self._fingerprint


def load_domain(name: str, benchmark_dir: Path = BENCHMARK_DIR) -> Domain:
    """The domain read from its files (each call reads again: the engine keeps one per domain)."""
    spec = resolve_domain(name)
    if spec.extra.get("passages"):  # your own JSONL files, validated row by row (data/user_files.py)
        from mdrag.data.user_files import read_jsonl_domain

        passages, queries = read_jsonl_domain(spec.extra["queries"], spec.extra["passages"])
    elif spec.extra.get("beir"):
        from mdrag.data.user_files import read_beir_domain

        passages, queries = read_beir_domain(spec.extra["beir"])
    else:
        folder = Path(spec.folder or benchmark_dir / spec.name)
        if not (folder / "passages.jsonl.gz").exists():
            raise BenchmarkError(
                f"Benchmark files for '{spec.name}' are missing in {folder}. Rebuild with: python -m mdrag prepare"
            )
        passages = [Passage(**r) for r in _read_jsonl(folder / "passages.jsonl.gz")]
        queries = [Query(**r) for r in _read_jsonl(folder / "queries.jsonl.gz")]
    if not passages:
        raise EmptyCorpusError(f"Domain '{spec.name}' has an empty corpus: nothing to retrieve from.")
    return Domain(spec, passages, queries)
