"""The real app (packaged models, shipped benchmark, adapters and results) in Debian's chromium via Playwright.

Screenshots go to MDRAG_SCREENSHOTS (default: a tmp dir); the README's come from
`MDRAG_SCREENSHOTS=assets/screenshots pytest tests/test_app_browser.py`.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

# 30 minutes a test (pyproject's default is 15): the first one's setup converts the packaged judge and starts the
# app with every adapter attached, and on an AVX2-only CPU the judge runs in float32
pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(1800)]
ROOT = Path(__file__).resolve().parents[1]
PAYLOAD_PASSAGE = 'Paris is the capital of France. <img src=x onerror="window.__pwned=1;alert(2)"> It is big.'
TIMEOUT = 240_000  # ms: the CPU is shared with the rest of the suite


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory, packaged_judge_dir):
    tmp = tmp_path_factory.mktemp("app")
    (tmp / "p.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"id": "x1", "title": "<script>alert(3)</script>France", "text": PAYLOAD_PASSAGE},
        {"id": "x2", "title": "Rome", "text": "Rome is the capital of Italy."},
        {"id": "x3", "title": "Berlin", "text": "Berlin is the capital of Germany."}]) + "\n")
    (tmp / "q.jsonl").write_text(json.dumps({"id": "xq1", "text": "what is the capital of france",
                                             "answers": ["Paris"], "gold_ids": ["x1"]}) + "\n")
    (tmp / "domains.json").write_text(json.dumps([{"name": "xss", "queries": "q.jsonl", "passages": "p.jsonl"}]))
    port = _free_port()
    env = {**os.environ, "MDRAG_DOMAINS_FILE": str(tmp / "domains.json"), "PYTHONUNBUFFERED": "1"}
    log = open(tmp / "app.log", "w")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--port", str(port)], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    start = time.time()
    while True:
        try:
            urllib.request.urlopen(url, timeout=5)
            break
        except OSError:
            if proc.poll() is not None or time.time() - start > 300:
                log.close()
                pytest.fail(f"app did not start: {(tmp / 'app.log').read_text()[-3000:]}")
            time.sleep(1)
    print(f"cold start to first page: {time.time() - start:.1f} s")
    yield url
    proc.terminate()
    proc.wait(30)
    log.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("MDRAG_SCREENSHOTS") or tmp_path_factory.mktemp("shots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _page(chromium, dialogs: list):
    page = chromium.new_page(viewport={"width": 1400, "height": 2200})
    page.set_default_timeout(TIMEOUT)
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    return page


def _open(page, url: str, question: str) -> None:
    """Load a case URL and wait until the page has applied it (clicking earlier races the load event)."""
    page.goto(url)
    page.wait_for_function("q => [...document.querySelectorAll('textarea')].some(t => t.value === q)", arg=question,
                           timeout=TIMEOUT)


def _no_judge(page) -> None:
    """Untick the Ask cards' LLMEval verdicts (the load test measures generation, not the judge)."""
    page.get_by_label("LLMEval verdict on each answer", exact=False).uncheck()


def _ask_and_wait(page, n_variants: int, timeout: int = TIMEOUT) -> list[str]:
    page.click("#ask-button")
    page.wait_for_function(
        f"() => {{ const a = document.querySelectorAll('#answers .mdrag-answer');"
        f" return a.length === {n_variants} && !document.querySelector('#answers .pending'); }}", timeout=timeout)
    return page.locator("#answers .mdrag-answer-text").all_inner_texts()


