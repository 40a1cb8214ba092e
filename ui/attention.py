"""The Attention tab: attention per prompt segment for two variants and their difference, one layer's heads,
bertviz rendered offline, and the adapters' update sizes beside the attention shift they cause."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from mdrag.generation.variants import available_variants
from ui.common import Server, error_html, esc, need_trace


class AttentionTab:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.engine = server.engine

    def layout(self, last_layer: int) -> None:
        """`last_layer`: the generator's deepest layer index (its config, not a hard-coded shape)."""
        with gr.Row():
            self.variants = gr.CheckboxGroup([], label="Two variants to compare (A, B)")
            self.first_token = gr.Number(0, label="from answer token", precision=0)
            self.last_token = gr.Number(0, label="to answer token (0 = whole answer)", precision=0)
        self.button = gr.Button("Compute attention", variant="primary", elem_id="attention-button")
        self.note = gr.Markdown()
        with gr.Row():
            self.fig_a = gr.Plot(label="A", elem_id="attention-a")
            self.fig_b = gr.Plot(label="B")
        self.fig_diff = gr.Plot(label="A − B", elem_id="attention-diff")
        with gr.Accordion("Heads of one layer", open=False):
            with gr.Row():
                self.head_variant = gr.Dropdown(available_variants(), value="qk_att", label="variant")
                self.head_layer = gr.Slider(0, last_layer, value=(2 * last_layer) // 3, step=1, label="layer")
            self.head_fig = gr.Plot()
        with gr.Accordion("bertviz (offline)", open=False):
            with gr.Row():
                self.bv_variant = gr.Dropdown(available_variants(), value="vanilla", label="variant")
                self.bv_view = gr.Radio(["head", "model", "passages (one unit per segment)"], value="head",
                                        label="view")
                self.bv_start = gr.Number(0, label="window from token", precision=0)
                self.bv_end = gr.Number(40, label="to token", precision=0)
                self.bv_layers = gr.Textbox(",".join(str(i * last_layer // 3) for i in range(4)),
                                            label="layers (comma-separated; empty = all)")
            self.bv_button = gr.Button("Render bertviz")
            self.bv_html = gr.HTML(elem_id="bertviz")
        with gr.Accordion("Adapters: size of each LoRA update and the attention shift it causes", open=False):
            self.lora_button = gr.Button("Show adapter views")
            self.lora_fig = gr.Plot()
            self.lora_table = gr.Dataframe(label="per layer: update norm vs attention shift from vanilla")

    def wire(self, trace_state, attention_state) -> None:
        model = self.server.model_bound()
        self.button.click(self.attention, [trace_state, self.variants, self.first_token, self.last_token],
                          [self.fig_a, self.fig_b, self.fig_diff, self.note, attention_state], **model)
        drill = [trace_state, attention_state, self.head_variant, self.head_layer]
        self.head_layer.release(self.heads, drill, self.head_fig)
        self.head_variant.change(self.heads, drill, self.head_fig)
        self.bv_button.click(self.bertviz, [trace_state, self.bv_variant, self.bv_start, self.bv_end, self.bv_layers,
                                            self.bv_view], self.bv_html, **model)
        self.lora_button.click(self.adapters, [trace_state, attention_state], [self.lora_fig, self.lora_table])

    # ---------------------------------------------------------------------------------------- handlers
    def attention(self, trace, variants: list[str], first_token: int, last_token: int,
                  progress=gr.Progress()):  # noqa: B008
        from analysis.views import attention_bundle, gold_segments

        trace = need_trace(trace)
        if not variants:
            raise gr.Error("Pick one or two variants to compare.")
        a, b = (variants + variants)[:2]
        progress(0.2, desc="attention per segment (one forward pass per variant)")
        tokens = (int(first_token), int(last_token)) if last_token > first_token else None
        bundle = attention_bundle(trace, self.engine, a, b, tokens)
        gold = ", ".join(f"passage {g.split('_')[1]}" for g in gold_segments(trace)) or "none in the prompt"
        note = (f"Mean attention mass of {esc(a)} and {esc(b)} over their answer tokens (per layer, averaged over "
                f"heads); gold: {esc(gold)}. Mass for answer token i = attention of the position that produced it.")
        return bundle["fig_a"], bundle["fig_b"], bundle["fig_diff"], note, bundle

    def heads(self, trace, bundle, variant_choice: str, layer: int):
        from analysis.views import head_drilldown

        if not bundle:
            raise gr.Error("Compute the attention first.")
        variant = variant_choice or bundle["frame"]["variant"].iloc[0]
        return head_drilldown(bundle["attention"], bundle["frame"], variant, int(layer), need_trace(trace))

    def bertviz(self, trace, variant: str, start: int, end: int, layers: str, view: str,
                progress=gr.Progress()):  # noqa: B008
        from analysis.views import bertviz_segments, bertviz_window

        trace = need_trace(trace)
        variant = variant or next(iter(trace.answers))
        progress(0.3, desc="attention for the bertviz view")
        try:
            if view == "passages (one unit per segment)":
                return bertviz_segments(trace, self.engine, variant)
            chosen = [int(x) for x in layers.replace(" ", "").split(",") if x] if layers.strip() else None
            return bertviz_window(trace, self.engine, variant, int(start), int(end), chosen,
                                  "head" if view == "head" else "model")
        except (ValueError, KeyError) as err:
            return error_html(err)

    def adapters(self, trace, bundle):
        from analysis.views import adapter_bundle

        variants = list(need_trace(trace).answers)
        out = adapter_bundle(variants, bundle["attention"] if bundle else None)
        shift = out.get("shift", pd.DataFrame())
        return out["fig"], shift.round(4) if not shift.empty else shift
