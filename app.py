"""mdrag web app: ask, compare variants side by side, attention, attribution, dashboards, failures.

    python app.py [--host 127.0.0.1] [--port 7860] [--share] [--store results.sqlite]

Layout, events and formatting only: retrieval and generation happen in `mdrag.pipeline`, analysis in
`analysis.views`, dashboard numbers in `mdrag.evaluation.dashboard`. Every text that comes from a user, a
corpus or a model is HTML-escaped before it is rendered (gr.HTML does not sanitise). Each browser session
keeps its own trace in gr.State, so concurrent users never see each other's answers.
"""

from __future__ import annotations

import argparse
import html
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import gradio as gr
import pandas as pd

from mdrag.config import LIMITS
from mdrag.data.benchmark import load_domain
from mdrag.data.domains import DOMAINS
from mdrag.errors import MdragError
from mdrag.evaluation import dashboard
from mdrag.generation.variants import VARIANTS, available_variants
from mdrag.pipeline import SETTINGS, RagPipeline, TokenEvent
from mdrag.retrieval.rerank import RERANKERS, get_reranker
from mdrag.retrieval.retrievers import retriever_names
from mdrag.trace import RagTrace

esc = html.escape
CSS = """
.mdrag-answers {display: flex; flex-wrap: wrap; gap: 10px}
.mdrag-answer {flex: 1 1 260px; border: 1px solid #ccc; border-radius: 8px; padding: 8px}
.mdrag-answer.pending {opacity: .5}
.mdrag-passages td {vertical-align: top; padding: 4px}
.mdrag-error {color: #b00020; font-weight: bold}
.mdrag-highlight span {border-radius: 3px}
"""
# Every model-bound event (generation, attention, attribution, probes) shares one concurrency group: with
# per-listener limits about fifteen such jobs could run at once on two cores. `--model-jobs` sets the limit.
MODEL_JOBS = 1


def _model_bound() -> dict:
    return {"concurrency_id": "model", "concurrency_limit": MODEL_JOBS}


STREAM_EVERY = 0.25  # seconds between redraws of streaming answers (each redraw ships the cards' HTML)
# The results stores the dashboards may open: those the server was started with (--store, repeatable) and the
# shipped one, by label. A browser picks a label, never a path: the server opens no file it was not given.
STORES: dict[str, Path] = {}
_DOWNLOADS: Path | None = None  # one folder for every CSV this process offers, removed at exit
JUDGE_SPEC = "default"  # set by --judge: the judge of the Ask cards


def error_html(err: Exception) -> str:
    return f"<p class='mdrag-error'>⚠ {esc(str(err))}</p>"


def passages_html(trace: RagTrace) -> str:
    rows = []
    for p in trace.passages:
        fs = "–" if p.first_stage_score is None else f"{p.first_stage_score:.3f}"
        rr = "–" if p.rerank_score is None else f"{p.rerank_score:.3f}"
        first = "–" if p.first_stage_rank is None else str(p.first_stage_rank)
        gold = '<b style="color:#b8860b">★ GOLD</b>' if p.is_gold else ""
        rows.append(
            f"<tr><td>{p.rank}</td><td>{gold}</td><td>{fs}</td><td>{first}</td><td>{rr}</td>"
            f"<td><b>{esc(p.title)}</b> {esc(p.text)}<br><small>{esc(p.id)}</small></td></tr>"
        )
    return (
        f"<p>Retriever: {esc(trace.retriever)} · Reranker: {esc(trace.reranker)} · setting: {esc(trace.setting)}</p>"
        "<table class='mdrag-passages'><tr><th>#</th><th>gold</th><th>first stage</th><th>first-stage rank</th>"
        "<th>rerank</th><th>passage</th></tr>" + "".join(rows) + "</table>"
    )


