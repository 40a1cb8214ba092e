"""Registry of generator variants: the vanilla model and the paper's LoRA variants.

Variants are data: target modules, a rank rule and a label source. The paper matches trainable
parameter counts across variants to the Full-LoRA budget (r=16 on all linear layers); on another model
the ranks are recomputed from its shapes (`matched_rank`). On SmolLM2-135M this gives QK-Att r=85
(budget within 0.3% of Full's 4.88M).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from mdrag.config import ASSETS_DIR
from mdrag.errors import MissingModelError, UnknownNameError

ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
FULL_RANK = 16  # paper: Full-LoRA r=16 on all linear layers sets the budget


@dataclass(frozen=True)
class VariantSpec:
    name: str
    label: str
    target_modules: tuple[str, ...] = ()  # empty: no adapter (the base model)
    labels: str = "gold"  # training labels: gold answers or teacher answers (SKD)
    # The first stage that found the training passages. Two-phase variants (retriever adapted first, then
    # the generator trained on what the adapted retriever finds) name the adapted encoder here.
    retriever: str = "splade"
    # A two-phase variant's independent-order twin: the same recipe trained on the base retriever's passages
    # (compared on the adapted retriever, the pair isolates what re-retrieving before training adds).
    one_phase: str | None = None

    @property
    def is_base(self) -> bool:
        return not self.target_modules


VARIANTS: dict[str, VariantSpec] = {}


def register_variant(spec: VariantSpec) -> VariantSpec:
    VARIANTS[spec.name] = spec
    return spec


for _v in [
    VariantSpec("vanilla", "Vanilla (no adapter)"),
    VariantSpec("full", "Full-LoRA (all linear)", ALL_LINEAR),
    VariantSpec("qk_att", "QK-Att LoRA (q, k)", ("q_proj", "k_proj")),
    VariantSpec("att", "Att LoRA (q, k, v, o)", ("q_proj", "k_proj", "v_proj", "o_proj")),
    VariantSpec("mlp", "MLP LoRA (gate, up, down)", ("gate_proj", "up_proj", "down_proj")),
    VariantSpec("full_skd", "Full-LoRA + SKD (teacher labels)", ALL_LINEAR, labels="teacher"),
    # Two-phase order: adapt the retriever on the generator's training domain (nq_open), re-retrieve, then
    # train the generator on those passages (vs the independent order: qk_att / full on SPLADE passages).
    VariantSpec("qk_att_2p", "QK-Att LoRA, two-phase (trained on adapted-retriever passages)",
                ("q_proj", "k_proj"), retriever="dense-ft:nq_open", one_phase="qk_att"),
    VariantSpec("full_2p", "Full-LoRA, two-phase (trained on adapted-retriever passages)", ALL_LINEAR,
                retriever="dense-ft:nq_open", one_phase="full"),
]:
    register_variant(_v)


def get_variant(name: str) -> VariantSpec:
    if name not in VARIANTS:
        raise UnknownNameError(f"Unknown variant '{name}'. Known: {', '.join(VARIANTS)}")
    return VARIANTS[name]


def module_shapes(config) -> dict[str, tuple[int, int]]:
    """(in_features, out_features) of each LoRA-targetable linear layer of a Llama-style decoder."""
    h = config.hidden_size
    hd = getattr(config, "head_dim", None) or h // config.num_attention_heads
    q, kv = config.num_attention_heads * hd, config.num_key_value_heads * hd
    i = config.intermediate_size
    return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
            "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}


def lora_parameters(config, modules: tuple[str, ...], rank: int) -> int:
    """Trainable LoRA parameters: r * (in + out) per targeted module per layer."""
    shapes = module_shapes(config)
    return rank * sum(sum(shapes[m]) for m in modules) * config.num_hidden_layers


def matched_rank(config, modules: tuple[str, ...]) -> int:
    """The rank whose parameter count is closest to Full-LoRA r=16's budget on this model."""
    budget = lora_parameters(config, ALL_LINEAR, FULL_RANK)
    per_rank = lora_parameters(config, modules, 1)
    return max(1, round(budget / per_rank))


def adapters_root() -> Path:
    """Shipped adapters live in assets/adapters; MDRAG_ADAPTERS points elsewhere (your own trained set)."""
    return Path(os.environ.get("MDRAG_ADAPTERS", ASSETS_DIR / "adapters"))


def available_variants() -> list[str]:
    """Variants usable here: the base, and every variant whose adapter has been trained or shipped."""
    return [n for n, spec in VARIANTS.items()
            if spec.is_base or (adapters_root() / n / "adapter_model.safetensors").exists()]


def adapter_dir(name: str) -> Path:
    """Where a variant's trained adapter is; a clear error until it has been trained."""
    spec = get_variant(name)
    folder = adapters_root() / spec.name
    if not (folder / "adapter_model.safetensors").exists():
        raise MissingModelError(
            f"No trained adapter for variant '{name}' ({spec.label}) in {folder}. "
            f"Train it with: python -m mdrag train --variant {name}"
        )
    return folder
