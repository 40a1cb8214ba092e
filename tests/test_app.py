"""The app's handlers without a browser: escaped output, streaming per variant, readable errors, dashboards
and failure cases from a real store. The browser tests are in test_app_browser.py."""

from __future__ import annotations

import html
from pathlib import Path

import pytest

import app
from mdrag.evaluation import dashboard
from ui.ask import AskTab
from ui.attention import AttentionTab
from ui.attribution import AttributionTab
from ui.common import Server, offered_stores
from ui.dashboards import DashboardsTab
from ui.failures import FailuresTab


@pytest.fixture
def tiny_env(tiny_engine, tiny_domain):
    """A server on the tiny engine (tiny generator and adapters) with the tiny domain registered."""
    return Server(tiny_engine)


def _progress(*a, **k):
    return None


def _run(server, *args):
    return list(AskTab(server).ask(*args, progress=_progress))


def test_ask_streams_each_variant_and_escapes_everything(tiny_env):
    steps = _run(tiny_env, "<script>alert(1)</script> markup onerror", "tiny", None, "retrieved", "bm25", "none", 3,
                 ["vanilla", "full", "qk_att"])
    answers, _, _, trace, link, *_ = steps[-1]
    passages = steps[0][1]  # passages are shown once, before the answers arrive
    assert "<script>" not in answers + passages and "<img" not in passages
    assert "&lt;img src=x onerror=alert(1)&gt;" in passages and "&lt;script&gt;" in passages
    assert "<script>alert(1)</script> markup onerror" in steps[0][2]  # the prompt textbox shows raw text
    assert steps[0][0].count("generating…") == 3  # passages first, answers pending
    assert len(steps) >= 4 and "generating…" not in answers  # one update per variant, then the final one
    assert trace is not None and list(trace.answers) == ["vanilla", "full", "qk_att"]
    assert link.startswith("?") and "setting=retrieved" in link and "variants=vanilla%2Cfull%2Cqk_att" in link



def test_ask_streams_tokens_as_they_are_generated(tiny_env):
    """Before a variant finishes, its card shows the text so far, which grows into the final answer."""
    import html
    import re

    tiny_env.stream_every = 0.0
    steps = _run(tiny_env, "python language", "tiny", None, "retrieved", "bm25", "none", 3, ["full", "vanilla"])
    assert any(a.text for a in steps[-1][3].answers.values())  # the tiny model writes something visible
    trace = steps[-1][3]
    finals = {v: a.text for v, a in trace.answers.items()}
    seen: dict[str, list[str]] = {"full": [], "vanilla": []}
    for step in steps[1:-1]:
        for variant, so_far in re.findall(r"data-variant='(\w+)'><h4>[^<]*</h4><p class='mdrag-partial'>(.*?) <i>",
                                          step[0]):
            seen[variant].append(html.unescape(so_far))
    for variant, texts in seen.items():
        if finals[variant]:
            assert any(texts), variant  # streamed before it was done
        assert all(finals[variant].startswith(t) for t in texts)
        assert texts == sorted(texts, key=len)  # only ever grows

@pytest.mark.parametrize("question,domain,match", [("   ", "tiny", "query is empty"),
                                                   ("x", "astrology", "Unknown domain")])
def test_errors_render_as_a_message(tiny_env, question, domain, match):
    steps = _run(tiny_env, question, domain, None, "retrieved", "bm25", "none", 3, ["vanilla"])
    assert len(steps) == 1 and match in steps[0][0] and "mdrag-error" in steps[0][0]


def test_analysis_handlers_need_a_trace_first(make_engine):
    import gradio as gr

    server = Server(make_engine())
    with pytest.raises(gr.Error, match="Ask a question first"):
        AttentionTab(server).attention(None, ["vanilla"], 0, 0, progress=_progress)
    with pytest.raises(gr.Error, match="Ask a question first"):
        AttributionTab(server).attribution(None, ["vanilla"], None, progress=_progress)


def test_app_builds(tiny_env):
    assert app.build_app(tiny_env) is not None


