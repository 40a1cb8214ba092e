"""mdrag web app: ask, compare variants side by side, attention, attribution, dashboards, failures.

    python app.py [--host 127.0.0.1] [--port 7860] [--share] [--store results.sqlite] [--model-jobs 1]

This file builds the one engine (mdrag/engine.py: settings read once here, the generator with every shipped
adapter attached at start, retrievers and rerankers) and wires the tabs; each tab's layout and handlers live in
`ui/` (ask, attention, attribution, dashboards, failures). Retrieval and generation happen in `mdrag.pipeline`,
analysis in `analysis.views`, dashboard numbers in `mdrag.evaluation.dashboard`: the UI formats and wires.
"""

from __future__ import annotations

import argparse
import sys

import gradio as gr

from mdrag.engine import Engine, Settings
from mdrag.generation.model import generator_config
from mdrag.retrieval.rerank import reranker_label
from ui.ask import AskTab
from ui.attention import AttentionTab
from ui.attribution import AttributionTab
from ui.common import CSS, Server, esc, offered_stores
from ui.dashboards import DashboardsTab
from ui.failures import FailuresTab


def build_app(server: Server) -> gr.Blocks:
    """The five tabs on `server`'s engine; what crosses tabs (the session's trace and attention, a failure case
    loaded into Ask) is wired here."""
    model = server.model_bound()
    # the loaded generator's shape, not SmolLM2's 30 layers
    last_layer = generator_config(server.engine.settings.generator).num_hidden_layers - 1
    ask, attention, attribution = AskTab(server), AttentionTab(server), AttributionTab(server)
    dashboards = DashboardsTab(server)
    failures = FailuresTab(dashboards)
    with gr.Blocks(title="mdrag") as demo:
        gr.Markdown(
            "# mdrag — multi-domain RAG with LoRA variants, looked at from the inside\n"
            "Generator: SmolLM2-135M-Instruct (packaged) with the shipped adapters. Default reranker: "
            f"{esc(reranker_label('minilm'))}. LLMEval judge: the packaged Qwen2.5-Coder-1.5B-Instruct (the paper's "
            "is 10.7B; its agreement with Match and with people is shown beside every LLMEval figure in Dashboards).")
        trace_state = gr.State(None)  # this session's trace: never shared between sessions
        attention_state = gr.State(None)
        with gr.Tabs() as tabs:
            with gr.Tab("Ask", id="ask"):
                ask.layout()
            with gr.Tab("Attention", id="attention"):
                attention.layout(last_layer)
            with gr.Tab("Attribution", id="attribution"):
                attribution.layout()
            with gr.Tab("Dashboards", id="dashboards"):
                dashboards.layout()
            with gr.Tab("Failures", id="failures"):
                failures.layout()

        ask_outputs = [ask.answers, ask.passages, ask.prompt, trace_state, ask.link, attention.variants,
                       attribution.variants]
        ask.go.click(ask.ask, ask.inputs, ask_outputs, **model)
        ask.question.submit(ask.ask, ask.inputs, ask_outputs, **model)
        attention.wire(trace_state, attention_state)
        attribution.wire(trace_state, attention_state)
        failures.table.select(failures.load_case, failures.table,
                              [ask.domain, ask.question, ask.query_id, ask.setting, ask.variants, ask.retriever,
                               ask.reranker, tabs]).then(
            ask.ask, ask.inputs, ask_outputs, **model)
        demo.load(ask.from_url, None, [ask.domain, ask.question, ask.query_id, ask.setting, ask.variants]).then(
            ask.test_questions, ask.domain, ask.pick)
    return demo


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="mdrag web app")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default: 127.0.0.1, local only)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--share", action="store_true", help="create a public Gradio link (off by default)")
    parser.add_argument("--store", action="append", default=[], help="a results store the dashboards may open "
                        "(repeatable; the shipped one is always offered)")
    parser.add_argument("--model-jobs", type=int, default=1, help="model-bound jobs (generation, attention, "
                        "attribution) running at once across all users; more wait in the queue (default 1)")
    parser.add_argument("--judge", default="default", help="judge of the Ask cards' LLMEval verdicts: default (the "
                        "packaged Qwen2.5-Coder-1.5B), smollm2-135m (weak stand-in), hf:DIR, openai:MODEL@URL")
    parser.add_argument("--generator", help="local HF causal-LM directory (default: packaged SmolLM2-135M)")
    args = parser.parse_args(argv)
    engine = Engine(Settings.from_env(generator=args.generator))
    # Every adapter attached before the first request: no session pays for it, and no decoding session sees the
    # stacked model gain new modules under it.
    for note in engine.attach_shipped():
        print(f"adapter left out: {note}", file=sys.stderr)
    server = Server(engine, offered_stores(args.store), judge_spec=args.judge, model_jobs=max(1, args.model_jobs))
    # Model-bound events share the "model" group (model_jobs at once); the light ones (dashboards, tables) run at
    # most 2 at a time each, so reading results never waits behind a generation.
    build_app(server).queue(default_concurrency_limit=2).launch(server_name=args.host, server_port=args.port,
                                                                share=args.share, css=CSS)


if __name__ == "__main__":
    main()
