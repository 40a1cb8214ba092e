"""Where adapted dense encoders are and how their queries are prefixed: read by retrieval, written by
training (training/retriever.py trains them). Lookup: the cache first (trained on this machine), then the
shipped copy in assets/retrievers."""

from __future__ import annotations

import json
from pathlib import Path

from mdrag.config import ASSETS_DIR, cache_dir
from mdrag.data.domains import DOMAINS
from mdrag.errors import MissingModelError

INSTRUCTION = "Represent this {topic} question for retrieving passages: "
TOPICS = {"general": "general-knowledge", "biomedical": "biomedical", "finance": "finance",
          "long-form": "general-knowledge"}


def instruction_for(domain: str, instruction: bool) -> str:
    return INSTRUCTION.format(topic=TOPICS.get(DOMAINS[domain].cluster, "domain")) if instruction else ""


SHIPPED_RETRIEVERS = ASSETS_DIR / "retrievers"


def adapted_dir(source: str) -> Path:
    """Where training writes the encoder adapted on `source` (a domain, or domains joined by '+')."""
    return cache_dir() / "retrievers" / source


def find_adapted(source: str) -> Path:
    """The encoder adapted on `source`: trained on this machine (cache) first, else the shipped one."""
    for folder in (adapted_dir(source), SHIPPED_RETRIEVERS / source):
        if (folder / "card.json").exists():
            return folder
    return adapted_dir(source)  # missing: load_card says how to train it


def available_adapted() -> list[str]:
    """Sources with an adapted encoder here (trained on this machine or shipped)."""
    roots = [cache_dir() / "retrievers", SHIPPED_RETRIEVERS]
    return sorted({p.parent.name for root in roots if root.exists() for p in root.glob("*/card.json")})


def load_card(folder: Path) -> dict:
    card = folder / "card.json"
    if not card.exists():
        raise MissingModelError(
            f"No adapted retriever at {folder}: train it with `python -m mdrag train-retriever --domain "
            f"{folder.name.replace('+', ',')}`")
    return json.loads(card.read_text())