@pytest.fixture(params=[["bm25"]], ids=["bm25"])
def tiny_store(request, tmp_path, tiny_engine):
    from test_evaluation_runner import FlakyJudge, register

    from mdrag.data.domains import DOMAINS
    from mdrag.evaluation.runner import Grid, evaluate
    from mdrag.evaluation.store import ResultsStore

    register(tmp_path)
    path = tmp_path / "r.sqlite"
    evaluate(Grid(["evaltiny"], ["vanilla", "full"], ["retrieved", "oracle", "noisy"], retrievers=request.param,
                  reranker="none", n_distractors=2, limit=4),
             ResultsStore(path), tiny_engine, judge=FlakyJudge(), show_progress=False)
    yield path
    DOMAINS.pop("evaltiny", None)


@pytest.fixture
def dash(tiny_store, tiny_engine):
    """The Dashboards tab of a server started with `--store tiny_store` (as `python app.py --store PATH`)."""
    tab = DashboardsTab(Server(tiny_engine, offered_stores([tiny_store])))
    yield tab
    tab.server.remove_downloads()


def test_dashboards_match_the_store(tiny_store, dash):
    bars, _, _, _, table, csv, summary, compared, _, *_ = dash.dashboards(
        str(tiny_store), [], ["vanilla", "full"], [], [], "Match", "domain")
    assert compared.empty  # one retriever: nothing to compare
    df = dashboard.load_results(tiny_store)
    want = df.groupby(["domain", "variant", "setting"])["m_match"].mean()
    got = table.set_index(["domain", "variant", "setting"])["mean"]
    assert got.to_dict() == pytest.approx(want.round(3).to_dict(), abs=1e-3)
    assert {t.name for t in bars.data} == {"vanilla", "full"} and "rows" in summary
    assert Path(csv).read_text().startswith("domain,variant,setting")


@pytest.mark.parametrize("tiny_store", [["bm25", "dense"]], indirect=True, ids=["two-retrievers"])
def test_dashboards_compare_retrievers_and_never_mix_them_unasked(tiny_store, dash):
    df = dashboard.load_results(tiny_store)
    _, _, _, _, table, _, _, compared, _, *_ = dash.dashboards(str(tiny_store), [], [], ["retrieved"], [], "Match",
                                                              "domain")
    main = df[(df.setting == "retrieved") & (df.retriever == "bm25>none")]
    assert table["n"].sum() == len(main)  # by domain: the main retriever's rows only
    bars, _, _, _, table, _, _, _, _, *_ = dash.dashboards(str(tiny_store), [], [], ["retrieved"], [], "Match",
                                                          "retriever")
    assert set(table["retriever"]) == {"bm25>none", "dense>none"} and set(bars.data[0].x) == {
        html.escape(r) for r in table["retriever"]}  # plotly renders labels as HTML: escaped
    row = compared.set_index("change").loc["retriever dense>none instead of bm25>none (full)"]
    wide = df[df.setting == "retrieved"].pivot_table(index="query_id", columns=["retriever", "variant"],
                                                     values="m_match")
    assert row["mean"] == pytest.approx((wide[("dense>none", "full")] - wide[("bm25>none", "full")]).mean(),
                                        abs=1e-3)


def test_llmeval_names_its_judge_shows_its_validity_and_greys_domains_it_cannot_judge(tiny_store, dash):
    from mdrag.evaluation.judge_validity import against_match

    out = dash.dashboards(str(tiny_store), [], [], [], [], "LLMEval", "domain", "flaky-judge")
    bars, summary, validity = out[0], out[6], out[10]  # 9: the canaries table
    assert "judge: flaky" in bars.layout.title.text and "LLMEval judge: flaky" in summary
    df = dashboard.load_results(tiny_store, "flaky-judge")
    want = against_match(df).set_index("domain")
    got = validity.set_index("domain").loc["evaltiny", "kappa"]
    assert got == pytest.approx(want.loc["evaltiny", "kappa"], nan_ok=True, abs=1e-3)
    # the flaky judge answers 0.25 whatever the answer and the tiny model never matches: its agreement with
    # Match cannot be measured (kappa NaN, not >= 0.4), so its bars are greyed with the reason
    assert not want.loc["evaltiny", "kappa"] >= 0.4
    assert all(op == 0.25 for t in bars.data for op in t.marker.opacity)
    assert any("unreliable: judge" in a.text for a in bars.layout.annotations)
    match_bars = dash.dashboards(str(tiny_store), [], [], [], [], "Match", "domain", "flaky-judge")[0]
    assert not match_bars.layout.annotations  # Match does not depend on the judge
    assert dash.judges_in(str(tiny_store))[0][1] == "flaky-judge"