def answers_html(trace: RagTrace, order: list[str] | None = None, partial: dict[str, str] | None = None,
                 judging: bool = False) -> str:
    """Answer cards in the requested order: finished ones with metrics (and the judge's verdict once it is
    there), running ones with their text so far."""
    gold = (f"<p><b>Gold answer:</b> {esc(' | '.join(trace.gold_answers))}</p>" if trace.gold_answers else
            "<p><small>Free question: no gold answer, no metrics.</small></p>")

    def metrics(a) -> str:
        shown = [f"{esc(k)} {v:.2f}" for k, v in a.metrics.items() if isinstance(v, int | float)]
        return f"<br><small>vs gold: {' · '.join(shown)}</small>" if shown else ""

    def card(name: str) -> str:
        a = trace.answers.get(name)
        if a is None:
            so_far = esc((partial or {}).get(name, ""))
            return (f"<div class='mdrag-answer pending' data-variant='{esc(name)}'><h4>{esc(VARIANTS[name].label)}"
                    f"</h4><p class='mdrag-partial'>{so_far} <i>generating…</i></p></div>")
        return (f"<div class='mdrag-answer' data-variant='{esc(name)}'><h4>{esc(a.label or name)}</h4>"
                f"<p class='mdrag-answer-text'>{esc(a.text) or '<i>(empty)</i>'}</p>"
                f"<small>{len(a.token_ids)} tokens · ready after {a.seconds:.1f} s</small>{metrics(a)}"
                f"{verdict(a)}</div>")

    def verdict(a) -> str:
        v = a.verdict
        if v is None:
            return "<br><small class='mdrag-verdict pending'><i>judging…</i></small>" if judging else ""
        if v["score"] is None:
            return f"<br><small class='mdrag-verdict'>LLMEval: no verdict ({esc(str(v['error']))})</small>"
        word = "Yes" if v["score"] > 0.5 else "No"
        low = f" · only {v['mass']:.0%} of its first token on Yes/No" if v.get("mass") is not None and \
            v["mass"] < 0.5 else ""
        return (f"<br><small class='mdrag-verdict'>LLMEval {v['score']:.2f} ({word}{low}) · judge: {esc(v['judge'])}"
                f"{' (weak stand-in)' if v.get('weak') else ''}</small>")

    names = list(dict.fromkeys([*(order or []), *trace.answers]))
    timing = " · ".join(f"{esc(k)} {v:.2f} s" for k, v in trace.timings.items())
    return (gold + "<div class='mdrag-answers'>" + "".join(card(n) for n in names)
            + f"</div><p><small>{timing}</small></p>")


def case_link(domain: str, question: str, query_id: str | None, setting: str, variants: list[str]) -> str:
    params = {"domain": domain, "setting": setting, "variants": ",".join(variants)}
    params.update({"qid": query_id} if query_id else {"q": question})
    return "?" + urllib.parse.urlencode(params)


# ----------------------------------------------------------------------------------------------- Ask


def test_questions(domain: str):
    try:
        queries = load_domain(domain).split("test")
    except MdragError:
        return gr.update(choices=[], value=None)
    return gr.update(choices=[(f"{q.id} — {q.text[:90]}", q.id) for q in queries], value=None)


def pick_question(domain: str, query_id: str | None) -> tuple[str, str]:
    if not query_id:
        return gr.update(), ""
    query = load_domain(domain).query_by_id.get(query_id)
    if query is None:
        return gr.update(), ""
    return query.text, f"Gold answer: {' | '.join(query.answers) or '(none)'} · {query.answer_type} · {query.id}"


_JUDGE: dict[str, object] = {}
_JUDGE_LOCK = threading.Lock()


def _judge():
    """The packaged judge, loaded on first use by whichever session needs it first (shared read-only)."""
    from mdrag.evaluation.judge import get_judge

    with _JUDGE_LOCK:
        if "judge" not in _JUDGE:
            _JUDGE["judge"] = get_judge(JUDGE_SPEC)
        return _JUDGE["judge"]


