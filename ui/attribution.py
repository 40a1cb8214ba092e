"""The Attribution tab: which passage caused each answer (passage ablation, deletion curves, agreement with
attention), the position probe for the question in hand, sentences of one passage, and integrated gradients."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from analysis.source_methods import METHODS
from mdrag.errors import MdragError
from mdrag.generation.variants import available_variants
from ui.common import Server, error_html, need_trace


def _token_span(text: str | None) -> tuple[int, int] | None:
    """'3-7' -> (3, 7); empty -> None (the whole answer and each sentence)."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        lo, hi = (int(x) for x in text.replace("..", "-").split("-"))
    except ValueError as err:
        raise ValueError(f"Answer tokens must look like 0-5, not {text!r}") from err
    return lo, hi


class AttributionTab:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.engine = server.engine

    def layout(self) -> None:
        self.variants = gr.CheckboxGroup([], label="Variants (first two are compared)")
        self.button = gr.Button("Passage ablation (captum)", variant="primary", elem_id="attribution-button")
        self.bars = gr.Plot(elem_id="attribution-bars")
        self.curve = gr.Plot()
        with gr.Row():
            self.top = gr.Dataframe(label="top-attributed passage vs gold, top reranked and the groundedness "
                                          "checker's citations (where they disagree: the passage the answer can be "
                                          "cited to is not the one it depends on)")
            self.agree = gr.Dataframe(label="agreement: attention vs ablation (Spearman)")
        self.changed = gr.Dataframe(label="what changed between the first two variants")
        with gr.Accordion("Position probe for this question: the gold passage moved through positions 1..k (one "
                          "prompt per position, every chosen variant)", open=False):
            self.probe_button = gr.Button("Run the position probe", elem_id="probe-button")
            self.probe_fig = gr.Plot(elem_id="probe-figure")
            self.probe_answers = gr.Dataframe(label="answers per position (✓ Match right, ✗ wrong)",
                                              elem_id="probe-answers")
            self.probe_table = gr.Dataframe(label="per variant and position: Match, log P(gold answer), attention "
                                                  "on the gold passage")
        with gr.Accordion("Sources of each answer sentence: every sentence of every passage scored by the chosen "
                          "method (its score on held-out ablations shown beside it)", open=False):
            with gr.Row():
                self.src_method = gr.Dropdown([(m.label, m.name) for m in METHODS.values()], value="context_cite",
                                              label="method", elem_id="sources-method")
                self.src_span = gr.Textbox("", label="answer tokens, e.g. 0-5 (empty: the whole answer and each of "
                                                     "its sentences)")
            self.src_button = gr.Button("Find sources", elem_id="sources-button")
            self.src_html = gr.HTML(elem_id="sources-html")
            self.src_diff = gr.Dataframe(label="where the first two variants' sources differ (their top-3)")
            self.src_export = gr.File(label="this case as one HTML file (opens offline)", elem_id="sources-export")
            self.src_curve = gr.Plot(label="AT2: held-out LDS vs number of fitting prompts", elem_id="at2-curve")
        with gr.Accordion("Sentences of one passage", open=False):
            with gr.Row():
                self.sent_variant = gr.Dropdown(available_variants(), value="vanilla", label="variant")
                self.sent_passage = gr.Number(1, label="passage #", precision=0)
            self.sent_button = gr.Button("Sentence ablation")
            self.sent_html = gr.HTML()
        with gr.Accordion("Tokens: integrated gradients (slow: minutes per answer token span)", open=False):
            with gr.Row():
                self.ig_variant = gr.Dropdown(available_variants(), value="vanilla", label="variant")
                self.ig_first = gr.Number(0, label="answer tokens from", precision=0)
                self.ig_last = gr.Number(1, label="to", precision=0)
            self.ig_button = gr.Button("Integrated gradients")
            self.ig_html = gr.HTML()

    def wire(self, trace_state, attention_state) -> None:
        model = self.server.model_bound()
        self.button.click(self.attribution, [trace_state, self.variants, attention_state],
                          [self.bars, self.curve, self.top, self.agree, self.changed], **model)
        self.probe_button.click(self.position_probe, [trace_state, self.variants],
                                [self.probe_fig, self.probe_answers, self.probe_table], **model)
        self.src_button.click(self.sources, [trace_state, self.variants, self.src_method, self.src_span],
                              [self.src_html, self.src_diff, self.src_export, self.src_curve], **model)
        self.sent_button.click(self.sentences, [trace_state, self.sent_variant, self.sent_passage], self.sent_html,
                               **model)
        self.ig_button.click(self.gradients, [trace_state, self.ig_variant, self.ig_first, self.ig_last],
                             self.ig_html, **model)

    # ---------------------------------------------------------------------------------------- handlers
    def attribution(self, trace, variants: list[str], bundle, progress=gr.Progress()):  # noqa: B008
        from analysis.views import attribution_bundle

        trace = need_trace(trace)
        variants = [v for v in (variants or list(trace.answers)) if v in trace.answers]
        empty = [v for v in variants if not trace.answers[v].token_ids]
        if empty:
            raise gr.Error(f"Empty answers cannot be attributed: {', '.join(empty)}")
        progress(0.2, desc=f"passage ablation: {len(trace.passages) + 1} forward passes per variant")
        out = attribution_bundle(trace, self.engine, variants, bundle["attention"] if bundle else None)
        changed = out.get("changed", pd.DataFrame())
        return out["bars"], out["deletion"], out["top"], out["agreement"].round(3), changed.round(4)

    def position_probe(self, trace, variants: list[str], progress=gr.Progress()):  # noqa: B008
        from analysis.views import position_probe_bundle

        trace = need_trace(trace)
        variants = [v for v in (variants or list(trace.answers)) if v in trace.answers] or ["vanilla"]
        progress(0.1, desc=f"position probe: {len(trace.passages)} prompts, {len(variants)} variants each")
        try:
            out = position_probe_bundle(trace, self.engine, variants)
        except MdragError as err:
            raise gr.Error(str(err)) from err
        return out["figure"], out["answers"], out["summary"]

    def sources(self, trace, variants: list[str], method: str, span: str, progress=gr.Progress()):  # noqa: B008
        from analysis.source_methods import METHODS
        from analysis.source_views import at2_curve_figure, sources_bundle

        trace = need_trace(trace)
        variants = [v for v in (variants or list(trace.answers)) if v in trace.answers]
        try:
            entry = METHODS.find(method or "context_cite")
            tokens = _token_span(span)
            progress(0.1, desc=f"{entry.label}: {entry.cost} forward passes per variant")
            out = sources_bundle(trace, self.engine, variants, entry.name, tokens, self.server.attribution_scores())
        except (MdragError, ValueError, KeyError, FileNotFoundError) as err:
            return error_html(err), pd.DataFrame(), None, None
        return (out["html"], out["comparison"], self.server.save_download(out["page"], "case", ".html"),
                at2_curve_figure())

    def sentences(self, trace, variant: str, passage: int, progress=gr.Progress()):  # noqa: B008
        from analysis.views import sentence_bundle

        trace = need_trace(trace)
        progress(0.3, desc="sentence ablation")
        try:
            return sentence_bundle(trace, self.engine, variant or next(iter(trace.answers)), int(passage))
        except (ValueError, KeyError) as err:
            return error_html(err)

    def gradients(self, trace, variant: str, first: int, last: int, progress=gr.Progress()):  # noqa: B008
        from analysis.attribution import gradient_attribution
        from analysis.views import token_html

        trace = need_trace(trace)
        progress(0.1, desc="integrated gradients: one pass per answer token (slow on a CPU)")
        try:
            frame = gradient_attribution(trace, variant or next(iter(trace.answers)), self.engine,
                                         (int(first), int(last)))
        except (ValueError, KeyError) as err:
            return error_html(err)
        return token_html(frame)
