"""The Ask tab: a question through retrieval, reranking and every chosen variant, answers streamed side by side,
then the judge's verdict on each."""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Iterator

import gradio as gr

import analysis.probes  # noqa: F401  (registers every probe condition as a case setting: probe:attack=...)
from mdrag.data.domains import DOMAINS
from mdrag.errors import MdragError
from mdrag.evaluation.groundedness import SUPPORTED
from mdrag.generation.variants import VARIANTS, available_variants
from mdrag.pipeline import TokenEvent, setting_choices, setting_names
from mdrag.retrieval.rerank import RERANKERS
from mdrag.retrieval.retrievers import retriever_names
from mdrag.trace import RagTrace
from ui.common import Server, error_html, esc

DEFAULT_QUESTION = "who got the first nobel prize in physics"


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


def grounding_html(g: dict | None, checking: bool = False) -> str:
    """An answer's claims marked supported / unsupported, each supported one citing the passage that supports it
    most (prompt position, as in the passages table)."""
    if g is None:
        return "<div class='mdrag-grounding pending'><small><i>checking claims…</i></small></div>" if checking else ""
    if g.get("claims") is None:
        return f"<div class='mdrag-grounding'><small>Groundedness: no reading ({esc(str(g['error']))})</small></div>"
    if not g["claims"]:
        return ("<div class='mdrag-grounding'><small>Groundedness: no claim to check (the answer declines or is "
                "empty)</small></div>")
    items = []
    for c in g["claims"]:
        scores = [p for p in c["support"] if p is not None]
        best = max(scores, default=0.0)
        if c["cite"] is not None:
            items.append(f"<li class='mdrag-claim supported'>✓ {esc(c['claim'])} <b>[Doc {c['cite'] + 1}]</b> "
                         f"<small>P(supported) {best:.2f}</small></li>")
        else:
            # a passage the judge reads as supporting, but whose facts the claim does not match (the fact check)
            lacking = [(j, p, m) for j, (p, m) in enumerate(zip(c["support"], c.get("missing") or [], strict=False))
                       if p is not None and p >= SUPPORTED and m]
            why = "; ".join(f"Doc {j + 1} reads as supporting it (P {p:.2f}) but lacks {esc(', '.join(m))}"
                            for j, p, m in lacking)
            items.append(f"<li class='mdrag-claim unsupported'>✗ {esc(c['claim'])} <small>no passage supports it "
                         f"(best P {best:.2f}{'; ' + why if why else ''})</small></li>")
    m = g["metrics"]
    note = f" · {esc(g['error'])}" if g.get("error") else ""
    return (f"<div class='mdrag-grounding'><small>Groundedness: {m['n_supported']} of {m['n_claims']} claims "
            f"supported · checker: {esc(g['checker'])}{' (weak stand-in)' if g.get('weak') else ''}{note}</small>"
            f"<ul>{''.join(items)}</ul></div>")


def answers_html(trace: RagTrace, order: list[str] | None = None, partial: dict[str, str] | None = None,
                 judging: bool = False, checking: bool = False) -> str:
    """Answer cards in the requested order: finished ones with metrics (and the judge's verdict and the claims'
    groundedness once they are there), running ones with their text so far."""
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
                f"{verdict(a)}{grounding_html(a.grounding, checking)}</div>")

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


