"""The paper's question "does QK-Att look at the right passage more?", answered over a domain's test queries:
attention mass the answer puts on the gold passage(s) vs the distractors, by layer band, per variant and
setting, with bootstrap 95% confidence intervals.

Prompts and answers come from a results store (the evaluation grid), so nothing is generated again: the
prompt is rebuilt from the stored passage ids and checked against the stored prompt hash, and the stored
answer text is re-tokenised (the one approximation: a decode/encode round trip can differ from the
generated ids in rare cases). Only prompts holding both gold and non-gold passages say anything here,
so the oracle setting (gold passages only) drops out; noisy and retrieved remain.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pandas as pd
from tqdm import tqdm

from analysis.attention import answer_attention
from mdrag.engine import Engine
from mdrag.evaluation.stats import bootstrap_ci
from mdrag.generation.prompts import build_prompt
from mdrag.trace import RagTrace, RetrievedPassage, VariantAnswer


def layer_band(layer: int, n_layers: int) -> str:
    """Thirds of the depth: early / middle / late."""
    return ("early", "middle", "late")[min(2, layer * 3 // n_layers)]


def trace_from_rows(rows: pd.DataFrame, engine: Engine) -> RagTrace | None:
    """Rebuild one (query, setting) prompt with every variant's stored answer; None if the prompt differs."""
    first = rows.iloc[0]
    domain = engine.domain(first["domain"])
    loaded = engine.generator()
    passages = [domain.by_id[p["id"]] for p in first["passages"]]
    built = build_prompt(loaded.tokenizer, first["question"], [p.content for p in passages])
    if hashlib.sha256(built.text.encode()).hexdigest()[:16] != first["prompt_hash"]:
        return None
    gold = {p["id"] for p in first["passages"] if p["gold"]}
    trace = RagTrace(query=first["question"], domain=first["domain"], setting=first["setting"], retriever="stored",
                     reranker="stored",
                     passages=[RetrievedPassage(p.id, p.title, p.text, p.doc_id, i + 1, None, None, None,
                                                p.id in gold) for i, p in enumerate(passages)],
                     prompt=built.text, prompt_ids=built.input_ids, spans=built.spans, query_id=first["query_id"])
    for _, row in rows.iterrows():
        ids = loaded.tokenizer(row["answer"], add_special_tokens=False)["input_ids"]
        trace.answers[row["variant"]] = VariantAnswer(row["variant"], row["answer"], ids, None, 0.0, row["variant"])
    return trace


def gold_mass(trace: RagTrace, variants: list[str], engine: Engine) -> pd.DataFrame:
    """Per variant and layer band: attention on gold passages, on distractors, and the gold share."""
    gold = {f"passage_{i + 1}" for i, p in enumerate(trace.passages) if p.is_gold}
    distractors = {f"passage_{i + 1}" for i, p in enumerate(trace.passages) if not p.is_gold}
    result = answer_attention(trace, engine, variants)
    frame = result.frame()
    n_layers = int(frame["layer"].max()) + 1
    frame["band"] = [layer_band(x, n_layers) for x in frame["layer"]]
    frame["segment"] = frame["segment"].astype(str)
    per_head = frame.groupby(["variant", "band", "layer", "head"]).apply(
        lambda g: pd.Series({"gold": g.loc[g["segment"].isin(gold), "mass"].sum(),
                             "distractors": g.loc[g["segment"].isin(distractors), "mass"].sum()}),
        include_groups=False)
    out = per_head.groupby(level=["variant", "band"]).mean().reset_index()
    out["gold_share"] = out["gold"] / (out["gold"] + out["distractors"])
    out["gold_per_passage"] = out["gold"] / len(gold)
    out["distractor_per_passage"] = out["distractors"] / len(distractors)
    return out.assign(domain=trace.domain, setting=trace.setting, query_id=trace.query_id)


