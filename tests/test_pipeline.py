"""The whole pipeline on the tiny corpus with a tiny random generator (BM25 first stage, no reranker)."""

import pytest

from mdrag.errors import InvalidQueryError, MissingModelError, UnknownNameError
from mdrag.generation.model import load_generator
from mdrag.generation.prompts import SYSTEM_PROMPT, build_prompt
from mdrag.pipeline import RagPipeline
from mdrag.trace import RagTrace


@pytest.fixture
def pipe(tiny_domain, tiny_generator_dir):
    return RagPipeline(tiny_domain, retriever="bm25", reranker="none", top_k=3, generator_path=str(tiny_generator_dir))


def _segment_texts(trace: RagTrace) -> dict[str, str]:
    out = {"instruction": SYSTEM_PROMPT, "question": trace.query}
    out.update({f"passage_{p.rank}": p.content for p in trace.passages})
    return out


def test_span_map_points_at_the_right_tokens(pipe, tiny_generator_dir):
    trace = pipe.run("who got the first nobel prize in physics")
    tok = load_generator(str(tiny_generator_dir)).tokenizer
    expected = _segment_texts(trace)
    assert [s.name for s in trace.spans] == ["instruction", "passage_1", "passage_2", "passage_3", "question"]
    for span in trace.spans:
        assert trace.prompt[span.char_start : span.char_end] == expected[span.name]
        assert tok.decode(trace.prompt_ids[span.start : span.end]).strip() == expected[span.name]
    starts = [s.start for s in trace.spans]
    assert starts == sorted(starts)
    assert all(a.end <= b.start for a, b in zip(trace.spans, trace.spans[1:], strict=False))
    ans = trace.answers["vanilla"]
    assert ans.span.start == len(trace.prompt_ids) and ans.span.end - ans.span.start == len(ans.token_ids)


def test_prompt_is_the_papers_basic_prompt(tiny_generator_dir):
    tok = load_generator(str(tiny_generator_dir)).tokenizer
    built = build_prompt(tok, "Q?", ["first text", "second text"])
    assert built.text == (
        f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\nBackground:\n"
        "Document 1: first text\nDocument 2: second text\n\n\nQuestion: Q?<|im_end|>\n<|im_start|>assistant\n"
    )


def test_retrieved_setting_marks_gold_and_keeps_scores(pipe):
    trace = pipe.run("who got the first nobel prize in physics")
    assert trace.query_id == "q0" and trace.gold_answers == ["Wilhelm Conrad Röntgen"]
    assert [p.rank for p in trace.passages] == [1, 2, 3]
    assert trace.passages[0].id == "p0" and trace.passages[0].is_gold  # BM25 finds it on this corpus
    assert all(p.first_stage_score is not None and p.first_stage_rank for p in trace.passages)
    assert {"first_stage", "rerank", "prompt", "generate"} <= set(trace.timings)
    metrics = trace.answers["vanilla"].metrics
    assert metrics["match"] in (0.0, 1.0) and metrics["length"] == len(trace.answers["vanilla"].text.split())


def test_free_questions_have_no_gold_metrics(pipe):
    trace = pipe.run("a question that is not in the benchmark")
    assert trace.query_id is None and trace.answers["vanilla"].metrics == {}


def test_oracle_puts_exactly_the_gold_passages_in_the_prompt(pipe):
    trace = pipe.run("where is the eiffel tower", setting="oracle")
    assert [p.id for p in trace.passages] == ["p2", "p6"] and all(p.is_gold for p in trace.passages)
    for p in trace.passages:
        assert f"Document {p.rank}: {p.content}\n" in trace.prompt


def test_noisy_mixes_gold_with_seeded_distractors(pipe):
    a = pipe.run("where is the eiffel tower", setting="noisy", n_distractors=2, seed=1)
    b = pipe.run("where is the eiffel tower", setting="noisy", n_distractors=2, seed=1)
    assert [p.id for p in a.passages] == [p.id for p in b.passages]
    assert sorted(p.id for p in a.passages if p.is_gold) == ["p2", "p6"]
    assert sum(not p.is_gold for p in a.passages) == 2