def test_dashboards_show_groundedness_beside_the_checkers_validation(tiny_store, dash, tiny_engine,
                                                                     tiny_generator_dir):
    from mdrag.evaluation.groundedness import grounded_answers, grounding_table, validate_checker, validation_items
    from mdrag.evaluation.judge import get_judge
    from mdrag.evaluation.store import ResultsStore

    out = dash.dashboards(str(tiny_store), [], [], [], [], "Match", "domain", "flaky-judge")
    assert out[-2].empty and out[-1].empty  # no grounding rows yet: empty panels, not an error
    checker = get_judge(f"hf:{tiny_generator_dir}", dtype="float32")
    store = ResultsStore(tiny_store)
    from mdrag.evaluation.groundedness import ground_store

    ground_store(store, tiny_engine, checker)
    store.put_grounding_checks(validate_checker(checker, validation_items(1, domains=["nq_open"])))
    out = dash.dashboards(str(tiny_store), [], ["full"], ["noisy"], [], "Match", "domain", "flaky-judge")
    answers = store.answers_frame().query("variant == 'full' and setting == 'noisy'")
    want = grounding_table(grounded_answers(store.answers_frame(), store.grounding_frame()).query(
        "variant == 'full' and setting == 'noisy'"), answers=answers).round(3)
    assert out[-2]["of answers"].iloc[0] == len(answers)
    assert out[-2].equals(want) and list(out[-2]["variant"]) == ["full"] and out[-2]["n"].iloc[0] == 4
    assert set(out[-1]["kind"]) >= {"gold sentence", "all"}


def test_ask_adds_the_judges_verdict_after_the_answers(tiny_env, tiny_generator_dir):
    from mdrag.evaluation.judge import get_judge, gold_text

    tiny_env.judge_spec = f"hf:{tiny_generator_dir}"
    steps = _run(tiny_env, "", "tiny", "q0", "retrieved", "bm25", "none", 3, ["vanilla", "full"])
    trace = steps[-1][3]
    assert trace.gold_answers and "judging…" in steps[-2][0] and "judging…" not in steps[-1][0]
    judge = get_judge(f"hf:{tiny_generator_dir}", tiny_env.engine.settings.dtype)  # the app's engine dtype
    for name, a in trace.answers.items():
        want = judge.judge_many([(trace.query, gold_text(trace.gold_answers), a.text)])[0].score
        assert a.verdict["score"] == pytest.approx(want, abs=1e-6), name
    assert steps[-1][0].count("LLMEval ") == 2 and f"judge: {html.escape(judge.name)}" in steps[-1][0]
    plain = _run(tiny_env, "", "tiny", "q0", "retrieved", "bm25", "none", 3, ["vanilla"], False)
    assert "LLMEval" not in plain[-1][0] and "judging" not in plain[-1][0]


def test_ask_marks_each_claim_and_cites_the_passage_that_supports_it(tiny_env, tiny_generator_dir):
    from mdrag.evaluation.groundedness import check_answers
    from mdrag.evaluation.judge import get_judge

    tiny_env.judge_spec = f"hf:{tiny_generator_dir}"
    steps = _run(tiny_env, "", "tiny", "q0", "retrieved", "bm25", "none", 3, ["vanilla", "full"], False, True)
    trace, final = steps[-1][3], steps[-1][0]
    assert "checking claims…" in steps[-2][0] and "checking claims…" not in final
    checker = get_judge(f"hf:{tiny_generator_dir}", tiny_env.engine.settings.dtype)
    passages = [(p.id, p.content, p.is_gold) for p in trace.passages]
    n_claims = 0
    for name, a in trace.answers.items():
        want = check_answers(checker, [{"question": trace.query, "answer": a.text, "passages": passages}])[0]
        got = a.grounding
        assert [c["claim"] for c in got["claims"]] == want.claims and got["metrics"] == want.metrics(), name
        for c, row in zip(got["claims"], want.support, strict=True):
            assert c["support"] == pytest.approx(row, abs=1e-4)
        n_claims += len(want.claims)
    assert final.count("class='mdrag-claim ") == n_claims
    assert final.count("[Doc ") == sum(c["cite"] is not None for a in trace.answers.values()
                                       for c in a.grounding["claims"])
    plain = _run(tiny_env, "", "tiny", "q0", "retrieved", "bm25", "none", 3, ["vanilla"], False)
    assert "mdrag-grounding" not in plain[-1][0] and plain[-1][3].answers["vanilla"].grounding is None