def ask(question: str, domain: str, query_id: str | None, setting: str, retriever: str, reranker: str, top_k: int,
        variants: list[str], with_judge: bool = True,
        progress=gr.Progress(track_tqdm=True)) -> Iterator[tuple]:  # noqa: B008
    """Retrieve, show passages, then show each variant's answer as soon as it is ready; then (questions with a
    gold answer) the judge's verdict on each, which never delays the answers."""
    variants = variants or ["vanilla"]
    try:
        pipe = RagPipeline.for_domain(domain, retriever=retriever, reranker=reranker, top_k=int(top_k))
        text, bench = pipe.resolve_query(question, query_id or None)  # also matches a typed benchmark question
        progress(0.1, desc="retrieving")
        timings: dict[str, float] = {}
        ranked = pipe.retrieve(text, set(bench.gold_ids) if bench else set(), timings)
        trace = pipe.make_trace(text, bench, ranked, setting, timings=timings)
    except MdragError as err:
        yield error_html(err), "", "", None, "", gr.update(), gr.update()
        return
    link = case_link(domain, text, trace.query_id, setting, variants)
    judging = bool(with_judge and trace.gold_answers)  # finished cards say a verdict is coming

    def choices() -> dict:  # a fresh update per output: Gradio consumes the dict it is given
        return gr.update(choices=variants, value=variants[:2])

    yield answers_html(trace, variants), passages_html(trace), trace.prompt, None, link, gr.update(), gr.update()
    progress(0.4, desc=f"generating {len(variants)} variants in one batch")
    partial: dict[str, str] = {}
    shown_at = 0.0
    # Closing this generator (Gradio does when the tab closes, the event is cancelled or re-submitted) closes
    # the stream, which stops the decoding at its next token and joins its worker.
    events = pipe.stream(trace, variants)
    try:
        for event in events:
            if isinstance(event, TokenEvent):  # redraw at most every STREAM_EVERY seconds
                partial[event.variant] = event.text
                if time.monotonic() - shown_at < STREAM_EVERY:
                    continue
            shown_at = time.monotonic()
            yield answers_html(trace, variants, partial, judging), gr.update(), gr.update(), None, link, \
                gr.update(), gr.update()
    except Exception as err:  # shown in the page
        yield error_html(err), passages_html(trace), trace.prompt, None, link, gr.update(), gr.update()
        return
    finally:
        events.close()
    yield answers_html(trace, variants, judging=judging), gr.update(), gr.update(), trace, link, choices(), choices()
    if judging:
        from mdrag.evaluation.verdicts import judge_trace

        progress(0.9, desc="judging the answers against the gold answer")
        try:
            judge_trace(trace, _judge())
        except MdragError as err:  # e.g. the judge's packages are missing: the answers stay
            for a in trace.answers.values():
                a.verdict = {"judge": JUDGE_SPEC, "score": None, "error": str(err)}
        yield answers_html(trace, variants), gr.update(), gr.update(), trace, link, gr.update(), gr.update()


# ----------------------------------------------------------------------------------------- Attention


def _need_trace(trace: RagTrace | None) -> RagTrace:
    if trace is None or not trace.answers:
        raise gr.Error("Ask a question first (Ask tab): the analysis runs on its answers.")
    return trace


def attention(trace, variants: list[str], first_token: int, last_token: int, progress=gr.Progress()):  # noqa: B008
    from analysis.views import attention_bundle

    trace = _need_trace(trace)
    if not variants:
        raise gr.Error("Pick one or two variants to compare.")
    a, b = (variants + variants)[:2]
    progress(0.2, desc="attention per segment (one forward pass per variant)")
    tokens = (int(first_token), int(last_token)) if last_token > first_token else None
    bundle = attention_bundle(trace, a, b, tokens)
    gold = ", ".join(f"passage {g.split('_')[1]}" for g in _gold(trace)) or "none in the prompt"
    note = (f"Mean attention mass of {esc(a)} and {esc(b)} over their answer tokens (per layer, averaged over "
            f"heads); gold: {esc(gold)}. Mass for answer token i = attention of the position that produced it.")
    return bundle["fig_a"], bundle["fig_b"], bundle["fig_diff"], note, bundle


def _gold(trace: RagTrace) -> list[str]:
    from analysis.views import gold_segments

    return gold_segments(trace)


def heads(trace, bundle, variant_choice: str, layer: int):
    from analysis.views import head_drilldown

    if not bundle:
        raise gr.Error("Compute the attention first.")
    variant = variant_choice or bundle["frame"]["variant"].iloc[0]
    return head_drilldown(bundle["attention"], bundle["frame"], variant, int(layer), _need_trace(trace))


def bertviz(trace, variant: str, start: int, end: int, layers: str, view: str, progress=gr.Progress()):  # noqa: B008
    from analysis.views import bertviz_segments, bertviz_window

    trace = _need_trace(trace)
    variant = variant or next(iter(trace.answers))
    progress(0.3, desc="attention for the bertviz view")
    try:
        if view == "passages (one unit per segment)":
            return bertviz_segments(trace, variant)
        chosen = [int(x) for x in layers.replace(" ", "").split(",") if x] if layers.strip() else None
        return bertviz_window(trace, variant, int(start), int(end), chosen, "head" if view == "head" else "model")
    except (ValueError, KeyError) as err:
        return error_html(err)


