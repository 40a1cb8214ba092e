"""Plotly figures for the analysis results. Pure formatting: every number comes from attention.py,
attribution.py or lora_views.py. Labels pass through html.escape (plotly renders some HTML in labels), and
categorical axes use numeric positions with ticktext (repeated labels would otherwise merge)."""

from __future__ import annotations

import html

import pandas as pd
import plotly.graph_objects as go

GOLD_MARK = "★ "


def _label(segment: str, gold: list[str]) -> str:
    return html.escape((GOLD_MARK if segment in gold else "") + segment.replace("_", " "))


def _layer_by_segment(frame: pd.DataFrame, variant: str, segments: list[str]) -> pd.DataFrame:
    sub = frame[frame["variant"] == variant]
    if sub.empty:
        raise KeyError(f"No attention for variant {variant}")
    table = sub.groupby(["layer", "segment"], observed=True)["mass"].mean().unstack("segment")  # mean over heads
    return table.reindex(columns=[s for s in segments if s in table.columns])


def attention_heatmap(frame: pd.DataFrame, variant: str, segments: list[str], gold: list[str],
                      label: str | None = None) -> go.Figure:
    """Layer x segment: mean attention mass (over heads and the chosen answer tokens); gold marked ★."""
    table = _layer_by_segment(frame, variant, segments)
    fig = go.Figure(go.Heatmap(z=table.to_numpy(), x=list(range(table.shape[1])), y=list(table.index),
                               colorscale="Viridis", zmin=0, colorbar={"title": "mass"},
                               hovertemplate="layer %{y}<br>%{customdata}<br>mass %{z:.3f}<extra></extra>",
                               customdata=[[_label(s, gold) for s in table.columns]] * len(table)))
    fig.update_layout(title=html.escape(f"Attention of the answer per layer: {label or variant}"),
                      xaxis={"tickmode": "array", "tickvals": list(range(table.shape[1])),
                             "ticktext": [_label(s, gold) for s in table.columns], "title": "segment"},
                      yaxis={"title": "layer", "autorange": "reversed"}, height=520, margin={"l": 60, "r": 20})
    return fig


def attention_difference(frame: pd.DataFrame, a: str, b: str, segments: list[str], gold: list[str]) -> go.Figure:
    """A minus B (layer x segment), diverging scale centred on 0: where A looks more (red) or less (blue)."""
    diff = _layer_by_segment(frame, a, segments) - _layer_by_segment(frame, b, segments)
    bound = float(abs(diff.to_numpy()).max()) or 1e-9
    fig = go.Figure(go.Heatmap(z=diff.to_numpy(), x=list(range(diff.shape[1])), y=list(diff.index),
                               colorscale="RdBu", reversescale=True, zmin=-bound, zmax=bound,
                               colorbar={"title": "Δ mass"}))
    fig.update_layout(title=html.escape(f"Attention difference: {a} − {b}"),
                      xaxis={"tickmode": "array", "tickvals": list(range(diff.shape[1])),
                             "ticktext": [_label(s, gold) for s in diff.columns], "title": "segment"},
                      yaxis={"title": "layer", "autorange": "reversed"}, height=520)
    return fig


def head_heatmap(frame: pd.DataFrame, variant: str, layer: int, segments: list[str], gold: list[str]) -> go.Figure:
    """Head x segment for one layer: the drill-down below the layer view."""
    sub = frame[(frame["variant"] == variant) & (frame["layer"] == layer)]
    table = sub.groupby(["head", "segment"], observed=True)["mass"].mean().unstack("segment")
    table = table.reindex(columns=[s for s in segments if s in table.columns])
    fig = go.Figure(go.Heatmap(z=table.to_numpy(), x=list(range(table.shape[1])), y=list(table.index),
                               colorscale="Viridis", zmin=0))
    fig.update_layout(title=html.escape(f"{variant}, layer {layer}: attention per head"),
                      xaxis={"tickmode": "array", "tickvals": list(range(table.shape[1])),
                             "ticktext": [_label(s, gold) for s in table.columns]},
                      yaxis={"title": "head", "autorange": "reversed"}, height=360)
    return fig


def attribution_bars(frames: list[pd.DataFrame], gold: list[str], title: str = "Passage ablation") -> go.Figure:
    """Grouped bars: drop in log P(answer) when each passage is removed, one group per variant."""
    fig = go.Figure()
    for frame in frames:
        fig.add_bar(name=html.escape(str(frame["variant"].iloc[0])), x=[_label(f, gold) for f in frame["feature"]],
                    y=frame["score"])
    fig.update_layout(title=html.escape(title), barmode="group", yaxis={"title": "Δ log P(answer)"}, height=420)
    return fig


def deletion_figure(curves: list[pd.DataFrame]) -> go.Figure:
    fig = go.Figure()
    for curve in curves:
        fig.add_scatter(x=curve["removed"], y=curve["logprob"], mode="lines+markers",
                        name=html.escape(str(curve["variant"].iloc[0])),
                        text=[html.escape(str(t)) for t in curve["last_removed"]])
    fig.update_layout(title="Deletion curve: passages removed in attribution order",
                      xaxis={"title": "passages removed"}, yaxis={"title": "log P(answer)"}, height=400)
    return fig


def lora_norms_figure(norms: pd.DataFrame) -> go.Figure:
    """Per layer, the Frobenius norm of each variant's LoRA update summed over its modules."""
    fig = go.Figure()
    per_layer = norms.groupby(["variant", "layer"])["norm"].sum().reset_index()
    for variant, g in per_layer.groupby("variant", sort=False):
        fig.add_scatter(x=g["layer"], y=g["norm"], mode="lines+markers", name=html.escape(str(variant)))
    fig.update_layout(title="Size of the LoRA update per layer (‖scaling·B·A‖_F summed over modules)",
                      xaxis={"title": "layer"}, yaxis={"title": "norm"}, height=400)
    return fig