@pytest.mark.parametrize("grounding,shown", [
    ({"checker": "c<b>", "claims": [{"claim": "<script>x</script>", "support": [0.9, 0.1], "cite": 0},
                                    {"claim": "<img src=y>", "support": [0.2, None], "cite": None}],
      "metrics": {"n_supported": 1, "n_claims": 2}, "error": None},
     ["&lt;script&gt;x&lt;/script&gt; <b>[Doc 1]</b>", "&lt;img src=y&gt;", "1 of 2 claims", "c&lt;b&gt;"]),
    # the judge reads Doc 2 as supporting, but the claim's name is not in it: the fact check says why
    ({"checker": "c", "claims": [{"claim": "It was <i>Judy</i>.", "support": [0.1, 0.8],
                                  "missing": [["Judy"], ["<i>Judy</i>"]], "cite": None}],
      "metrics": {"n_supported": 0, "n_claims": 1}, "error": None},
     ["no passage supports it (best P 0.80; Doc 2 reads as supporting it (P 0.80) but lacks &lt;i&gt;Judy"]),
    ({"checker": "c", "claims": [], "metrics": {}, "error": None}, ["no claim to check"]),
    ({"checker": "c", "error": "<b>down</b>"}, ["no reading (&lt;b&gt;down&lt;/b&gt;)"]),
])
def test_grounding_on_a_card_is_escaped_and_says_what_it_read(grounding, shown):
    from ui.ask import grounding_html

    out = grounding_html(grounding)
    assert "<script>" not in out and "<img" not in out and "<i>" not in out
    assert all(s in out for s in shown), out


def test_failure_cases_and_loading_one(tiny_store, dash):
    cases = FailuresTab(dash).failures(str(tiny_store), [])
    assert set(cases["kind"]) <= set(dashboard.FAILURE_KINDS)
    df = dashboard.load_results(tiny_store)
    missing = df[(df.setting == "retrieved")].groupby("query_id")["passages"].first().map(
        lambda ps: not any(p["gold"] for p in ps))
    assert (cases["kind"] == "gold missing from top-k").sum() == missing.sum()

    class Select:
        index = (0, 0)

    loaded = FailuresTab.load_case(cases, Select())
    assert loaded[0] == cases.iloc[0]["domain"] and loaded[2] == cases.iloc[0]["query_id"]
    first, _, rerank = cases.iloc[0]["retriever"].partition(">")
    assert (loaded[5], loaded[6]) == (first, rerank)  # the case's own retrieval, set in Ask
    for r in cases.itertuples():  # each case is one retrieval's answers
        rows = df[(df.query_id == r.query_id) & (df.setting == r.setting) & (df.retriever == r.retriever)]
        assert set(r.variants.split(",")) <= set(rows["variant"])


def test_missing_store_is_a_readable_error(tmp_path, make_engine):
    import gradio as gr

    tab = DashboardsTab(Server(make_engine(), offered_stores([tmp_path / "none.sqlite"])))
    with pytest.raises(gr.Error, match="No results store"):
        tab.dashboards(str(tmp_path / "none.sqlite"), [], [], [], [], "Match", "domain")


