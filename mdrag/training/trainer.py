"""Train one LoRA variant with TRL's SFTTrainer (completion-only loss, peft integration).

Paper hyper-parameters: lr 5e-4, 1 epoch, AdamW, weight decay 0.1, warmup 0.05, batch 1. Checkpoints
every `save_steps` examples go to the run folder in the cache; a killed run resumes from the last one
(the Trainer restores optimizer, scheduler, RNG and data position, so no example is repeated or skipped).
The finished adapter is written as fp16 safetensors with a JSON card.

Multi-GPU: the same function runs under `accelerate launch` / `torchrun` (see README).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from mdrag.config import cache_dir
from mdrag.generation.model import resolve_generator_dir
from mdrag.generation.variants import adapters_root, get_variant
from mdrag.hashing import folder_fingerprint
from mdrag.machine import cpu, versions
from mdrag.training.examples import ExampleSpec, rag_examples, sft_rows, shuffled_passages
from mdrag.training.lora import LORA_DROPOUT, lora_config
from mdrag.training.saving import publish


@dataclass
class TrainSettings:
    learning_rate: float = 5e-4
    epochs: float = 1.0
    weight_decay: float = 0.1
    warmup: float = 0.05  # a float < 1 is read as a ratio of the total steps
    batch_size: int = 1
    max_length: int = 1024
    save_steps: int = 16
    seed: int = 0
    max_steps: int = -1  # -1: one full epoch
    # "bf16": float32 weights, matmuls autocast to bfloat16 (how the shipped adapters were trained: TRL's default);
    # "fp32": float32 throughout; None: bf16 where it is native (a GPU, or a CPU with avx512_bf16/AMX), else fp32.
    # Why: on an AVX2-only CPU oneDNN emulates bf16, and a training step took ~100 s instead of ~9 s
    # (`python -m bench --only train` times both on the machine at hand).
    precision: str | None = None


PRECISIONS = ("bf16", "fp32")


def resolve_precision(requested: str | None = None) -> str:
    """The training precision: the one asked for, else bf16 only where bfloat16 matmuls are native."""
    import torch

    from mdrag.config import native_bf16

    if requested is not None:
        if requested not in PRECISIONS:
            raise ValueError(f"unknown precision {requested!r}: one of {', '.join(PRECISIONS)}")
        return requested
    return "bf16" if torch.cuda.is_available() or native_bf16() else "fp32"


def run_dir(variant: str, labels: str, spec: ExampleSpec, base_fp: str, precision: str) -> Path:
    """Checkpoints of one training run; a run resumes only checkpoints made in its own precision."""
    return cache_dir() / "runs" / f"{variant}-{labels}-{spec.domain}-{spec.key()}-{base_fp}-{precision}"


def train_variant(variant: str, labels: str | None = None, spec: ExampleSpec | None = None,
                  settings: TrainSettings | None = None, generator_path: str | None = None,
                  teacher_labels: dict[str, str] | None = None, out_dir: Path | None = None,
                  examples: list[dict] | None = None, callbacks: list | None = None) -> dict:
    """Train (or resume) `variant` and write its adapter + card to `out_dir` (default assets/adapters)."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.trainer_utils import get_last_checkpoint
    from trl import SFTConfig, SFTTrainer

    spec, settings = spec or ExampleSpec(), settings or TrainSettings()
    vspec = get_variant(variant)
    labels = labels or vspec.labels
    if labels == "teacher" and teacher_labels is None:
        raise ValueError("teacher labels are needed: run `python -m mdrag distill` first")
    base_dir = resolve_generator_dir(generator_path)
    base_fp = folder_fingerprint(base_dir)
    examples = examples if examples is not None else rag_examples(spec)
    if vspec.shuffle:  # the control for the Document-1 shortcut: gold passage no longer usually first
        examples = shuffled_passages(examples, settings.seed)
    rows = sft_rows(examples, teacher_labels if labels == "teacher" else None)
    precision = resolve_precision(settings.precision)
    folder = run_dir(variant, labels, spec, base_fp, precision)  # variant name holds its order and scaling
    folder.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(settings.seed)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32, attn_implementation="sdpa")
    config = SFTConfig(
        output_dir=str(folder), per_device_train_batch_size=settings.batch_size, learning_rate=settings.learning_rate,
        num_train_epochs=settings.epochs, max_steps=settings.max_steps, weight_decay=settings.weight_decay,
        warmup_steps=settings.warmup, lr_scheduler_type="linear", optim="adamw_torch", logging_steps=1,
        save_steps=settings.save_steps, save_total_limit=2, use_cpu=not torch.cuda.is_available(),
        report_to="none", seed=settings.seed,
        data_seed=settings.seed, max_length=settings.max_length, completion_only_loss=True,
        dataloader_num_workers=0, disable_tqdm=False, bf16=precision == "bf16",
        # a 135M model's activations at 1024 tokens fit in memory; recomputing them cost ~25% of a CPU step
        gradient_checkpointing=False,
    )
    trainer = SFTTrainer(model=model, args=config, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                         peft_config=lora_config(variant, model.config), callbacks=callbacks)
    last = get_last_checkpoint(str(folder)) if any(folder.glob("checkpoint-*")) else None
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=last)
    wall = time.perf_counter() - started
    tokens = int(sum(len(ids) for ids in trainer.train_dataset["input_ids"]))
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    card = {
        "variant": variant, "label": vspec.label, "labels": labels,
        "teacher": (teacher_labels or {}).get("__teacher__") if labels == "teacher" else None,
        "base_model": base_dir.name, "base_fingerprint": base_fp,
        "target_modules": list(vspec.target_modules), "rank": trainer.model.peft_config["default"].r,
        "lora_alpha": trainer.model.peft_config["default"].lora_alpha, "lora_dropout": LORA_DROPOUT,
        "use_rslora": trainer.model.peft_config["default"].use_rslora, "scaling": vspec.scaling,
        "passage_order": "shuffled (seeded)" if vspec.shuffle else "rerank",
        "trainable_parameters": int(sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)),
        "data": {**spec.__dict__, "n": len(examples), "query_ids_sha256": _ids_hash(examples)}, "examples": len(rows),
        "tokens": tokens, "steps": int(trainer.state.global_step), "final_loss": losses[-1] if losses else None,
        # over every step: the Trainer's training_loss averages only the steps of this (possibly resumed) run,
        # while the checkpoint's log history holds every step's loss (logging_steps=1)
        "mean_loss": sum(losses) / len(losses) if losses else result.training_loss,
        "resumed_from": Path(last).name if last else None,
        "wall_seconds_this_run": round(wall, 1), "settings": {**settings.__dict__, "precision": precision},
        "precision": precision, "versions": versions(), "cpu": cpu(),
    }
    target = out_dir or adapters_root() / variant
    save_adapter(trainer.model, target, card)
    return card


def _ids_hash(examples: list[dict]) -> str:
    import hashlib

    return hashlib.sha256("\n".join(e["query_id"] for e in examples).encode()).hexdigest()[:16]


def save_adapter(peft_model, target: Path, card: dict) -> None:
    """fp16 safetensors + adapter_config.json (no machine paths) + card.json, swapped in atomically."""
    from safetensors.torch import load_file, save_file

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
    peft_model.save_pretrained(tmp, safe_serialization=True)
    weights = {k: v.half().contiguous() for k, v in load_file(tmp / "adapter_model.safetensors").items()}
    save_file(weights, tmp / "adapter_model.safetensors", metadata={"format": "pt"})
    publish(tmp, target, card, card["base_model"])
