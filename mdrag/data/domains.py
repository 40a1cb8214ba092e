"""Domain registry: a domain is a named corpus + queries with the paper's cluster.

The five shipped domains are registered here; `register_jsonl_domain` adds one from plain JSONL files.
Cluster names resolve to a domain when the cluster holds exactly one (`general` -> `nq_open`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mdrag.errors import UnknownNameError


@dataclass(frozen=True)
class DomainSpec:
    name: str
    cluster: str  # paper's domain cluster: general, biomedical, finance, long-form
    description: str
    source: str  # attribution: repository @ commit
    licence: str
    folder: Path | None = None  # None: the shipped benchmark folder <benchmark>/<name>
    extra: dict = field(default_factory=dict)


DOMAINS: dict[str, DomainSpec] = {}


def register_domain(spec: DomainSpec) -> DomainSpec:
    DOMAINS[spec.name] = spec
    return spec


for _spec in [
    DomainSpec("nq_open", "general", "Natural Questions (open), short answers, Wikipedia passages",
               "nelson-liu/lost-in-the-middle @ 29b8a6d0", "MIT"),
    DomainSpec("pubmedqa", "biomedical", "PubMedQA expert-labelled yes/no questions over abstracts",
               "pubmedqa/pubmedqa @ 1cbae8e9", "MIT"),
    DomainSpec("covidqa", "biomedical", "COVID-QA extractive questions over 98 full papers",
               "deepset-ai/COVID-QA @ fb2eb5e2", "Apache-2.0"),
    DomainSpec("tatqa", "finance", "TAT-QA questions over annual-report tables and paragraphs",
               "NExTplusplus/TAT-QA @ 870accc4", "MIT"),
    DomainSpec("clapnq", "long-form", "ClapNQ long grounded answers (answerable + unanswerable)",
               "primeqa/clapnq @ eb26840d", "Apache-2.0"),
]:
    register_domain(_spec)


def resolve_domain(name: str) -> DomainSpec:
    """A domain by name, or by cluster name when that cluster has exactly one domain."""
    key = (name or "").strip().lower()
    if key in DOMAINS:
        return DOMAINS[key]
    in_cluster = [d for d in DOMAINS.values() if d.cluster == key]
    if len(in_cluster) == 1:
        return in_cluster[0]
    known = ", ".join(f"{d.name} ({d.cluster})" for d in DOMAINS.values())
    if in_cluster:
        raise UnknownNameError(
            f"Cluster '{name}' has several domains: {', '.join(d.name for d in in_cluster)}. Pick one."
        )
    raise UnknownNameError(f"Unknown domain '{name}'. Known domains: {known}.")


def register_jsonl_domain(name: str, queries: Path, passages: Path, cluster: str = "custom",
                          description: str = "", licence: str = "unknown") -> DomainSpec:
    """Register a domain from two JSONL files (one call, then it works like a shipped domain).

    passages.jsonl rows: {"id", "text", "title"?, "doc_id"?}
    queries.jsonl rows:  {"id", "text", "answers"?: [...], "gold_ids"?: [...], "answer_type"?, "split"?}
    Missing fields default to: title "", doc_id = id, answers [], gold_ids [], answer_type "short",
    split "test". Files are read when the domain is first loaded.
    """
    for path in (queries, passages):
        if not Path(path).is_file():
            raise FileNotFoundError(f"Domain '{name}': file not found: {path}")
    return register_domain(DomainSpec(name.strip().lower(), cluster, description or name, str(queries), licence,
                                      folder=None, extra={"queries": Path(queries), "passages": Path(passages)}))


def register_beir_domain(name: str, folder: Path, cluster: str = "custom", description: str = "",
                         licence: str = "unknown") -> DomainSpec:
    """Register a BEIR-layout folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv) as a domain."""
    if not (Path(folder) / "qrels").is_dir():
        raise FileNotFoundError(f"Domain '{name}': {folder} is not a BEIR folder (no qrels/)")
    return register_domain(DomainSpec(name.strip().lower(), cluster, description or f"{name} (BEIR)", str(folder),
                                      licence, folder=None, extra={"beir": Path(folder)}))


# Entries of a domains file that could not be registered, by name: reported by `python -m mdrag domains`
# instead of breaking every other domain.
DOMAIN_ERRORS: dict[str, str] = {}


def register_domains_file(path: Path) -> list[str]:
    """Register every domain listed in a JSON file: [{"name", "queries", "passages", ...} or {"name", "beir":
    folder, ...}, with "cluster"?, "description"?, "licence"?]; relative paths resolve against the file's
    folder. Used for MDRAG_DOMAINS_FILE, so the app and the CLI pick up your own corpora without code. A bad
    entry is recorded in DOMAIN_ERRORS and the others are registered."""
    import json

    from mdrag.errors import MdragError

    path = Path(path)
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(entries, list):
            raise ValueError("the file must hold a JSON list of domains")
    except (OSError, ValueError) as err:
        raise MdragError(f"MDRAG_DOMAINS_FILE {path}: {err}") from err

    def where(value: str) -> Path:
        return Path(value) if Path(value).is_absolute() else path.parent / value

    names = []
    for i, e in enumerate(entries):
        name = str(e.get("name", f"entry {i + 1}")).strip().lower() if isinstance(e, dict) else f"entry {i + 1}"
        try:
            if not isinstance(e, dict) or "name" not in e:
                raise ValueError("each entry needs a 'name'")
            meta = (e.get("cluster", "custom"), e.get("description", ""), e.get("licence", "unknown"))
            if "beir" in e:
                register_beir_domain(e["name"], where(e["beir"]), *meta)
            else:
                missing = [k for k in ("queries", "passages") if k not in e]
                if missing:
                    raise ValueError(f"needs {' and '.join(missing)} (or 'beir': a BEIR folder)")
                register_jsonl_domain(e["name"], where(e["queries"]), where(e["passages"]), *meta)
            names.append(name)
        except (OSError, ValueError, TypeError) as err:
            DOMAIN_ERRORS[name] = f"{path} entry {i + 1}: {err}"
    return names

