"""bertviz views render offline, draw their SVG in a real browser, and run no injected code."""

from __future__ import annotations

import re

import pytest
import torch

from analysis.bertviz_offline import (
    head_view_html,
    model_view_html,
    segment_level_attention,
    token_window_attention,
)

EVIL = "</script><script>window.pwned=1</script><img src=x onerror=window.pwned=2>"
EXTERNAL = re.compile(r"""(src|href)\s*=\s*["']?\s*(https?:)?//|url\(\s*["']?https?:|cdnjs""", re.I)


@pytest.fixture
def trace(make_tiny_trace):
    return make_tiny_trace(["vanilla", "qk_att"], top_k=2, max_answer_tokens=4)


def test_window_and_segment_attention_shapes(trace, tiny_engine):
    att, tokens = token_window_attention(trace, "qk_att", 5, 25, tiny_engine, layers=[0, 1])
    assert len(att) == 2 and att[0].shape[2:] == (20, 20) and len(tokens) == 20
    assert torch.all(att[0].sum(-1) <= 1 + 1e-4)
    seg, names = segment_level_attention(trace, "qk_att", tiny_engine)
    assert seg[0].shape[2] == seg[0].shape[3] == len(names) and "passage_1" in names
    assert seg[0].sum(-1) == pytest.approx(torch.ones_like(seg[0].sum(-1)), abs=1e-4)  # all keys are segments
    with pytest.raises(ValueError, match="too large"):
        token_window_attention(trace, "qk_att", 0, 500, tiny_engine)


@pytest.mark.browser
@pytest.mark.parametrize("view", ["head", "model"])
def test_view_renders_offline_and_runs_no_injected_code(view, chromium):
    heads, n = 2, 6
    attention = [torch.softmax(torch.randn(1, heads, n, n), -1) for _ in range(2)]
    tokens = ["Hello", EVIL, "<b>bold</b>", "&amp;", "'quote\"", "end"]
    frame = (head_view_html if view == "head" else model_view_html)(attention, tokens, height=600)
    assert not EXTERNAL.search(frame.replace("&quot;", '"'))
    page = chromium.new_page()
    requests = []
    page.on("request", lambda r: requests.append(r.url))
    page.set_content(f"<html><body>{frame}</body></html>")
    inner = page.frame_locator("iframe")
    inner.locator("svg").first.wait_for(timeout=20_000)
    assert inner.locator("svg *").count() > 10
    child = page.frames[1]
    assert child.evaluate("typeof window.pwned") == "undefined"
    assert page.evaluate("typeof window.pwned") == "undefined"
    if view == "head":  # the head view prints the tokens: the payload shows as text
        assert EVIL in child.locator("svg").first.text_content()
    external = [u for u in requests if not u.startswith(("about:", "data:"))]
    assert external == []
    page.close()
