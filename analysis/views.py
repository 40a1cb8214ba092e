"""Ready-to-show bundles for the app: each function runs the analysis for a trace and returns figures,
frames and escaped HTML. The app calls these and only places the results on screen."""

from __future__ import annotations

import html

import pandas as pd

from analysis import figures
from analysis.attention import SegmentAttention, answer_attention
from analysis.attribution import Attribution, agreement, deletion_curve, passage_ablation, sentence_ablation
from analysis.bertviz_offline import (
    head_view_html,
    model_view_html,
    segment_level_attention,
    token_window_attention,
)
from analysis.lora_views import lora_norms, norms_beside_shift, what_changed
from mdrag.engine import Engine
from mdrag.trace import RagTrace


def gold_segments(trace: RagTrace) -> list[str]:
    return [f"passage_{i + 1}" for i, p in enumerate(trace.passages) if p.is_gold]


def attention_bundle(trace: RagTrace, engine: Engine, a: str, b: str, tokens: tuple[int, int] | None = None) -> dict:
    """Heatmaps for A and B, their difference, and the SegmentAttention for drill-downs."""
    result = answer_attention(trace, engine, list(dict.fromkeys([a, b])))
    frame = result.frame(range(*tokens) if tokens else None)
    gold = gold_segments(trace)
    return {"attention": result, "frame": frame,
            "fig_a": figures.attention_heatmap(frame, a, result.segments, gold),
            "fig_b": figures.attention_heatmap(frame, b, result.segments, gold),
            "fig_diff": figures.attention_difference(frame, a, b, result.segments, gold)}


def head_drilldown(result: SegmentAttention, frame: pd.DataFrame, variant: str, layer: int, trace: RagTrace):
    return figures.head_heatmap(frame, variant, layer, result.segments, gold_segments(trace))


def bertviz_window(trace: RagTrace, engine: Engine, variant: str, start: int, end: int, layers: list[int] | None,
                   view: str = "head") -> str:
    attention, tokens = token_window_attention(trace, variant, start, end, engine, layers)
    return (head_view_html if view == "head" else model_view_html)(attention, tokens)


def bertviz_segments(trace: RagTrace, engine: Engine, variant: str) -> str:
    attention, names = segment_level_attention(trace, variant, engine)
    return model_view_html(attention, [n.replace("_", " ") for n in names])


def attribution_bundle(trace: RagTrace, engine: Engine, variants: list[str],
                       attention: SegmentAttention | None = None) -> dict:
    """Passage ablation per variant, deletion curves in attribution order, agreement with attention, and the
    passages whose influence changed most between the first two variants."""
    gold = gold_segments(trace)
    attrs = {v: passage_ablation(trace, v, engine) for v in variants}
    curves = []
    for v, attr in attrs.items():
        order = [f for _, f in sorted(zip(attr.scores, attr.features, strict=True), reverse=True)]
        curves.append(deletion_curve(trace, v, order, engine))
    agree = []
    top = []
    frame = attention.frame() if attention is not None else None
    for v, attr in attrs.items():
        methods = {"ablation": dict(zip(attr.features, attr.scores, strict=True))}
        if frame is not None and v in set(frame["variant"]):
            sub = frame[frame["variant"] == v]
            mass = sub.groupby("segment", observed=True)["mass"].mean()
            methods["attention"] = {f: float(mass.get(f, 0.0)) for f in attr.features}
        table = agreement(methods)
        if not table.empty:
            agree.append(table.assign(variant=v))
        best = attr.features[max(range(len(attr.scores)), key=attr.scores.__getitem__)]
        top_rerank = top_reranked(trace)
        top.append({"variant": v, "top attributed": best, "is gold": best in gold,
                    "top reranked": top_rerank or "– (no rerank scores)",
                    "same as top reranked": best == top_rerank if top_rerank else None,
                    **checker_citation(trace.answers[v].grounding, best)})
    needs_attention = pd.DataFrame({"note": ["Compute attention first (Attention tab) to compare it with ablation "
                                             "here."]})
    out = {"attributions": attrs, "bars": figures.attribution_bars([a.frame() for a in attrs.values()], gold),
           "deletion": figures.deletion_figure(curves), "top": pd.DataFrame(top),
           "agreement": pd.concat(agree, ignore_index=True) if agree else needs_attention}
    if attention is not None and len(variants) >= 2:
        out["changed"] = what_changed(trace, variants[0], variants[1], attention, attrs)
    else:
        out["changed"] = (needs_attention if attention is None else
                          pd.DataFrame({"note": ["Pick two variants to see what changed between them."]}))
    return out


def checker_citation(grounding: dict | None, top_attributed: str) -> dict:
    """The groundedness checker's citations for an answer (Ask, 'Groundedness') beside passage ablation's top
    passage: the checker says which passage supports the text, ablation which one the model's answer depends on;
    where they differ the answer may be right for another reason than the passage it can be cited to."""
    claims = (grounding or {}).get("claims")
    if claims is None:
        return {"checker cites": "– (tick Groundedness in Ask)", "checker agrees": None}
    cited = sorted({f"passage_{c['cite'] + 1}" for c in claims if c["cite"] is not None})
    if not cited:
        return {"checker cites": "– (no claim supported)", "checker agrees": None}
    return {"checker cites": ", ".join(cited), "checker agrees": top_attributed in cited}