@pytest.mark.parametrize("typed", ["/etc/passwd", "results.sqlite", "../assets/results/results.sqlite", ""])
def test_dashboards_open_only_the_stores_the_server_offers(tiny_store, dash, typed):
    import gradio as gr

    for handler in (lambda: dash.dashboards(typed, [], [], [], [], "Match", "domain"),
                    lambda: FailuresTab(dash).failures(typed, [])):
        with pytest.raises(gr.Error) as err:
            handler()
        message = str(err.value)
        assert "Unknown results store" in message and "passwd" not in message  # nothing about the typed file
    assert dash.judges_in(typed) == [] and dash.retrievers_in(typed) == []
    assert list(dash.server.stores) == [str(tiny_store), "shipped results (assets/results/results.sqlite)"]


def test_dashboard_downloads_are_one_file_per_table_and_go_when_the_app_stops(tiny_store, dash):
    first = dash.dashboards(str(tiny_store), [], [], [], [], "Match", "domain")[5]
    again = dash.dashboards(str(tiny_store), [], [], [], [], "Match", "domain")[5]
    other = dash.dashboards(str(tiny_store), [], ["full"], [], [], "Match", "domain")[5]
    assert first == again and other != first
    folder = Path(first).parent
    assert sorted(p.name for p in folder.iterdir()) == sorted({Path(first).name, Path(other).name})
    dash.server.remove_downloads()  # registered with atexit: runs when the app stops
    assert not folder.exists()


def test_one_dashboards_click_opens_the_store_once(tiny_store, dash, monkeypatch):
    from mdrag.evaluation import store as store_module

    opened = []
    real = store_module.ResultsStore.__init__

    def counting(self, *a, **k):
        opened.append(a[0] if a else k.get("path"))
        real(self, *a, **k)

    monkeypatch.setattr(store_module.ResultsStore, "__init__", counting)
    dash.dashboards(str(tiny_store), [], [], [], [], "Match", "domain")
    assert len(opened) == 1


def test_position_probe_for_the_question_in_hand(tiny_env, make_tiny_trace):
    trace = make_tiny_trace(["vanilla", "full"], top_k=3, max_answer_tokens=4)
    fig, answers, summary = AttributionTab(tiny_env).position_probe(trace, ["vanilla", "full"], progress=_progress)
    assert {t.name for t in fig.data} == {"vanilla", "full"}
    assert list(answers.columns) == ["variant", "1", "2", "3"] and len(answers) == 2
    assert sorted(summary["position"].unique()) == ["1", "2", "3"]
    assert all(c[0] in "✓✗" for c in answers[["1", "2", "3"]].to_numpy().ravel())


def test_position_probe_needs_a_benchmark_question(tiny_env, make_tiny_trace):
    import gradio as gr

    trace = make_tiny_trace(["vanilla"], max_answer_tokens=2)
    trace.query_id = None
    with pytest.raises(gr.Error, match="benchmark question"):
        AttributionTab(tiny_env).position_probe(trace, ["vanilla"], progress=_progress)


def test_dashboards_show_the_position_probe_and_flag_a_shortcut(tiny_store, dash):
    # the position probe's three panels (outputs 15-17; the groundedness panels follow them)
    curves_fig, dependence, summary = dash.dashboards(str(tiny_store), [], [], [], [], "Match", "domain")[15:18]
    assert curves_fig is None and dependence.empty and "No position-probe rows" in summary
    from mdrag.evaluation.store import PROBE_COLUMNS, ResultsStore

    store = ResultsStore(tiny_store)
    rows = []
    for q in range(40):
        for v, right_first, right_rest in (("vanilla", 1, 1), ("full", 1, 0)):  # full only right when gold is first
            for c in ("1", "2", "3"):
                right = right_first if c == "1" else right_rest
                rows.append({c_: None for c_ in PROBE_COLUMNS} | {
                    "key": f"{q}-{v}-{c}", "probe": "position", "condition": c, "domain": "evaltiny",
                    "query_id": f"q{q}", "variant": v, "question": f"q{q}", "gold": ["a"], "passages": [],
                    "answer": "a" if right else "b", "metrics": {"match": float(right)}, "gold_logprob": -1.0})
    store.put_probe_rows(rows)
    store.close()
    curves_fig, dependence, summary = dash.dashboards(str(tiny_store), [], [], [], [], "Match", "domain")[15:18]
    assert {t.name for t in curves_fig.data} == {"vanilla", "full"}
    assert "flagged" in summary and "full" in summary and "40 questions" in summary
    assert dependence.set_index("variant").loc["full", "shortcut"]