def adapters(trace, bundle):
    from analysis.views import adapter_bundle

    variants = list(_need_trace(trace).answers)
    out = adapter_bundle(variants, bundle["attention"] if bundle else None)
    shift = out.get("shift", pd.DataFrame())
    return out["fig"], shift.round(4) if not shift.empty else shift


# --------------------------------------------------------------------------------------- Attribution


def attribution(trace, variants: list[str], bundle, progress=gr.Progress()):  # noqa: B008
    from analysis.views import attribution_bundle

    trace = _need_trace(trace)
    variants = [v for v in (variants or list(trace.answers)) if v in trace.answers]
    empty = [v for v in variants if not trace.answers[v].token_ids]
    if empty:
        raise gr.Error(f"Empty answers cannot be attributed: {', '.join(empty)}")
    progress(0.2, desc=f"passage ablation: {len(trace.passages) + 1} forward passes per variant")
    out = attribution_bundle(trace, variants, bundle["attention"] if bundle else None)
    changed = out.get("changed", pd.DataFrame())
    return out["bars"], out["deletion"], out["top"], out["agreement"].round(3), changed.round(4)


def position_probe(trace, variants: list[str], progress=gr.Progress()):  # noqa: B008
    from analysis.views import position_probe_bundle

    trace = _need_trace(trace)
    variants = [v for v in (variants or list(trace.answers)) if v in trace.answers] or ["vanilla"]
    progress(0.1, desc=f"position probe: {len(trace.passages)} prompts, {len(variants)} variants each")
    try:
        out = position_probe_bundle(trace, variants)
    except MdragError as err:
        raise gr.Error(str(err)) from err
    return out["figure"], out["answers"], out["summary"]


def sentences(trace, variant: str, passage: int, progress=gr.Progress()):  # noqa: B008
    from analysis.views import sentence_bundle

    trace = _need_trace(trace)
    progress(0.3, desc="sentence ablation")
    try:
        return sentence_bundle(trace, variant or next(iter(trace.answers)), int(passage))
    except (ValueError, KeyError) as err:
        return error_html(err)


def gradients(trace, variant: str, first: int, last: int, progress=gr.Progress()):  # noqa: B008
    from analysis.attribution import gradient_attribution
    from analysis.views import token_html

    trace = _need_trace(trace)
    progress(0.1, desc="integrated gradients: one pass per answer token (slow on a CPU)")
    try:
        frame = gradient_attribution(trace, variant or next(iter(trace.answers)), (int(first), int(last)))
    except (ValueError, KeyError) as err:
        return error_html(err)
    return token_html(frame)


# ---------------------------------------------------------------------------------------- Dashboards


def offer_stores(paths: list[Path | str]) -> dict[str, Path]:
    """The stores the dashboards offer: `paths` (labelled as given), then the shipped store."""
    STORES.clear()
    for p in paths:
        STORES[str(p)] = Path(p)
    STORES.setdefault("shipped results (assets/results/results.sqlite)", dashboard.SHIPPED_STORE)
    return STORES


def _store_path(label: str) -> Path:
    """The offered store behind a label; anything else (a path typed into a request) is refused."""
    if label not in STORES:
        raise gr.Error("Unknown results store. This server offers: " + "; ".join(STORES) + " (start it with "
                       "--store PATH to add one).")
    return STORES[label]


def _store_frame(label: str, judge: str | None = None) -> pd.DataFrame:
    try:
        return dashboard.load_results(_store_path(label), judge)
    except MdragError as err:
        raise gr.Error(str(err)) from err


def _judges_in(label: str) -> list[tuple[str, str]]:
    try:
        return dashboard.judge_choices(_store_path(label))
    except (MdragError, gr.Error):
        return []


def _download(table: pd.DataFrame, name: str) -> str:
    """A CSV of `table` in this process's download folder, named by its content: the same table clicked twice
    is one file, and the folder goes when the app stops (no temporary file left behind per click)."""
    import atexit
    import hashlib

    global _DOWNLOADS
    if _DOWNLOADS is None:
        _DOWNLOADS = Path(tempfile.mkdtemp(prefix="mdrag-downloads-"))
        atexit.register(remove_downloads)
    text = table.to_csv(index=False)
    path = _DOWNLOADS / f"{name}-{hashlib.sha256(text.encode()).hexdigest()[:12]}.csv"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    return str(path)


