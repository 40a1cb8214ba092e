"""Adapter-aware views: how big each variant's LoRA update is per layer and module, what attention change it
causes on a prompt, and, for one query, what changed between two variants."""

from __future__ import annotations

import pandas as pd

from analysis.attention import SegmentAttention
from analysis.attribution import Attribution
from mdrag.generation.adapters import update_norms
from mdrag.generation.variants import adapter_dir, get_variant
from mdrag.trace import RagTrace


def lora_norms(variants: list[str]) -> pd.DataFrame:
    """(variant, layer, module, norm) of ||scaling * B @ A||_F, read from the adapter files."""
    frames = []
    for v in variants:
        if get_variant(v).is_base:
            continue
        rows = update_norms(adapter_dir(v))
        frames.append(pd.DataFrame(rows).assign(variant=v))
    if not frames:
        return pd.DataFrame(columns=["variant", "layer", "module", "norm"])
    return pd.concat(frames, ignore_index=True)[["variant", "layer", "module", "norm"]]


def attention_shift(attention: SegmentAttention, variant: str, reference: str = "vanilla") -> pd.DataFrame:
    """Per layer, total variation between the variant's and the reference's segment distributions
    (half the L1 distance, averaged over heads): 0 = same attention, 1 = disjoint."""
    frame = attention.frame()
    wide = frame.pivot_table(index=["layer", "head", "segment"], columns="variant", values="mass", observed=True)
    if variant not in wide or reference not in wide:
        raise KeyError(f"Need attention for both {variant} and {reference}")
    tv = (wide[variant] - wide[reference]).abs().groupby(level=["layer", "head"]).sum() / 2
    return tv.groupby(level="layer").mean().rename("attention_shift").reset_index()


def norms_beside_shift(norms: pd.DataFrame, attention: SegmentAttention, variant: str,
                       reference: str = "vanilla") -> pd.DataFrame:
    """Per layer: the variant's update norm (summed over modules) next to the attention shift it causes."""
    per_layer = norms[norms["variant"] == variant].groupby("layer")["norm"].sum().rename("update_norm")
    return attention_shift(attention, variant, reference).merge(per_layer.reset_index(), on="layer", how="left")


def what_changed(trace: RagTrace, a: str, b: str, attention: SegmentAttention,
                 attributions: dict[str, Attribution]) -> pd.DataFrame:
    """Per passage, variant A vs B: attention mass (mean over layers, heads, answer tokens) and ablation
    score, and the change; sorted by how much the passage's influence changed."""
    frame = attention.frame()
    mass = frame[frame["segment"].astype(str).str.startswith("passage_")].groupby(
        ["variant", "segment"], observed=True)["mass"].mean()
    rows = []
    for i, p in enumerate(trace.passages):
        name = f"passage_{i + 1}"
        row = {"passage": name, "gold": p.is_gold, "title": p.title,
               f"attention {a}": float(mass.get((a, name), float("nan"))),
               f"attention {b}": float(mass.get((b, name), float("nan")))}
        for v in (a, b):
            attr = attributions.get(v)
            row[f"ablation {v}"] = attr.scores[attr.features.index(name)] if attr and name in attr.features else None
        rows.append(row)
    out = pd.DataFrame(rows)
    out["Δ attention"] = out[f"attention {a}"] - out[f"attention {b}"]
    if out[f"ablation {a}"].notna().all() and out[f"ablation {b}"].notna().all():
        out["Δ ablation"] = out[f"ablation {a}"] - out[f"ablation {b}"]
        return out.sort_values("Δ ablation", key=abs, ascending=False).reset_index(drop=True)
    return out.sort_values("Δ attention", key=abs, ascending=False).reset_index(drop=True)
