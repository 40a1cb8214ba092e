"""Sentence sources as the app and the export show them (#25): per answer sentence its top sources, the passages
with every sentence shaded by its score, where two variants' sources differ, and one self-contained HTML file
per case. Every text from a query, passage or answer is escaped here; the UI only places the markup."""

from __future__ import annotations

import html
import time
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from analysis.source_methods import METHODS, SourceAttribution, attribute, make_case
from analysis.views import shade
from mdrag.engine import Engine
from mdrag.trace import RagTrace

TOP = 3


def method_score_line(table: pd.DataFrame | None, method: str, variant: str) -> str:
    """'LDS 0.41 [0.33, 0.49], top-1 drop ..., n 40 (shipped store)' for the method and variant, pooled over
    domains; or why there is none. `table`: mdrag.evaluation.attribution_table.summary by (variant, method)."""
    if table is None or table.empty:
        return "not scored on held-out ablations yet (python -m mdrag attribution score)"
    row = table[(table["method"] == method) & (table["variant"] == variant)]
    if row.empty:
        return f"not scored for {variant} yet (python -m mdrag attribution score --variants {variant})"
    r = row.iloc[0]
    return (f"LDS {r.lds:.2f} [{r.lds_lo:.2f}, {r.lds_hi:.2f}], top-1 drop {r.drop1:.2f} [{r.drop1_lo:.2f}, "
            f"{r.drop1_hi:.2f}] on held-out ablations, n {int(r.n)} answers; {r.seconds:.1f} s per attribution")


def sources_html(attr: SourceAttribution, trace: RagTrace, score_line: str = "") -> str:
    """One variant: each target (the answer, then each sentence) with its top sources, then the passages with
    every sentence shaded by its score for the whole answer (red: the answer needs it; blue: it hurts)."""
    esc = html.escape
    label = METHODS[attr.method].label if attr.method in METHODS else attr.method
    parts = [f"<div class='mdrag-sources' data-variant='{esc(attr.variant)}' data-method='{esc(attr.method)}'>",
             f"<h4>{esc(attr.variant)}: {esc(label)}</h4>",
             f"<p class='mdrag-method-score'>{esc(score_line)}</p>" if score_line else "",
             f"<p><small>{attr.forwards} forwards, {attr.seconds:.1f} s</small></p><ol class='mdrag-targets'>"]
    for t, target in enumerate(attr.targets):
        items = "".join(f"<li>[Doc {s.passage} · sentence {s.index + 1}] {esc(s.text)} <small>({score:+.3g})</small>"
                        "</li>" for s, score in attr.top(t, TOP))
        parts.append(f"<li><b>{esc(target.name)}</b>: <q>{esc(target.text)}</q><ul>{items}</ul></li>")
    parts.append("</ol>")
    scores = attr.scores[0]
    bound = float(np.abs(scores).max()) if scores.size else 0.0
    top = {id(s) for s, _ in attr.top(0, TOP)}
    for number, passage in enumerate(trace.passages, start=1):
        sentences = [(s, scores[i]) for i, s in enumerate(attr.sources) if s.passage == number]
        body = " ".join(f"<span class='mdrag-source{' mdrag-top' if id(s) in top else ''}' style='{shade(sc, bound)}' "
                        f"title='{sc:+.3g}'>{esc(s.text)}</span>" for s, sc in sentences)
        gold = " (gold)" if passage.is_gold else ""
        parts.append(f"<p class='mdrag-passage'><b>Doc {number}{gold}</b> {body}</p>")
    parts.append("</div>")
    return "".join(parts)


def comparison(a: SourceAttribution, b: SourceAttribution) -> pd.DataFrame:
    """Where two variants' sources for the whole answer differ: every source in either top-3, with both scores
    and ranks, the largest rank change first."""
    fa, fb = a.frame(), b.frame()
    fa, fb = fa[fa["target"] == "answer"], fb[fb["target"] == "answer"]
    merged = fa.merge(fb, on=["passage", "sentence", "text"], suffixes=(f" {a.variant}", f" {b.variant}"))
    x, y = merged[f"rank {a.variant}"], merged[f"rank {b.variant}"]
    merged = merged[(x <= TOP) | (y <= TOP)].copy()
    x, y = merged[f"rank {a.variant}"], merged[f"rank {b.variant}"]
    merged["in top-3 of"] = np.where((x <= TOP) & (y <= TOP), "both", np.where(x <= TOP, a.variant, b.variant))
    merged["rank change"] = (merged[f"rank {b.variant}"] - merged[f"rank {a.variant}"]).abs()
    cols = ["passage", "sentence", "text", f"score {a.variant}", f"score {b.variant}", f"rank {a.variant}",
            f"rank {b.variant}", "in top-3 of"]
    return merged.sort_values(["rank change", "passage", "sentence"], ascending=[False, True, True])[cols]


def scores_figure(attrs: list[SourceAttribution]) -> go.Figure:
    """Whole-answer score of every source, one bar group per variant."""
    fig = go.Figure()
    for a in attrs:
        names = [f"D{s.passage}.s{s.index + 1}" for s in a.sources]
        fig.add_bar(x=names, y=a.scores[0], name=a.variant, hovertext=[s.text[:120] for s in a.sources])
    fig.update_layout(barmode="group", height=320, margin={"t": 40, "b": 40}, xaxis_title="source (Doc.sentence)",
                      yaxis_title="score", title=f"{attrs[0].method if attrs else ''}: score per source sentence")
    return fig