class AskTab:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.engine = server.engine

    # ------------------------------------------------------------------------------------------ layout
    def layout(self) -> None:
        """The tab's components (call inside `gr.Tab`); `inputs` and `outputs` are what `ask` takes and fills."""
        with gr.Row():
            self.question = gr.Textbox(label="Question", value=DEFAULT_QUESTION, scale=4,
                                       max_length=self.engine.settings.max_query_chars)
            self.domain = gr.Dropdown(list(DOMAINS), value="nq_open", label="Domain")
        with gr.Row():
            self.pick = gr.Dropdown([], label="…or pick a test question (gold answer shown)", scale=4)
            self.gold_info = gr.Markdown()
        with gr.Row():
            self.setting = gr.Dropdown(setting_choices(), value="retrieved", label="Setting", elem_id="setting",
                                       info="the paper's three, then each probe case (attacks: a test question's "
                                            "prompt edited as the adversarial suite edits it)")
            self.retriever = gr.Dropdown(retriever_names(), value="splade", label="First stage")
            self.reranker = gr.Dropdown(list(RERANKERS), value="minilm", label="Reranker")
            self.top_k = gr.Slider(1, 10, value=self.engine.settings.top_k, step=1, label="top-k to the generator")
        self.variants = gr.CheckboxGroup([(VARIANTS[name].label, name) for name in available_variants()],
                                         value=["vanilla", "qk_att"], label="Variants (one batch)")
        self.with_judge = gr.Checkbox(True, label="LLMEval verdict on each answer after it is ready (packaged "
                                      "1.5B judge; questions with a gold answer)")
        self.with_grounding = gr.Checkbox(False, label="Groundedness: check each answer sentence against each "
                                          "passage (packaged 1.5B judge as entailment checker; about one verdict "
                                          "per claim and passage)", elem_id="with-grounding")
        self.go = gr.Button("Ask", variant="primary", elem_id="ask-button")
        self.answers = gr.HTML(elem_id="answers")
        self.link = gr.Textbox(label="Link to this case (append to the app's URL)", buttons=["copy"],
                               interactive=False, elem_id="case-link")
        self.passages = gr.HTML(elem_id="passages")
        with gr.Accordion("Exact prompt", open=False):
            self.prompt = gr.Textbox(show_label=False, lines=12)
        self.query_id = gr.State(None)
        self.domain.change(self.test_questions, self.domain, self.pick)
        self.pick.change(self.pick_question, [self.domain, self.pick], [self.question, self.gold_info]).then(
            lambda q: q, self.pick, self.query_id)
        self.question.input(lambda: None, None, self.query_id)  # typing a new question detaches the picked id
        self.inputs = [self.question, self.domain, self.query_id, self.setting, self.retriever, self.reranker,
                       self.top_k, self.variants, self.with_judge, self.with_grounding]

    # ---------------------------------------------------------------------------------------- handlers
    def test_questions(self, domain: str):
        try:
            queries = self.engine.domain(domain).split("test")
        except MdragError:
            return gr.update(choices=[], value=None)
        return gr.update(choices=[(f"{q.id} — {q.text[:90]}", q.id) for q in queries], value=None)

    def pick_question(self, domain: str, query_id: str | None) -> tuple[str, str]:
        if not query_id:
            return gr.update(), ""
        query = self.engine.domain(domain).query_by_id.get(query_id)
        if query is None:
            return gr.update(), ""
        return query.text, f"Gold answer: {' | '.join(query.answers) or '(none)'} · {query.answer_type} · {query.id}"

    def ask(self, question: str, domain: str, query_id: str | None, setting: str, retriever: str, reranker: str,
            top_k: int, variants: list[str], with_judge: bool = True, with_grounding: bool = False,
            progress=gr.Progress(track_tqdm=True)) -> Iterator[tuple]:  # noqa: B008
        """Retrieve, show passages, then show each variant's answer as soon as it is ready; then (questions with
        a gold answer) the judge's verdict on each, which never delays the answers. Yields (answers, passages,
        prompt, trace, link, attention variants, attribution variants)."""
        variants = variants or ["vanilla"]
        try:
            pipe = self.engine.pipeline(domain, retriever=retriever, reranker=reranker, top_k=int(top_k))
            progress(0.1, desc="retrieving")
            retrieval = pipe.retrieve(question, query_id or None)  # also matches a typed benchmark question
            trace = pipe.trace(retrieval, setting)
        except MdragError as err:
            yield error_html(err), "", "", None, "", gr.update(), gr.update()
            return
        link = case_link(domain, trace.query, trace.query_id, setting, variants)
        judging = bool(with_judge and trace.gold_answers)  # finished cards say a verdict is coming
        checking = bool(with_grounding)

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
                if isinstance(event, TokenEvent):  # redraw at most every stream_every seconds
                    partial[event.variant] = event.text
                    if time.monotonic() - shown_at < self.server.stream_every:
                        continue
                shown_at = time.monotonic()
                yield answers_html(trace, variants, partial, judging), gr.update(), gr.update(), None, link, \
                    gr.update(), gr.update()
        except Exception as err:  # shown in the page
            yield error_html(err), passages_html(trace), trace.prompt, None, link, gr.update(), gr.update()
            return
        finally:
            events.close()
        yield answers_html(trace, variants, judging=judging, checking=checking), gr.update(), gr.update(), trace, \
            link, choices(), choices()
        # After the answers: the judge's verdicts (questions with a gold answer), then the claims' groundedness;
        # each is drawn when ready, and a failure of either is shown on the cards, never losing the answers.
        from mdrag.evaluation.groundedness import ground_trace
        from mdrag.evaluation.verdicts import judge_trace

        spec = self.server.judge_spec
        readings = [(judge_trace, "judging the answers against the gold answer",
                     lambda a, err: setattr(a, "verdict", {"judge": spec, "score": None, "error": err}))] * judging
        readings += [(ground_trace, "checking each claim against each passage",
                      lambda a, err: setattr(a, "grounding", {"checker": spec, "error": err}))] * checking
        for i, (read, desc, failed) in enumerate(readings):
            progress(0.9, desc=desc)
            try:
                read(trace, self.server.judge())
            except MdragError as err:  # e.g. the judge's packages are missing: the answers stay
                for a in trace.answers.values():
                    failed(a, str(err))
            yield answers_html(trace, variants, checking=checking and i + 1 < len(readings)), gr.update(), \
                gr.update(), trace, link, gr.update(), gr.update()

    def from_url(self, request: gr.Request):
        """?domain=..&qid=..|q=..&setting=..&variants=.. reproduces a case."""
        params = dict(request.query_params) if request else {}
        domain = params.get("domain") if params.get("domain") in DOMAINS else "nq_open"
        setting = params.get("setting") if params.get("setting") in setting_names() else "retrieved"
        chosen = [v for v in params.get("variants", "vanilla,qk_att").split(",") if v in VARIANTS] or ["vanilla"]
        qid = params.get("qid")
        text = params.get("q", DEFAULT_QUESTION)
        if qid:
            query = self.engine.domain(domain).query_by_id.get(qid)
            text, qid = (query.text, qid) if query else (text, None)
        return domain, text, qid, setting, chosen