def dashboards(label: str, domains: list[str], variants: list[str], settings: list[str], retrievers: list[str],
               metric: str, by: str, judge: str | None = None):
    path = _store_path(label)
    whole = _store_frame(label, judge)
    every_retriever = dashboard.retriever_choices(whole)
    # grouping by retriever compares them all unless some are picked
    df = dashboard.filtered(whole, domains, variants, settings,
                            retrievers or (every_retriever if by == "retriever" else None))
    if df.empty:
        raise gr.Error("No rows match these filters.")
    from mdrag.evaluation.judge_validity import weak_domains

    judge_name = ", ".join(sorted(set(df["judge"].dropna())))
    valid = dashboard.validity_tables(path, whole)
    bars = dashboard.metric_bars(df, metric, by, judge_name, weak_domains(valid["against_match"]))
    by_setting = dashboard.metric_bars(df, metric, "setting", judge_name)
    robust = dashboard.noise_robustness(df, metric).round(3)
    longform = dashboard.longform(df).round(2)
    table = dashboard.means_with_ci(df, metric, [by, "variant", "setting"]).round(3)
    csv = _download(table, "dashboard")
    summary = (f"{len(df)} rows, {df['query_id'].nunique()} questions. " + dashboard.judge_summary(df))
    compared = dashboard.retriever_comparison(dashboard.filtered(whole, domains, variants, settings,
                                                                 every_retriever), metric)
    probe = dashboard.position_probe(path, domains, variants)
    return (bars, by_setting, robust, longform, table, str(csv), esc(summary), compared.round(3),
            dashboard.adapted_retrievers().round(3), valid["against_match"].round(3), valid["settings"].round(3),
            valid.get("sanity", pd.DataFrame()).round(3), esc(dashboard.human_summary(valid.get("human", {}))),
            probe["figure"], probe["dependence"].round(3), esc(probe["summary"]))


def _retrievers_in(label: str) -> list[str]:
    """Retrievers present in an offered store (none if it cannot be read yet)."""
    try:
        return dashboard.retriever_choices(dashboard.load_results(_store_path(label)))
    except (MdragError, gr.Error):
        return []


def remove_downloads() -> None:
    """Remove this process's download folder (registered to run when the app stops)."""
    import shutil

    global _DOWNLOADS
    if _DOWNLOADS is not None:
        shutil.rmtree(_DOWNLOADS, ignore_errors=True)
        _DOWNLOADS = None


def store_changed(label: str):
    """A newly picked store: its judges and retrievers as the selectors' choices."""
    judges = _judges_in(label)
    return (gr.Dropdown(choices=judges, value=judges[0][1] if judges else None),
            gr.CheckboxGroup(choices=_retrievers_in(label), value=[]))


def failures(label: str, kinds: list[str], judge: str | None = None):
    cases = dashboard.failure_cases(_store_frame(label, judge))
    if kinds:
        cases = cases[cases["kind"].isin(kinds)]
    return cases.reset_index(drop=True)


def load_case(cases: pd.DataFrame, evt: gr.SelectData):
    """A clicked failure row -> the Ask tab's inputs (then Ask runs it)."""
    row = cases.iloc[evt.index[0]]
    chosen = [v for v in str(row["variants"]).split(",") if v in VARIANTS] or ["vanilla"]
    return (row["domain"], row["question"], row["query_id"], row["setting"], chosen, gr.Tabs(selected="ask"))


def from_url(request: gr.Request):
    """?domain=..&qid=..|q=..&setting=..&variants=.. reproduces a case."""
    params = dict(request.query_params) if request else {}
    domain = params.get("domain") if params.get("domain") in DOMAINS else "nq_open"
    setting = params.get("setting") if params.get("setting") in SETTINGS else "retrieved"
    chosen = [v for v in params.get("variants", "vanilla,qk_att").split(",") if v in VARIANTS] or ["vanilla"]
    qid = params.get("qid")
    text = params.get("q", "who got the first nobel prize in physics")
    if qid:
        query = load_domain(domain).query_by_id.get(qid)
        text, qid = (query.text, qid) if query else (text, None)
    return domain, text, qid, setting, chosen


# --------------------------------------------------------------------------------------------- Layout