def _tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def test_every_screen_end_to_end(server, chromium, shots):
    dialogs: list[str] = []
    page = _page(chromium, dialogs)
    _open(page, server + "?domain=nq_open&variants=vanilla,qk_att&q=who+got+the+first+nobel+prize+in+physics",
          "who got the first nobel prize in physics")
    answers = _ask_and_wait(page, 2)
    assert len(answers) == 2
    assert page.locator("#passages tr").count() >= 6 and "GOLD" in page.locator("#passages").inner_text()
    # a benchmark question with a gold answer: each card gets the packaged judge's verdict after the answers
    verdicts = page.locator("#answers .mdrag-verdict").all_inner_texts()
    assert len(verdicts) == 2 and all("LLMEval" in v and "judge: Qwen2.5-Coder-1.5B" in v for v in verdicts)
    page.screenshot(path=str(shots / "ask.png"))

    _tab(page, "Attention")
    page.click("#attention-button")
    page.locator("#attention-a .js-plotly-plot").wait_for()
    page.locator("#attention-diff .js-plotly-plot").wait_for()
    page.get_by_text("bertviz (offline)").click()
    page.get_by_role("button", name="Render bertviz").click()
    page.frame_locator("#bertviz iframe").locator("svg").first.wait_for()
    page.screenshot(path=str(shots / "attention.png"))

    _tab(page, "Attribution")
    page.click("#attribution-button")
    page.locator("#attribution-bars .js-plotly-plot").wait_for()
    page.screenshot(path=str(shots / "attribution.png"))
    page.get_by_text("Position probe for this question").click()
    page.click("#probe-button")  # the gold passage through positions 1..5, both variants: 5 prompts
    page.locator("#probe-figure .js-plotly-plot").wait_for()
    page.locator('#probe-answers [data-testid="cell-1-5"]').wait_for()  # 2 variants x positions 1..5
    cells = page.locator('#probe-answers [data-testid^="cell-"]').all_inner_texts()
    assert sum(c.strip()[:1] in ("✓", "✗") for c in cells) == 2 * 5
    # sentence sources with the shipped AT2 weights (one forward per variant), its held-out score beside it
    page.get_by_text("Sources of each answer sentence").click()
    page.locator("#sources-method input").click()
    page.get_by_role("option", name="AT2 learned head weights").click()
    page.click("#sources-button")
    page.wait_for_function("() => document.querySelectorAll('#sources-html .mdrag-sources').length === 2",
                           timeout=TIMEOUT)
    assert "mdrag-error" not in page.locator("#sources-html").inner_html()
    assert all("held-out" in t or "not scored" in t
               for t in page.locator("#sources-html .mdrag-method-score").all_inner_texts())
    page.locator("#sources-export a").first.wait_for()  # the case as one HTML file

    _tab(page, "Dashboards")
    page.click("#dashboard-button")
    page.locator("#dashboard-bars .js-plotly-plot").wait_for()
    page.locator('#judge-validity [data-testid="cell-0-0"]').wait_for()  # the judge's validity beside the bars
    page.locator("#probe-curves .js-plotly-plot").wait_for()  # the shipped store's position probe
    assert "Position probe over" in page.locator("#probe-summary").inner_text()
    page.screenshot(path=str(shots / "dashboards.png"))

    _tab(page, "Failures")
    # an attack case of the shipped adversarial suite: a setting of its own, reopened with its forged passage
    page.locator("#failures-settings").get_by_label("attack: contradiction", exact=True).check()
    page.click("#failures-button")
    # Gradio 6 renders data rows as role=gridcell divs (data-testid cell-ROW-COL); column 2 is query_id.
    first_cell = page.locator('#failures-table [data-testid="cell-0-2"]')
    first_cell.wait_for()
    qid = first_cell.inner_text().strip()
    page.screenshot(path=str(shots / "failures.png"))
    first_cell.click()  # loads the case into Ask, switches tab and runs it
    page.wait_for_function(
        "q => (document.querySelector('#case-link textarea, #case-link input') || {}).value?.endsWith('qid=' + q)",
        arg=qid, timeout=TIMEOUT)
    assert page.get_by_role("tab", name="Ask").get_attribute("aria-selected") == "true"
    page.wait_for_function("() => document.querySelectorAll('#answers .mdrag-answer').length > 0 && "
                           "!document.querySelector('#answers .pending')", timeout=TIMEOUT)
    passages = page.locator("#passages").inner_text()
    assert "setting: probe:attack=contradiction" in passages and "#forged" in passages
    assert "setting=probe%3Aattack%3Dcontradiction" in page.locator("#case-link textarea, #case-link input").first \
        .input_value()
    assert dialogs == []
    page.close()