def top_reranked(trace: RagTrace) -> str | None:
    """The prompt segment of the passage the reranker scored highest. Not the first prompt position: in the
    noisy setting the gold passage sits at a seeded random position, and in the oracle setting nothing was
    reranked (None when no passage in the prompt has a rerank score)."""
    scored = [(p.rerank_score, i) for i, p in enumerate(trace.passages) if p.rerank_score is not None]
    return f"passage_{max(scored)[1] + 1}" if scored else None


def shade(score: float, bound: float) -> str:
    """Background for a scored text span: red where the answer needs it, blue where it hurts, by |score| / bound."""
    alpha = 0.0 if bound <= 0 else min(1.0, abs(score) / bound)
    rgb = "220,60,40" if score >= 0 else "40,90,220"
    return f"background: rgba({rgb},{alpha:.2f})"


def sentence_html(attr: Attribution) -> str:
    """Sentences shaded by their ablation score (red: the answer needs it; blue: it hurts the answer)."""
    bound = max((abs(s) for s in attr.scores), default=0.0)
    spans = "".join(f"<span style='{shade(s, bound)}' title='Δ log P = {s:.3f}'>{html.escape(text)}</span> "
                    for text, s in zip(attr.features, attr.scores, strict=True))
    return f"<div class='mdrag-highlight'><p><small>{html.escape(attr.variant)}</small></p><p>{spans}</p></div>"


def token_html(frame: pd.DataFrame) -> str:
    """Prompt tokens shaded by integrated-gradients score, grouped by segment."""
    bound = float(frame["score"].abs().max()) if len(frame) else 0.0
    parts = []
    for segment, g in frame.groupby("segment", sort=False):
        toks = "".join(f"<span style='{shade(s, bound)}' title='{s:.3f}'>{html.escape(t)}</span>"
                       for t, s in zip(g["token"], g["score"], strict=True))
        parts.append(f"<p><b>{html.escape(str(segment))}</b>: {toks}</p>")
    return "<div class='mdrag-highlight'>" + "".join(parts) + "</div>"


def sentence_bundle(trace: RagTrace, engine: Engine, variant: str, passage: int) -> str:
    return sentence_html(sentence_ablation(trace, variant, passage, engine))


def adapter_bundle(variants: list[str], attention: SegmentAttention | None = None) -> dict:
    norms = lora_norms(variants)
    out = {"norms": norms, "fig": figures.lora_norms_figure(norms) if not norms.empty else None}
    if attention is not None:
        have = set(attention.per_token["variant"])
        shifts = [norms_beside_shift(norms, attention, v).assign(variant=v)
                  for v in variants if v in have and v != "vanilla" and "vanilla" in have]
        out["shift"] = pd.concat(shifts, ignore_index=True) if shifts else pd.DataFrame()
    return out


def position_probe_bundle(trace: RagTrace, engine: Engine, variants: list[str]) -> dict:
    """The position probe on this trace's benchmark question, live: every variant's answer with the gold
    passage at each position 1..k among the trace's own non-gold passages in their order (what the user saw,
    not a new retrieval), a figure of the gold answer's log-probability per position and the table of answers."""
    import plotly.graph_objects as go

    from analysis.probes import PROBES, probe_question
    from mdrag.errors import InvalidQueryError
    from mdrag.evaluation.probe_tables import question_summary, question_table
    if not trace.query_id or not trace.gold_answers or not trace.gold_ids:
        raise InvalidQueryError("The position probe needs a benchmark question with a gold answer and gold passage: "
                                "pick one from the domain's test questions in Ask.")
    pipe = engine.pipeline(trace.domain, retriever=trace.retriever)
    query = pipe.domain.query_by_id[trace.query_id]
    rows = probe_question(pipe, query, variants, PROBES["position"], k=max(2, len(trace.passages)),
                          ranked=trace.passages)
    if not rows:
        raise InvalidQueryError("This prompt holds too few non-gold passages to move the gold one through: ask "
                                "in the retrieved or noisy setting.")
    summary = question_summary(rows)
    fig = go.Figure()
    for variant, g in summary.groupby("variant", sort=False):
        fig.add_trace(go.Scatter(x=g["position"], y=g["gold logprob"], mode="lines+markers", name=variant,
                                 text=["right" if m else "wrong" for m in g["Match"]],
                                 hovertemplate="position %{x}: log P(gold) %{y:.2f}, answer %{text}"))
    fig.update_layout(title="This question: log P(gold answer) by gold passage position", height=340,
                      xaxis_title="gold passage position", yaxis_title="log P(gold answer)",
                      margin={"t": 50, "b": 40})
    return {"figure": fig, "answers": question_table(rows), "summary": summary}
