"""Adapt the dense retriever (packaged all-MiniLM-L6-v2) to one domain or several.

The paper keeps its retriever fixed; the work it builds on finds that adapting the retriever is often the
larger win. Contrastive fine-tuning with sentence-transformers: MultipleNegativesRankingLoss over
(question, gold passage, hard negative) triples: every other passage in the batch is an in-batch negative,
and one mined hard negative per pair (`mine_hard_negatives`: high-scoring corpus passages under the encoder
being adapted) makes the contrast harder. Mined negatives that are gold for the question (questions with
several gold passages, or duplicate texts) are dropped: a gold passage must never be pushed away.

Optional instruction prefix on questions ("Represent this finance question for retrieving passages: "),
stored in the card and applied at query time. Several domains train as one multi-task run (one batch =
one domain, so in-batch negatives come from the same corpus).

By default only a LoRA on the encoder's linear layers is trained (peft through sentence-transformers'
`add_adapter`): the checkpoint is 1.4 MB in fp16 instead of 45 MB, small enough to ship one per domain in
assets/retrievers (`--ship`). `lora_rank=0` fine-tunes every weight instead (cache only).

Saved as fp16 safetensors (sentence-transformers layout) with card.json in the cache; a killed run resumes
from its last checkpoint. Lookup: the cache first (what was trained on this machine), then the shipped copy.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mdrag.config import MINILM, cache_dir
from mdrag.data.benchmark import Domain, load_domain
from mdrag.errors import BenchmarkError
from mdrag.hashing import folder_fingerprint
from mdrag.retrieval import adapted
from mdrag.retrieval.adapted import (  # where retrieval finds what this module trains
    adapted_dir,
    available_adapted,
    find_adapted,
    instruction_for,
    load_card,
)
from mdrag.training.saving import publish, swap_in, write_card

if TYPE_CHECKING:
    import pandas as pd

@dataclass
class RetrieverSettings:
    epochs: float = 1.0
    batch_size: int = 32  # in-batch negatives: 31 per question
    learning_rate: float | None = None  # None: 2e-4 for a LoRA, 2e-5 for all weights
    warmup: float = 0.1
    hard_negatives: int = 1  # mined per (question, gold passage) pair; 0 = in-batch negatives only
    mine_range: int = 30  # negatives are drawn from the encoder's top-N passages
    instruction: bool = True
    max_steps: int = -1
    save_steps: int = 50
    seed: int = 0
    limit: int | None = None  # at most this many training questions per domain (None: all)
    lora_rank: int = 16  # LoRA on query/key/value/dense of every layer; 0 = fine-tune all weights
    lora_targets: tuple[str, ...] = ("query", "key", "value", "dense")  # BERT's linear layers

    @property
    def lr(self) -> float:
        return self.learning_rate or (2e-4 if self.lora_rank else 2e-5)




def training_pairs(domain: Domain, prefix: str, limit: int | None = None) -> list[dict]:
    """(anchor = prefixed question, positive = gold passage content) per gold passage of each training
    question; `gold` keeps every gold content of the question for filtering negatives."""
    rows = []
    for q in domain.split("train")[:limit]:
        golds = [domain.by_id[g].content for g in q.gold_ids if g in domain.by_id]
        rows += [{"anchor": prefix + q.text, "positive": g, "gold": golds} for g in golds]
    return rows


def with_hard_negatives(pairs: list[dict], domain: Domain, model, settings: RetrieverSettings) -> list[dict]:
    """Add `hard_negatives` mined negative columns per pair, never a gold passage of the pair's question.

    The miner only excludes the pair's own positive, so it is asked for as many extra candidates as the
    question has other gold passages; gold ones are skipped and the best remaining are kept. A pair left
    with too few negatives is dropped (counted in the card)."""
    from datasets import Dataset
    from sentence_transformers.util import mine_hard_negatives

    if settings.hard_negatives <= 0 or not pairs:
        return [{"anchor": p["anchor"], "positive": p["positive"]} for p in pairs]
    extra = max(len(p["gold"]) for p in pairs) - 1
    mined = mine_hard_negatives(
        Dataset.from_list([{"anchor": p["anchor"], "positive": p["positive"]} for p in pairs]), model,
        corpus=[p.content for p in domain.passages], range_max=settings.mine_range + extra,
        num_negatives=settings.hard_negatives + extra, sampling_strategy="top", output_format="n-tuple",
        batch_size=64, verbose=False)
    gold_of: dict[tuple[str, str], set[str]] = {(p["anchor"], p["positive"]): set(p["gold"]) for p in pairs}
    out = []
    for row in mined:
        gold = gold_of[(row["anchor"], row["positive"])]
        negatives = [v for k, v in row.items() if k.startswith("negative") and v not in gold]
        if len(negatives) >= settings.hard_negatives:
            out.append({"anchor": row["anchor"], "positive": row["positive"],
                        **{f"negative_{i + 1}": n for i, n in enumerate(negatives[: settings.hard_negatives])}})
    return out


def train_retriever(domains: list[str], settings: RetrieverSettings | None = None, base: Path | None = None,
                    out_dir: Path | None = None, callbacks: list | None = None) -> dict:
    """Fine-tune the dense encoder on the domains' training questions; returns the card."""
    import torch
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from sentence_transformers.sentence_transformer.training_args import BatchSamplers
    from transformers.trainer_utils import get_last_checkpoint

    settings = settings or RetrieverSettings()
    base = Path(base or MINILM.path())
    source = "+".join(domains)
    target = out_dir or adapted_dir(source)
    torch.manual_seed(settings.seed)
    model = SentenceTransformer(str(base), device="cpu")
    data, counts = {}, {}
    for name in domains:
        domain = load_domain(name)
        pairs = training_pairs(domain, instruction_for(name, settings.instruction), settings.limit)
        if not pairs:
            raise BenchmarkError(f"Domain '{name}' has no training questions with gold passages: nothing to "
                                 "adapt the retriever on")
        rows = with_hard_negatives(pairs, domain, model, settings)  # mined with the unadapted encoder
        counts[name] = {"pairs": len(pairs), "kept_with_negatives": len(rows)}
        data[name] = Dataset.from_list(rows)
    if settings.lora_rank:
        from peft import LoraConfig, TaskType

        model.add_adapter(LoraConfig(task_type=TaskType.FEATURE_EXTRACTION, r=settings.lora_rank,
                                     lora_alpha=2 * settings.lora_rank, lora_dropout=0.1,
                                     target_modules=list(settings.lora_targets)))
    base_fp = folder_fingerprint(base)
    run = cache_dir() / "runs" / f"retriever-{source}-{base_fp}-{_settings_key(settings)}"
    run.mkdir(parents=True, exist_ok=True)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(run), num_train_epochs=settings.epochs, max_steps=settings.max_steps,
        per_device_train_batch_size=settings.batch_size, learning_rate=settings.lr,
        warmup_steps=settings.warmup, seed=settings.seed, data_seed=settings.seed, logging_steps=1,
        save_steps=settings.save_steps, save_total_limit=2, report_to="none", use_cpu=True,
        batch_sampler=BatchSamplers.NO_DUPLICATES,  # a duplicate passage in a batch is a false negative
        dataloader_num_workers=0)
    train = data if len(data) > 1 else next(iter(data.values()))
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=train,
                                         loss=MultipleNegativesRankingLoss(model), callbacks=callbacks)
    last = get_last_checkpoint(str(run)) if any(run.glob("checkpoint-*")) else None
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=last)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    packaged = base_fp == folder_fingerprint(MINILM.path())
    card = {"domains": domains, "base": "packaged all-MiniLM-L6-v2" if packaged else base.name,
            "base_fingerprint": base_fp,
            # a LoRA needs its base at load time: the packaged one is found by fingerprint; another base's
            # path is kept for this machine only (such a checkpoint is never shipped)
            "base_path": None if packaged else str(base.resolve()),
            "kind": f"LoRA r={settings.lora_rank} on {', '.join(settings.lora_targets)}" if settings.lora_rank
            else "all weights",
            "trainable_parameters": int(sum(p.numel() for p in model.parameters() if p.requires_grad)),
            "instructions": {d: instruction_for(d, settings.instruction) for d in domains}, "data": counts,
            "settings": asdict(settings), "steps": int(trainer.state.global_step),
            "first_loss": losses[0] if losses else None, "final_loss": losses[-1] if losses else None,
            "resumed_from": Path(last).name if last else None,
            "wall_seconds_this_run": round(time.perf_counter() - started, 1),
            "loss": "MultipleNegativesRankingLoss (in-batch + mined hard negatives)"}
    _save(model, Path(target), card)
    return card