def test_markup_in_queries_and_passages_renders_as_text(server, chromium):
    dialogs: list[str] = []
    page = _page(chromium, dialogs)
    question = "<script>alert(1)</script> capital"
    _open(page, server + "?domain=xss&variants=vanilla&q=" + urllib.request.quote(question), question)
    # with groundedness: the answer's claims (which may echo a passage's markup) are checked and shown as text too.
    # One 1.5B Yes/No per claim and passage (float32 on AVX2-only CPUs: ~4 s each, more with the suite beside it):
    # the verdict is off and the wait is longer, so the next test never starts behind this one's queue.
    _no_judge(page)
    page.get_by_label("Groundedness: check each answer sentence", exact=False).check()
    _ask_and_wait(page, 1, timeout=3 * TIMEOUT)
    # CI once read "checking claims…" right after that wait: wait for the claims themselves
    page.wait_for_function("() => { const g = document.querySelector('#answers .mdrag-grounding');"
                           " return g && !g.classList.contains('pending'); }", timeout=3 * TIMEOUT)
    grounding = page.locator("#answers .mdrag-grounding").inner_text()
    assert "checker: Qwen2.5-Coder-1.5B" in grounding or "no claim to check" in grounding, grounding
    assert page.locator("#answers script, #answers img").count() == 0
    passages = page.locator("#passages").inner_text()
    assert 'onerror="window.__pwned=1;alert(2)"' in passages and "<script>alert(3)</script>France" in passages
    assert page.locator("#passages img").count() == 0 and page.locator("#passages script").count() == 0
    assert page.evaluate("typeof window.__pwned") == "undefined" and dialogs == []
    page.close()


# Eight sessions: different domains and variants (mlp and att adapt modules no other session's variant uses on
# its own), each a domain's first test question in the oracle setting.
SESSIONS = [("nq_open", "vanilla,qk_att"), ("pubmedqa", "full"), ("covidqa", "mlp,vanilla"), ("tatqa", "att"),
            ("clapnq", "qk_att_eq"), ("nq_open", "full_shuf"), ("pubmedqa", "vanilla,mlp"), ("covidqa", "qk_att")]


def test_eight_concurrent_sessions_and_an_attribution_get_their_own_answers(server, chromium):
    """The load test: eight sessions press Ask at once while a ninth runs passage attribution; no error, no
    dialog, and each session's answers equal the ones it got alone (generation queues in the one model group:
    each runs as it would alone, so this holds in bf16 too)."""
    from mdrag.data.benchmark import load_domain

    dialogs: list[str] = []
    cases = []
    for domain, variants in SESSIONS:
        q = load_domain(domain).split("test")[0]
        cases.append((server + f"?domain={domain}&qid={q.id}&variants={variants}&setting=oracle", q.text,
                      len(variants.split(","))))
    alone = []
    page = _page(chromium, dialogs)
    for url, text, n in cases:
        _open(page, url, text)
        _no_judge(page)
        alone.append(_ask_and_wait(page, n))
    page.close()
    analyst = _page(chromium, dialogs)  # a session with answers in hand, then attribution during the burst
    _open(analyst, server + "?domain=nq_open&variants=vanilla&q=who+got+the+first+nobel+prize+in+physics",
          "who got the first nobel prize in physics")
    _no_judge(analyst)
    _ask_and_wait(analyst, 1)
    _tab(analyst, "Attribution")
    pages = [_page(chromium, dialogs) for _ in cases]
    for page, (url, text, _) in zip(pages, cases, strict=True):
        _open(page, url, text)
        _no_judge(page)
    for page in pages:  # all eight in flight before any is awaited
        page.click("#ask-button")
    analyst.click("#attribution-button")
    together = []
    for page, (_, _, n) in zip(pages, cases, strict=True):
        page.wait_for_function(f"() => document.querySelectorAll('#answers .mdrag-answer').length === {n} && "
                               "!document.querySelector('#answers .pending')", timeout=TIMEOUT)
        together.append(page.locator("#answers .mdrag-answer-text").all_inner_texts())
        assert page.locator(".mdrag-error").count() == 0
        page.close()
    analyst.locator("#attribution-bars .js-plotly-plot").wait_for()
    assert analyst.locator(".toast-body.error, .mdrag-error").count() == 0
    analyst.close()
    assert together == alone and dialogs == []