def test_the_probe_summary_names_the_domains_a_shortcut_shows_in(tmp_path):
    from mdrag.evaluation import dashboard
    from mdrag.evaluation.store import PROBE_COLUMNS, ResultsStore

    store = ResultsStore(tmp_path / "probe.sqlite")
    rows = []
    for domain, shortcut in (("nq_open", True), ("pubmedqa", False)):
        for q in range(40):
            for v in ("vanilla", "full"):
                for c in ("1", "2", "3"):
                    right = c == "1" or not (shortcut and v == "full")
                    rows.append({c_: None for c_ in PROBE_COLUMNS} | {
                        "key": f"{domain}-{q}-{v}-{c}", "probe": "position", "condition": c, "domain": domain,
                        "query_id": f"q{q}", "variant": v, "question": f"q{q}", "gold": ["a"], "passages": [],
                        "answer": "a" if right else "b", "metrics": {"match": float(right)}, "gold_logprob": -1.0})
    store.put_probe_rows(rows)
    probe = dashboard.position_probe(store)
    assert "Per domain, flagged on Match or log-probability: full in nq_open." in probe["summary"]
    assert "surviving a 5% false discovery rate over the 4 per-domain tests: full in nq_open." in probe["summary"]
    assert probe["by_domain"].set_index("domain").loc["pubmedqa", "shortcut on"] == "-"


def test_attribution_without_attention_says_so_and_top_reranked_follows_rerank_scores(tiny_env, make_tiny_trace):
    trace = make_tiny_trace(["vanilla", "full"], top_k=3, max_answer_tokens=3)
    # a noisy-like prompt: the reranker liked the third passage best, whatever its position in the prompt
    for score, p in zip([0.1, 0.2, 0.9], trace.passages, strict=True):
        p.rerank_score = score
    tab = AttributionTab(tiny_env)
    _, _, top, agree, changed = tab.attribution(trace, ["vanilla", "full"], None, progress=_progress)
    assert set(top["top reranked"]) == {"passage_3"}
    assert list(agree.columns) == ["note"] and "Compute attention first" in agree.iloc[0, 0]
    assert list(changed.columns) == ["note"]
    for p in trace.passages:
        p.rerank_score = None  # oracle prompts are not reranked
    _, _, top, _, _ = tab.attribution(trace, ["vanilla"], None, progress=_progress)
    assert top.loc[0, "top reranked"].startswith("–") and top.loc[0, "same as top reranked"] is None
    assert top.loc[0, "checker cites"].startswith("– (tick Groundedness")
    # the checker's citation beside ablation's top passage: agreeing, disagreeing, nothing supported
    top_passage = top.loc[0, "top attributed"]
    other = next(f"passage_{i}" for i in (1, 2, 3) if f"passage_{i}" != top_passage)
    for cites, agrees in (([top_passage, other], True), ([other], False), ([], None)):
        claims = [{"claim": "c", "support": [], "cite": int(c.split("_")[1]) - 1} for c in cites]
        trace.answers["vanilla"].grounding = {"claims": [*claims, {"claim": "u", "support": [], "cite": None}]}
        _, _, top, _, _ = tab.attribution(trace, ["vanilla"], None, progress=_progress)
        assert top.loc[0, "checker agrees"] == agrees and top.loc[0, "top attributed"] == top_passage
        assert top.loc[0, "checker cites"] == (", ".join(sorted(cites)) or "– (no claim supported)")


def test_a_closed_ask_stops_decoding_within_one_step_and_leaves_no_thread(tiny_env, monkeypatch):
    import threading

    from mdrag.pipeline import RagPipeline

    calls = {"n": 0}
    real = RagPipeline._generate

    def counting(self, trace, variants, on_answer=None, on_token=None):
        def count(v, text):
            calls["n"] += 1
            on_token(v, text)

        return real(self, trace, variants, on_answer, count)

    monkeypatch.setattr(RagPipeline, "_generate", counting)
    variants = ["vanilla", "full"]
    before = set(threading.enumerate())
    run = AskTab(tiny_env).ask("who got the first nobel prize in physics", "tiny", None, "retrieved", "bm25", "none", 3,
                  variants, False, progress=_progress)
    next(run)  # passages and empty cards
    next(run)  # the first streamed tokens
    run.close()  # what Gradio does when the tab closes or the event is cancelled
    at_close = calls["n"]
    assert {t for t in threading.enumerate() if t.is_alive()} <= before  # no thread outlives the request
    import time

    time.sleep(1.0)
    assert calls["n"] <= at_close + len(variants)  # at most the step in flight, then nothing
    assert at_close < 100 * len(variants)  # far from the 128-token budget the random model would use


