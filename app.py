"""mdrag web app (minimal first screen: ask one question). Layout, events and formatting only: all
computing happens in `mdrag` (pipeline) and `analysis`.

    python app.py [--host 127.0.0.1] [--port 7860] [--share]

Every text that comes from a user, a corpus or a model is HTML-escaped before it is rendered
(gr.HTML does not sanitise).
"""

from __future__ import annotations

import argparse
import html

import gradio as gr

from mdrag.data.domains import DOMAINS
from mdrag.errors import MdragError
from mdrag.generation.variants import VARIANTS
from mdrag.pipeline import SETTINGS, RagPipeline
from mdrag.retrieval.rerank import RERANKERS
from mdrag.retrieval.retrievers import RETRIEVERS
from mdrag.trace import RagTrace

esc = html.escape


def passages_html(trace: RagTrace) -> str:
    rows = []
    for p in trace.passages:
        fs = "–" if p.first_stage_score is None else f"{p.first_stage_score:.3f}"
        rr = "–" if p.rerank_score is None else f"{p.rerank_score:.3f}"
        gold = '<b style="color:#b8860b">GOLD</b>' if p.is_gold else ""
        rows.append(
            f"<tr><td>{p.rank}</td><td>{gold}</td><td>{fs}</td><td>{rr}</td>"
            f"<td><b>{esc(p.title)}</b> {esc(p.text)}<br><small>{esc(p.id)}</small></td></tr>"
        )
    return (
        f"<p>Retriever: {esc(trace.retriever)} · Reranker: {esc(trace.reranker)} · setting: {esc(trace.setting)}</p>"
        "<table class='mdrag-passages'><tr><th>#</th><th>gold</th><th>first stage</th><th>rerank</th>"
        "<th>passage</th></tr>" + "".join(rows) + "</table>"
    )


def answers_html(trace: RagTrace) -> str:
    gold = (f"<p><b>Gold answer:</b> {esc(' | '.join(trace.gold_answers))}</p>" if trace.gold_answers else "")
    def metrics(a) -> str:
        shown = [f"{esc(k)} {v:.2f}" for k, v in a.metrics.items() if v is not None]
        return f"<br><small>vs gold: {' · '.join(shown)}</small>" if shown else ""

    cards = "".join(
        f"<div class='mdrag-answer'><h4>{esc(a.label or name)}</h4><p>{esc(a.text) or '<i>(empty)</i>'}</p>"
        f"<small>{len(a.token_ids)} tokens · {a.seconds:.1f} s (all variants in one batch)</small>{metrics(a)}</div>"
        for name, a in trace.answers.items()
    )
    timing = " · ".join(f"{esc(k)} {v:.2f} s" for k, v in trace.timings.items())
    return gold + cards + f"<p><small>{timing}</small></p>"


def ask(question: str, domain: str, setting: str, retriever: str, reranker: str, variants: list[str],
        progress=gr.Progress(track_tqdm=True)) -> tuple[str, str, str]:  # noqa: B008 (Gradio injects it)
    try:
        pipe = RagPipeline.for_domain(domain, retriever=retriever, reranker=reranker)
        trace = pipe.run(question, variants=variants or ["vanilla"], setting=setting,
                         progress=lambda f, msg: progress(f, desc=msg))
    except MdragError as err:
        return f"<p class='mdrag-error'>⚠ {esc(str(err))}</p>", "", ""
    return answers_html(trace), passages_html(trace), trace.prompt


def build_app() -> gr.Blocks:
    with gr.Blocks(title="mdrag") as demo:
        gr.Markdown("# mdrag — multi-domain RAG, looking inside\nGenerator: SmolLM2-135M-Instruct (packaged). "
                    "Reranker default: MiniLM cosine rescoring, a *stand-in* for the paper's DeBERTa-v3 cross-encoder.")
        with gr.Row():
            question = gr.Textbox(label="Question", value="who got the first nobel prize in physics", scale=4)
            domain = gr.Dropdown(list(DOMAINS), value="nq_open", label="Domain")
        with gr.Row():
            setting = gr.Radio(list(SETTINGS), value="retrieved", label="Setting")
            retriever = gr.Dropdown(list(RETRIEVERS), value="splade", label="First stage")
            reranker = gr.Dropdown(list(RERANKERS), value="minilm", label="Reranker")
            variants = gr.CheckboxGroup(list(VARIANTS), value=["vanilla"], label="Variants")
        go = gr.Button("Ask", variant="primary")
        answers = gr.HTML(label="Answers")
        passages = gr.HTML(label="Passages")
        with gr.Accordion("Exact prompt", open=False):
            prompt = gr.Textbox(show_label=False, lines=12)
        go.click(ask, [question, domain, setting, retriever, reranker, variants], [answers, passages, prompt],
                 concurrency_limit=2)
        question.submit(ask, [question, domain, setting, retriever, reranker, variants], [answers, passages, prompt],
                        concurrency_limit=2)
    return demo


def main() -> None:
    parser = argparse.ArgumentParser(description="mdrag web app")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default: 127.0.0.1, local only)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--share", action="store_true", help="create a public Gradio link (off by default)")
    args = parser.parse_args()
    build_app().queue(default_concurrency_limit=2).launch(server_name=args.host, server_port=args.port,
                                                          share=args.share)


if __name__ == "__main__":
    main()
