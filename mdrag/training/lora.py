"""From a registered variant to a peft LoraConfig, with the paper's hyper-parameters.

Paper: alpha 32, dropout 0.1; Full-LoRA r=16 on all linear layers; partial variants get the rank that
trains the same number of parameters as Full on the loaded base model (variants.matched_rank).
"""

from __future__ import annotations

from mdrag.generation.variants import (
    FULL_RANK,
    PAPER_ALPHA,
    SCALINGS,
    VARIANTS,
    VariantSpec,
    get_variant,
    lora_parameters,
    matched_rank,
)

LORA_ALPHA = PAPER_ALPHA
LORA_DROPOUT = 0.1


def variant_rank(spec: VariantSpec, model_config) -> int:
    if set(spec.target_modules) == set(VARIANTS["full"].target_modules):
        return FULL_RANK
    return matched_rank(model_config, spec.target_modules)


def lora_config(variant: str, model_config):
    from peft import LoraConfig

    spec = get_variant(variant)
    if spec.is_base:
        raise ValueError(f"variant '{variant}' has no adapter to train")
    rank = variant_rank(spec, model_config)
    scaling = SCALINGS[spec.scaling]
    return LoraConfig(r=rank, lora_alpha=scaling.alpha(rank), lora_dropout=LORA_DROPOUT, use_rslora=scaling.rslora,
                      target_modules=list(spec.target_modules), bias="none", task_type="CAUSAL_LM")


def budget_table(model_config) -> list[dict]:
    """variant -> modules, rank, trainable parameters, ratio to Full's budget."""
    full = lora_parameters(model_config, VARIANTS["full"].target_modules, FULL_RANK)
    rows = []
    for spec in VARIANTS.values():
        if spec.is_base:
            continue
        r = variant_rank(spec, model_config)
        n = lora_parameters(model_config, spec.target_modules, r)
        rows.append({"variant": spec.name, "modules": ",".join(spec.target_modules), "rank": r,
                     "trainable": n, "vs_full": n / full, "labels": spec.labels,
                     "alpha": SCALINGS[spec.scaling].alpha(r), "scaling": SCALINGS[spec.scaling].factor(r),
                     "order": "shuffled" if spec.shuffle else "rerank"})
    return rows