def _settings_key(settings: RetrieverSettings) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(asdict(settings), sort_keys=True).encode()).hexdigest()[:10]


def _save(model, target: Path, card: dict) -> None:
    """fp16 safetensors in sentence-transformers layout + card.json, swapped in whole. A LoRA is saved
    as its adapter alone (adapter_model.safetensors), naming its base without a path."""
    tmp = target.with_name(f".{target.name}-tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.half()
    model.save(str(tmp), safe_serialization=True)
    model.float()
    publish(tmp, target, card, card["base"])


def ship_retriever(source: str) -> Path:
    """Copy a LoRA-adapted encoder from the cache into assets/retrievers (to commit). Only a LoRA on the
    packaged encoder ships: a full copy is 45 MB, and another base would not exist on a fresh clone."""
    folder = adapted_dir(source)
    card = load_card(folder)
    if not (folder / "adapter_model.safetensors").exists():
        raise BenchmarkError(f"{folder} holds all weights of the encoder ({card.get('kind')}); only a LoRA "
                             "checkpoint is small enough to ship: train with a LoRA rank > 0")
    if card.get("base_path"):
        raise BenchmarkError(f"{folder} adapts {card['base_path']}, not the packaged encoder: it cannot ship")
    target = adapted.SHIPPED_RETRIEVERS / source
    tmp = target.with_name(f".{target.name}-tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(folder, tmp)
    swap_in(tmp, target)
    return target


def record_comparison(source: str, rows: list[dict], split: str, limit: int | None) -> Path:
    """Store a before/after table (compare_retrievers rows) in the card of the encoder retrieval uses
    (trained here, else shipped); returns the card's path."""
    folder = find_adapted(source)
    card = load_card(folder)
    card["evaluation"] = {"split": split, "limit": limit, "rows": rows}
    return write_card(folder, card)


def adaptation_table() -> pd.DataFrame:
    """Before/after rows of every adapted encoder with a stored comparison (cache and shipped), one row per
    (encoder, domain, metric); `trained_on_it` False rows are the forgetting check."""
    import pandas as pd

    rows = []
    for source in available_adapted():
        folder = find_adapted(source)  # the copy retrieval uses: trained here shadows shipped
        card = load_card(folder)
        where = "shipped" if folder.parent == adapted.SHIPPED_RETRIEVERS else "trained here"
        rows += [{"encoder": f"dense-ft:{source}", "kind": card.get("kind", "all weights"), "where": where, **r}
                 for r in card.get("evaluation", {}).get("rows", [])]
    return pd.DataFrame(rows)