def test_oracle_needs_a_benchmark_question(pipe):
    with pytest.raises(InvalidQueryError, match="gold passages"):
        pipe.run("a question the benchmark does not have", setting="oracle")


def test_runs_are_deterministic_and_round_trip_json(pipe):
    a = pipe.run("who created python")
    b = pipe.run("who created python")
    assert a.answers["vanilla"].token_ids == b.answers["vanilla"].token_ids
    assert a.prompt_ids == b.prompt_ids
    again = RagTrace.from_json(a.to_json())
    assert again == a


def test_html_in_query_and_passages_is_stored_verbatim(pipe):
    q = "<script>alert(1)</script> markup onerror"
    trace = pipe.run(q)
    assert trace.query == q and q in trace.prompt
    assert any(p.title == "<img src=x onerror=alert(1)>" for p in trace.passages)


@pytest.mark.parametrize("kwargs,error,match", [
    ({"variants": ["nope"]}, UnknownNameError, "Known: vanilla"),
    ({"variants": ["qk_att"]}, MissingModelError, "python -m mdrag train --variant qk_att"),
    ({"setting": "sideways"}, UnknownNameError, "retrieved, oracle, noisy"),
    ({"query_id": "missing"}, UnknownNameError, "No query"),
])
def test_bad_requests_get_clear_errors(pipe, kwargs, error, match, tmp_path, monkeypatch):
    monkeypatch.setenv("MDRAG_ADAPTERS", str(tmp_path))  # no adapters trained here
    with pytest.raises(error, match=match):
        pipe.run("who created python", **kwargs)


def test_missing_generator_directory_is_a_clear_error(tiny_domain, tmp_path):
    p = RagPipeline(tiny_domain, retriever="bm25", reranker="none", generator_path=str(tmp_path))
    with pytest.raises(MissingModelError, match=r"config\.json"):
        p.run("who created python")


def test_generator_cache_follows_the_configured_directory(tiny_generator_dir, tmp_path, monkeypatch):
    import shutil

    other = tmp_path / "copy"
    shutil.copytree(tiny_generator_dir, other)
    monkeypatch.setenv("MDRAG_GENERATOR", str(tiny_generator_dir))
    a = load_generator()
    monkeypatch.setenv("MDRAG_GENERATOR", str(other))
    b = load_generator()
    assert a is not b and b.path == other and load_generator(str(tiny_generator_dir)) is a


def test_stream_yields_tokens_then_answers_and_closing_it_stops_the_decoding(tiny_domain, tiny_generator_dir,
                                                                           tiny_adapters_root, monkeypatch):
    import threading
    import time

    from mdrag.errors import UnknownNameError
    from mdrag.pipeline import AnswerEvent, RagPipeline, TokenEvent

    monkeypatch.setenv("MDRAG_ADAPTERS", str(tiny_adapters_root))
    pipe = RagPipeline(tiny_domain, retriever="bm25", reranker="none", top_k=3, generator_path=str(tiny_generator_dir))
    text, bench = pipe.resolve_query("who got the first nobel prize in physics", None)
    trace = pipe.make_trace(text, bench, pipe.retrieve(text, set(), {}), "retrieved")
    events = list(pipe.stream(trace, ["vanilla", "full"]))
    answers = [e.answer for e in events if isinstance(e, AnswerEvent)]
    assert sorted(a.variant for a in answers) == ["full", "vanilla"] and set(trace.answers) == {"vanilla", "full"}
    last_text = {e.variant: e.text for e in events if isinstance(e, TokenEvent)}
    assert all(last_text[a.variant].strip() == a.text.strip() for a in answers)

    before = set(threading.enumerate())
    tokens = 0
    stream = pipe.stream(pipe.make_trace(text, bench, pipe.retrieve(text, set(), {}), "retrieved"), ["vanilla"])
    for event in stream:
        tokens += isinstance(event, TokenEvent)
        if tokens == 2:
            break
    stream.close()
    assert {t for t in threading.enumerate() if t.is_alive()} <= before  # the worker is gone
    time.sleep(0.3)
    with pytest.raises(UnknownNameError):  # an error in the worker reaches the consumer
        list(pipe.stream(trace, ["nonsense"]))