def gold_attention_rows(results: pd.DataFrame, domain: str, variants: list[str], settings: list[str],
                        engine: Engine, limit: int | None = None,
                        progress: Callable[[float, str], None] | None = None) -> pd.DataFrame:
    """Per-query gold/distractor masses for every usable (query, setting) of a domain in the store."""
    sub = results[(results["domain"] == domain) & results["setting"].isin(settings) & results["variant"].isin(variants)]
    groups = [(key, g) for key, g in sub.groupby(["query_id", "setting"], sort=True)
              if set(variants) <= set(g["variant"])]
    if limit:
        keep = sorted({q for (q, _), _ in groups})[:limit]
        groups = [(k, g) for k, g in groups if k[0] in keep]
    frames = []
    for i, (_, g) in enumerate(tqdm(groups, desc=f"gold attention {domain}", unit="prompt")):
        passages = g.iloc[0]["passages"]
        if not any(p["gold"] for p in passages) or all(p["gold"] for p in passages):
            continue
        trace = trace_from_rows(g[g["variant"].isin(variants)], engine)
        if trace is not None:
            frames.append(gold_mass(trace, variants, engine))
        if progress:
            progress((i + 1) / len(groups), f"{i + 1}/{len(groups)} prompts")
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def summarize(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean gold share (and masses) per setting, variant and band over queries, with bootstrap 95% CIs."""
    out = []
    for (setting, variant, band), g in rows.groupby(["setting", "variant", "band"], sort=True):
        mean, lo, hi = bootstrap_ci(g["gold_share"].tolist())
        out.append({"setting": setting, "variant": variant, "band": band, "prompts": len(g), "gold_share": mean,
                    "CI low": lo, "CI high": hi, "gold_per_passage": g["gold_per_passage"].mean(),
                    "distractor_per_passage": g["distractor_per_passage"].mean()})
    return pd.DataFrame(out)


def ablation_rows(results: pd.DataFrame, domain: str, variants: list[str], settings: list[str],
                  engine: Engine, limit: int | None = None) -> pd.DataFrame:
    """Per stored prompt and variant: is the top-attributed passage (ablation of the variant's own answer)
    a gold one, and is it the top reranked one? (1 + k forwards per prompt and variant.)"""
    from analysis.attribution import passage_ablation

    sub = results[(results["domain"] == domain) & results["setting"].isin(settings) & results["variant"].isin(variants)]
    groups = [g for _, g in sub.groupby(["query_id", "setting"], sort=True) if set(variants) <= set(g["variant"])]
    if limit:
        keep = sorted({g.iloc[0]["query_id"] for g in groups})[:limit]
        groups = [g for g in groups if g.iloc[0]["query_id"] in keep]
    rows = []
    for g in tqdm(groups, desc=f"ablation {domain}", unit="prompt"):
        trace = trace_from_rows(g, engine)
        if trace is None:
            continue
        stored = g.iloc[0]["passages"]
        scored = [p.get("rerank") for p in stored]
        top_rerank = (max(range(len(stored)), key=lambda i: scored[i]) if all(s is not None for s in scored)
                      else min(range(len(stored)), key=lambda i: stored[i]["rank"]))
        for v in variants:
            if not trace.answers[v].token_ids:
                continue
            attr = passage_ablation(trace, v, engine)
            best = max(range(len(attr.scores)), key=attr.scores.__getitem__)
            rows.append({"domain": domain, "setting": trace.setting, "query_id": trace.query_id, "variant": v,
                         "top_is_gold": bool(stored[best]["gold"]), "top_is_top_reranked": best == top_rerank,
                         "any_gold": any(p["gold"] for p in stored)})
    return pd.DataFrame(rows)


def summarize_ablation(rows: pd.DataFrame) -> pd.DataFrame:
    """How often the top-attributed passage is gold / the top reranked one, per setting and variant (CIs)."""
    out = []
    for (setting, variant), g in rows[rows["any_gold"]].groupby(["setting", "variant"], sort=True):
        mean, lo, hi = bootstrap_ci(g["top_is_gold"].astype(float).tolist())
        out.append({"setting": setting, "variant": variant, "prompts": len(g), "top is gold": mean, "CI low": lo,
                    "CI high": hi, "top is top reranked": g["top_is_top_reranked"].mean()})
    return pd.DataFrame(out)