@pytest.mark.parametrize("jobs", [1, 3])
def test_every_model_bound_event_shares_one_concurrency_group(jobs, tiny_engine):
    demo = app.build_app(Server(tiny_engine, model_jobs=jobs))
    fns = list(demo.fns.values()) if isinstance(demo.fns, dict) else list(demo.fns)
    model_bound = {"ask", "attention", "bertviz", "attribution", "position_probe", "sentences", "gradients",
                   "sources"}
    seen = set()
    for f in fns:
        name = getattr(f.fn, "__name__", "")
        if name in model_bound:
            seen.add(name)
            assert (f.concurrency_id, f.concurrency_limit) == ("model", jobs), name
        else:
            assert f.concurrency_id != "model", name  # reading results never waits behind a generation
    assert seen == model_bound


def test_layer_controls_follow_the_generators_shape(tiny_env, tiny_generator_dir):
    from transformers import AutoConfig

    last = AutoConfig.from_pretrained(tiny_generator_dir).num_hidden_layers - 1
    demo = app.build_app(tiny_env)
    sliders = [b for b in demo.blocks.values() if type(b).__name__ == "Slider" and b.label == "layer"]
    assert [s.maximum for s in sliders] == [last]
    boxes = [b for b in demo.blocks.values() if getattr(b, "label", "") == "layers (comma-separated; empty = all)"]
    assert boxes[0].value.split(",")[-1] == str(last)


def test_sources_of_each_answer_sentence_show_the_method_score_and_export_one_page(tiny_env, make_tiny_trace):
    """The Attribution tab's sentence sources: both variants shaded and escaped, the method's held-out score
    beside its picture (or why there is none), the two variants compared, one self-contained HTML file; a bad
    token span or a variant without AT2 weights is a message, not a traceback."""
    import pandas as pd

    trace = make_tiny_trace(["vanilla", "full"], top_k=3, max_answer_tokens=4)
    tab = AttributionTab(tiny_env)
    tiny_env._attribution_scores = pd.DataFrame([{
        "variant": "vanilla", "method": "sentence_loo", "n": 12, "lds": 0.5, "lds_lo": 0.4, "lds_hi": 0.6,
        "drop1": 1.0, "drop1_lo": 0.5, "drop1_hi": 1.5, "drop3": 2.0, "drop3_lo": 1.0, "drop3_hi": 3.0,
        "forwards": 9, "seconds": 1.0}])
    view, diff, page, _ = tab.sources(trace, ["vanilla", "full"], "sentence_loo", "", progress=_progress)
    assert view.count("class='mdrag-sources'") == 2 and "<script>" not in view
    assert "LDS 0.50 [0.40, 0.60]" in view and "n 12 answers" in view  # vanilla's score beside its picture
    assert "not scored for full yet" in view
    assert {"score vanilla", "score full", "in top-3 of"} <= set(diff.columns)
    html = Path(page).read_text(encoding="utf-8")
    assert Path(page).suffix == ".html" and html.startswith("<!DOCTYPE html>") and "<script src" not in html
    assert tab.sources(trace, ["vanilla"], "sentence_loo", "0-2", progress=_progress)[0].count("tokens 0..2") == 1
    bad, _, none, _ = tab.sources(trace, ["vanilla"], "sentence_loo", "two-three", progress=_progress)
    assert "must look like 0-5" in bad and none is None
    missing, *_ = tab.sources(trace, ["vanilla"], "at2", "", progress=_progress)
    # the tiny model has no fitted weights (or, once shipped ones exist, not their 30 x 9 heads): said, not raised
    assert "mdrag-error" in missing and ("No AT2 head weights" in missing or "heads" in missing)
