"""The minimal app's handler: escaped output, readable errors (the browser tests come with the UI issue)."""

import pytest

import app


@pytest.fixture
def tiny_env(monkeypatch, tiny_generator_dir, tiny_domain):
    monkeypatch.setenv("MDRAG_GENERATOR", str(tiny_generator_dir))
    return tiny_domain


def _progress(*a, **k):
    return None


def test_ask_renders_escaped_passages_and_answers(tiny_env):
    answers, passages, prompt = app.ask("<script>alert(1)</script> markup onerror", "tiny", "retrieved", "bm25",
                                        "none", ["vanilla"], progress=_progress)
    assert "<script>" not in answers + passages and "<img" not in passages
    assert "&lt;img src=x onerror=alert(1)&gt;" in passages and "&lt;script&gt;" in passages
    assert "Vanilla (no adapter)" in answers
    assert "<script>alert(1)</script> markup onerror" in prompt  # the prompt textbox shows raw text safely


def test_errors_render_as_a_message(tiny_env):
    answers, passages, _ = app.ask("   ", "tiny", "retrieved", "bm25", "none", ["vanilla"], progress=_progress)
    assert "query is empty" in answers and passages == ""


def test_app_builds():
    assert app.build_app() is not None