def build_app() -> gr.Blocks:
    rerank_label = esc(get_reranker("minilm").label)
    model = _model_bound()
    from mdrag.generation.model import generator_config

    last_layer = generator_config().num_hidden_layers - 1  # the loaded generator's shape, not SmolLM2's 30
    with gr.Blocks(title="mdrag") as demo:
        gr.Markdown(
            "# mdrag — multi-domain RAG with LoRA variants, looked at from the inside\n"
            "Generator: SmolLM2-135M-Instruct (packaged) with the shipped adapters. Default reranker: "
            f"{rerank_label}. LLMEval judge: the packaged Qwen2.5-Coder-1.5B-Instruct (the paper's is 10.7B; its "
            "agreement with Match and with people is shown beside every LLMEval figure in Dashboards).")
        trace_state = gr.State(None)
        attention_state = gr.State(None)
        with gr.Tabs() as tabs:
            with gr.Tab("Ask", id="ask"):
                with gr.Row():
                    question = gr.Textbox(label="Question", value="who got the first nobel prize in physics",
                                          scale=4, max_length=LIMITS.max_query_chars)
                    domain = gr.Dropdown(list(DOMAINS), value="nq_open", label="Domain")
                with gr.Row():
                    pick = gr.Dropdown([], label="…or pick a test question (gold answer shown)", scale=4)
                    gold_info = gr.Markdown()
                with gr.Row():
                    setting = gr.Radio(list(SETTINGS), value="retrieved", label="Setting")
                    retriever = gr.Dropdown(retriever_names(), value="splade", label="First stage")
                    reranker = gr.Dropdown(list(RERANKERS), value="minilm", label="Reranker")
                    top_k = gr.Slider(1, 10, value=LIMITS.rerank_k, step=1, label="top-k to the generator")
                variants = gr.CheckboxGroup([(VARIANTS[name].label, name) for name in available_variants()],
                                            value=["vanilla", "qk_att"], label="Variants (one batch)")
                with_judge = gr.Checkbox(True, label="LLMEval verdict on each answer after it is ready (packaged "
                                         "1.5B judge; questions with a gold answer)")
                go_btn = gr.Button("Ask", variant="primary", elem_id="ask-button")
                answers = gr.HTML(elem_id="answers")
                link = gr.Textbox(label="Link to this case (append to the app's URL)", buttons=["copy"],
                                  interactive=False, elem_id="case-link")
                passages = gr.HTML(elem_id="passages")
                with gr.Accordion("Exact prompt", open=False):
                    prompt = gr.Textbox(show_label=False, lines=12)
            with gr.Tab("Attention", id="attention"):
                with gr.Row():
                    att_variants = gr.CheckboxGroup([], label="Two variants to compare (A, B)")
                    first_token = gr.Number(0, label="from answer token", precision=0)
                    last_token = gr.Number(0, label="to answer token (0 = whole answer)", precision=0)
                att_btn = gr.Button("Compute attention", variant="primary", elem_id="attention-button")
                att_note = gr.Markdown()
                with gr.Row():
                    fig_a = gr.Plot(label="A", elem_id="attention-a")
                    fig_b = gr.Plot(label="B")
                fig_diff = gr.Plot(label="A − B", elem_id="attention-diff")
                with gr.Accordion("Heads of one layer", open=False):
                    with gr.Row():
                        head_variant = gr.Dropdown(available_variants(), value="qk_att", label="variant")
                        head_layer = gr.Slider(0, last_layer, value=(2 * last_layer) // 3, step=1, label="layer")
                    head_fig = gr.Plot()
                with gr.Accordion("bertviz (offline)", open=False):
                    with gr.Row():
                        bv_variant = gr.Dropdown(available_variants(), value="vanilla", label="variant")
                        bv_view = gr.Radio(["head", "model", "passages (one unit per segment)"], value="head",
                                           label="view")
                        bv_start = gr.Number(0, label="window from token", precision=0)
                        bv_end = gr.Number(40, label="to token", precision=0)
                        bv_layers = gr.Textbox(",".join(str(i * last_layer // 3) for i in range(4)),
                                               label="layers (comma-separated; empty = all)")
                    bv_btn = gr.Button("Render bertviz")
                    bv_html = gr.HTML(elem_id="bertviz")
                with gr.Accordion("Adapters: size of each LoRA update and the attention shift it causes",
                                  open=False):
                    lora_btn = gr.Button("Show adapter views")
                    lora_fig = gr.Plot()
                    lora_table = gr.Dataframe(label="per layer: update norm vs attention shift from vanilla")
            with gr.Tab("Attribution", id="attribution"):
                attr_variants = gr.CheckboxGroup([], label="Variants (first two are compared)")
                attr_btn = gr.Button("Passage ablation (captum)", variant="primary", elem_id="attribution-button")
                attr_bars = gr.Plot(elem_id="attribution-bars")
                attr_curve = gr.Plot()
                with gr.Row():
                    attr_top = gr.Dataframe(label="top-attributed passage vs gold and top reranked")
                    attr_agree = gr.Dataframe(label="agreement: attention vs ablation (Spearman)")
                attr_changed = gr.Dataframe(label="what changed between the first two variants")
                with gr.Accordion("Position probe for this question: the gold passage moved through positions "
                                  "1..k (one prompt per position, every chosen variant)", open=False):
                    probe_btn = gr.Button("Run the position probe", elem_id="probe-button")
                    probe_fig = gr.Plot(elem_id="probe-figure")
                    probe_answers = gr.Dataframe(label="answers per position (✓ Match right, ✗ wrong)",
                                                 elem_id="probe-answers")
                    probe_table = gr.Dataframe(label="per variant and position: Match, log P(gold answer), "
                                                     "attention on the gold passage")
                with gr.Accordion("Sentences of one passage", open=False):
                    with gr.Row():
                        sent_variant = gr.Dropdown(available_variants(), value="vanilla", label="variant")
                        sent_passage = gr.Number(1, label="passage #", precision=0)
                    sent_btn = gr.Button("Sentence ablation")
                    sent_html = gr.HTML()
                with gr.Accordion("Tokens: integrated gradients (slow: minutes per answer token span)", open=False):
                    with gr.Row():
                        ig_variant = gr.Dropdown(available_variants(), value="vanilla", label="variant")
                        ig_first = gr.Number(0, label="answer tokens from", precision=0)
                        ig_last = gr.Number(1, label="to", precision=0)
                    ig_btn = gr.Button("Integrated gradients")
                    ig_html = gr.HTML()
            with gr.Tab("Dashboards", id="dashboards"):
                with gr.Row():
                    offered = list(STORES or offer_stores([]))
                    store = gr.Dropdown(offered, value=offered[0], label="results store (the server's --store "
                                        "files and the shipped one)", elem_id="store-choice")
                    metric = gr.Dropdown(list(dashboard.METRICS), value="Match", label="metric")
                    by = gr.Radio(["domain", "cluster", "retriever"], value="domain", label="group by")
                    judges = _judges_in(offered[0])
                    dash_judge = gr.Dropdown(judges, value=judges[0][1] if judges else None,
                                             label="LLMEval judge (its verdicts; validity below)")
                with gr.Row():
                    f_domains = gr.CheckboxGroup(list(DOMAINS), label="domains (none = all)")
                    f_variants = gr.CheckboxGroup(list(VARIANTS), label="variants (none = all)")
                    f_settings = gr.CheckboxGroup(list(SETTINGS), label="settings (none = all)")
                    f_retrievers = gr.CheckboxGroup(_retrievers_in(offered[0]),
                                                    label="retrievers (none = the main one, splade>minilm)")
                dash_btn = gr.Button("Show", variant="primary", elem_id="dashboard-button")
                dash_summary = gr.Markdown()
                dash_bars = gr.Plot(elem_id="dashboard-bars")
                dash_settings = gr.Plot()
                with gr.Row():
                    dash_robust = gr.Dataframe(label="noise robustness (noisy / oracle)")
                    dash_long = gr.Dataframe(label="long-form answers")
                dash_table = gr.Dataframe(label="means with 95% CIs")
                dash_csv = gr.File(label="download CSV")
                dash_retr = gr.Dataframe(label="better retriever or generator adapter? paired differences on the "
                                               "same questions (retrieved setting, 95% bootstrap CI)")
                dash_adapted = gr.Dataframe(label="adapted dense retrievers: first-stage quality before/after "
                                                  "(trained_on_it false: forgetting check)")
                gr.Markdown("### Is the judge any good? (evaluation/judge_validity.py; kappa < 0.4 greys a "
                            "domain's LLMEval bars)")
                valid_match = gr.Dataframe(label="judge vs Match per domain: kappa and AUC with 95% CIs, length "
                                                 "bias (Spearman with answer words among Match-right / -wrong)",
                                           elem_id="judge-validity")
                with gr.Row():
                    valid_settings = gr.Dataframe(label="sensitivity to the setting: LLMEval vs Match")
                    valid_sanity = gr.Dataframe(label="sanity set from the benchmark: pass rate per check")
                valid_human = gr.Markdown()
                gr.Markdown("### Position probe: does a variant answer from Document 1? (python -m mdrag probe "
                            "position)")
                probe_summary = gr.Markdown(elem_id="probe-summary")
                probe_curves = gr.Plot(elem_id="probe-curves")
                probe_dependence = gr.Dataframe(label="Match with the gold passage first minus at positions 2..k, "
                                                      "per question; vs vanilla paired (95% CI); shortcut: CI above 0")
            with gr.Tab("Failures", id="failures"):
                kinds = gr.CheckboxGroup(list(dashboard.FAILURE_KINDS), label="kinds (none = all)",
                                         info="; ".join(f"{k}: {v}" for k, v in dashboard.FAILURE_KINDS.items()))
                fail_btn = gr.Button("Find cases", variant="primary", elem_id="failures-button")
                fail_table = gr.Dataframe(label="click a row to load it into Ask", interactive=False,
                                          elem_id="failures-table")

        query_id = gr.State(None)
        ask_inputs = [question, domain, query_id, setting, retriever, reranker, top_k, variants, with_judge]
        ask_outputs = [answers, passages, prompt, trace_state, link, att_variants, attr_variants]
        domain.change(test_questions, domain, pick)
        pick.change(pick_question, [domain, pick], [question, gold_info]).then(lambda q: q, pick, query_id)
        question.input(lambda: None, None, query_id)  # typing a new question detaches it from the picked id
        go_btn.click(ask, ask_inputs, ask_outputs, **model)
        question.submit(ask, ask_inputs, ask_outputs, **model)
        att_btn.click(attention, [trace_state, att_variants, first_token, last_token],
                      [fig_a, fig_b, fig_diff, att_note, attention_state], **model)
        head_layer.release(heads, [trace_state, attention_state, head_variant, head_layer], head_fig)
        head_variant.change(heads, [trace_state, attention_state, head_variant, head_layer], head_fig)
        bv_btn.click(bertviz, [trace_state, bv_variant, bv_start, bv_end, bv_layers, bv_view], bv_html, **model)
        lora_btn.click(adapters, [trace_state, attention_state], [lora_fig, lora_table])
        attr_btn.click(attribution, [trace_state, attr_variants, attention_state],
                       [attr_bars, attr_curve, attr_top, attr_agree, attr_changed], **model)
        probe_btn.click(position_probe, [trace_state, attr_variants], [probe_fig, probe_answers, probe_table],
                        **model)
        sent_btn.click(sentences, [trace_state, sent_variant, sent_passage], sent_html, **model)
        ig_btn.click(gradients, [trace_state, ig_variant, ig_first, ig_last], ig_html, **model)
        dash_btn.click(dashboards, [store, f_domains, f_variants, f_settings, f_retrievers, metric, by, dash_judge],
                       [dash_bars, dash_settings, dash_robust, dash_long, dash_table, dash_csv, dash_summary,
                        dash_retr, dash_adapted, valid_match, valid_settings, valid_sanity, valid_human,
                        probe_curves, probe_dependence, probe_summary])
        fail_btn.click(failures, [store, kinds, dash_judge], fail_table)
        store.change(store_changed, store, [dash_judge, f_retrievers])
        fail_table.select(load_case, fail_table, [domain, question, query_id, setting, variants, tabs]).then(
            ask, ask_inputs, ask_outputs, **model)
        demo.load(from_url, None, [domain, question, query_id, setting, variants]).then(
            test_questions, domain, pick)
    return demo


def main() -> None:
    global JUDGE_SPEC, MODEL_JOBS
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
    args = parser.parse_args()
    offer_stores(args.store)
    MODEL_JOBS = max(1, args.model_jobs)
    JUDGE_SPEC = args.judge
    # Model-bound events share the "model" group (MODEL_JOBS at once); the light ones (dashboards, tables)
    # run at most 2 at a time each, so reading results never waits behind a generation.
    build_app().queue(default_concurrency_limit=2).launch(server_name=args.host, server_port=args.port,
                                                          share=args.share, css=CSS)


if __name__ == "__main__":
    main()