def case_html(trace: RagTrace, attrs: list[SourceAttribution], score_lines: dict[str, str] | None = None) -> str:
    """One self-contained HTML page (plotly inlined, no network) holding the question, every answer, its sources
    and their scores, the comparison of the first two variants and the figure."""
    esc = html.escape
    score_lines = score_lines or {}
    answers = "".join(f"<li><b>{esc(v)}</b>: {esc(a.text)}</li>" for v, a in trace.answers.items())
    body = [f"<h1>mdrag case: {esc(trace.query)}</h1>",
            f"<p>domain {esc(trace.domain)}, setting {esc(trace.setting)}, "
            f"exported {time.strftime('%Y-%m-%d %H:%M')}</p><ul>{answers}</ul>"]
    body += [sources_html(a, trace, score_lines.get(a.variant, "")) for a in attrs]
    if len(attrs) >= 2:
        body.append(f"<h3>Where the sources of {esc(attrs[0].variant)} and {esc(attrs[1].variant)} differ</h3>")
        body.append(comparison(attrs[0], attrs[1]).to_html(index=False, escape=True, float_format="%.3g"))
    if attrs:
        body.append(scores_figure(attrs).to_html(include_plotlyjs=True, full_html=False))
    style = ("body{font-family:sans-serif;max-width:60em;margin:2em auto}.mdrag-top{outline:2px solid #c60}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px}")
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>mdrag case</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>")


def attribute_variants(trace: RagTrace, engine: Engine, variants: list[str], method: str,
                       **params) -> list[SourceAttribution]:
    """The method on each variant's answer in the trace (empty answers skipped)."""
    return [attribute(make_case(trace, v, engine), method, **params) for v in variants
            if v in trace.answers and trace.answers[v].token_ids]


def explain_case(engine: Engine, domain: str, variants: list[str], question: str | None, query_id: str | None,
                 methods: list[str], masks: int = 32, html_path: Path | None = None, retriever: str = "splade",
                 reranker: str = "minilm", params: dict[str, dict] | None = None) -> str:
    """The CLI's `attribution explain`: retrieve, answer, attribute with each method; text out, HTML optional
    (the first method's view)."""
    pipe = engine.pipeline(domain, retriever=retriever, reranker=reranker)
    trace = pipe.answer(pipe.trace(pipe.retrieve(question, query_id), "retrieved"), variants)
    lines, first = [], None
    for method in methods:
        chosen = {**({"masks": masks} if method == "context_cite" else {}), **(params or {}).get(method, {})}
        attrs = attribute_variants(trace, engine, variants, method, **chosen)
        first = first or attrs
        for a in attrs:
            lines.append(f"{a.variant} / {method} ({a.forwards} forwards, {a.seconds:.1f} s): "
                         f"{trace.answers[a.variant].text!r}")
            for t, target in enumerate(a.targets):
                tops = "; ".join(f"Doc {s.passage}.{s.index + 1} {score:+.3g} {s.text[:60]!r}"
                                 for s, score in a.top(t, TOP))
                lines.append(f"  {target.name}: {tops}")
    if html_path is not None and first:
        html_path.write_text(case_html(trace, first), encoding="utf-8")
        lines.append(f"wrote {html_path}")
    return "\n".join(lines)


def sources_bundle(trace: RagTrace, engine: Engine, variants: list[str], method: str,
                   span: tuple[int, int] | None = None, scores: pd.DataFrame | None = None) -> dict:
    """The app's sentence-sources view for up to two variants: their HTML, where their sources differ, and the
    case as one self-contained page. `scores`: the method scores by (variant, method) shown beside each picture."""
    attrs = [attribute(make_case(trace, v, engine, span), method) for v in variants[:2]
             if v in trace.answers and trace.answers[v].token_ids]
    if not attrs:
        raise ValueError("No non-empty answer among the chosen variants: nothing to attribute")
    lines = {a.variant: method_score_line(scores, method, a.variant) for a in attrs}
    return {"html": "".join(sources_html(a, trace, lines[a.variant]) for a in attrs),
            "comparison": comparison(attrs[0], attrs[1]) if len(attrs) > 1 else pd.DataFrame(),
            "page": case_html(trace, attrs, lines)}


def at2_curve_figure(folder: Path | None = None) -> go.Figure | None:
    """Held-out LDS of each variant's AT2 weights against the number of fitting prompts (from the shipped cards,
    95% CIs over held-out prompts); None when no variant has fitted weights."""
    from analysis.at2 import fitted_variants, load_card

    fig = go.Figure()
    for variant in fitted_variants(folder):
        card = load_card(variant, folder)
        if not card or not card.get("curve"):
            continue
        curve = pd.DataFrame(card["curve"])
        fig.add_scatter(x=curve["prompts"], y=curve["lds"], mode="lines+markers", name=variant,
                        error_y={"type": "data", "symmetric": False, "array": curve["lds_hi"] - curve["lds"],
                                 "arrayminus": curve["lds"] - curve["lds_lo"]})
    if not fig.data:
        return None
    fig.update_layout(height=300, margin={"t": 40, "b": 40}, xaxis_title="fitting prompts (training split)",
                      yaxis_title="held-out LDS", title="AT2 head weights: quality vs number of fitting prompts")
    return fig
