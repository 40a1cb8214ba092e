"""The whole pipeline on the tiny corpus with a tiny random generator (BM25 first stage, no reranker)."""

import pytest

from mdrag.engine import Engine, Settings
from mdrag.errors import InvalidQueryError, MissingModelError, UnknownNameError
from mdrag.generation.model import load_generator
from mdrag.generation.prompts import SYSTEM_PROMPT, build_prompt
from mdrag.trace import RagTrace


@pytest.fixture
def pipe(tiny_domain, tiny_engine):
    return tiny_engine.pipeline(tiny_domain, retriever="bm25", reranker="none", top_k=3)


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
    p = Engine(Settings(generator=str(tmp_path))).pipeline(tiny_domain, retriever="bm25", reranker="none")
    with pytest.raises(MissingModelError, match=r"config\.json"):
        p.run("who created python")


def test_an_engine_loads_each_part_once_and_engines_share_nothing(tiny_generator_dir, tiny_domain, tmp_path,
                                                                  monkeypatch):
    """What sessions share is what one engine holds; the generator follows the settings (MDRAG_GENERATOR read
    once, when the settings are made), and a second engine never returns the first one's objects."""
    import shutil

    other = tmp_path / "copy"
    shutil.copytree(tiny_generator_dir, other)
    monkeypatch.setenv("MDRAG_GENERATOR", str(tiny_generator_dir))
    first = Engine(Settings.from_env(dtype="float32"))
    monkeypatch.setenv("MDRAG_GENERATOR", str(other))
    assert first.generator().path == tiny_generator_dir  # the environment was read once, at Settings.from_env
    second = Engine(Settings.from_env(dtype="float32"))
    assert second.generator().path == other and second.generator() is not first.generator()
    assert first.generator() is first.generator() and first.stacked() is first.stacked()
    assert first.retriever("bm25", tiny_domain) is first.retriever("bm25", tiny_domain)
    assert first.retriever("bm25", tiny_domain) is not second.retriever("bm25", tiny_domain)
    assert first.reranker("minilm") is not second.reranker("minilm")
    assert load_generator(str(tiny_generator_dir)) is not first.generator()  # the loader itself caches nothing
    kinds = {k[0] for k in first.parts()}
    assert {"generator", "stacked", "retriever", "reranker"} <= kinds


def test_the_engine_holds_one_judge_per_spec_and_release_lets_it_go(tiny_generator_dir):
    import gc
    import weakref

    from mdrag.evaluation.judge import shared_judge

    engine = Engine(Settings(dtype="float32"))
    spec = f"hf:{tiny_generator_dir}"
    judge = shared_judge(engine, spec)
    assert shared_judge(engine, spec) is judge and judge.dtype == "float32"
    assert shared_judge(Engine(Settings(dtype="float32")), spec) is not judge  # engines share nothing
    gone = weakref.ref(judge)
    del judge
    assert engine.release("judge") == 1 and engine.release("judge") == 0
    gc.collect()
    assert gone() is None  # nothing else held the model: its memory is free for what comes next
    assert "judge" not in {k[0] for k in engine.parts()} and shared_judge(engine, spec) is not None


def test_a_slow_build_blocks_only_the_callers_of_its_own_part():
    """The judge loads for a minute in float32: Ask requests meanwhile reach the other parts at once, and every
    caller of the loading part gets the one copy built."""
    import threading
    import time

    engine = Engine(Settings(dtype="float32"))
    started, release, builds = threading.Event(), threading.Event(), []

    def slow():
        builds.append(1)
        started.set()
        release.wait(10)
        return object()

    got = []
    waiters = [threading.Thread(target=lambda: got.append(engine.share(("judge", "slow"), slow))) for _ in range(3)]
    waiters[0].start()
    assert started.wait(5)
    for t in waiters[1:]:
        t.start()
    t0 = time.perf_counter()
    other = engine._once(("reranker", "x"), object)  # an engine part of its own, under the engine lock
    assert time.perf_counter() - t0 < 1.0 and engine._once(("reranker", "x"), object) is other
    release.set()
    for t in waiters:
        t.join(10)
    assert len(builds) == 1 and len(got) == 3 and got[0] is got[1] is got[2]


def test_settings_from_flags_and_environment(monkeypatch):
    monkeypatch.setenv("MDRAG_DTYPE", "float32")
    monkeypatch.setenv("MDRAG_MAX_QUERY_CHARS", "50")
    s = Settings.from_env(top_k=3, endpoint=None)
    assert (s.dtype, s.max_query_chars, s.top_k, s.endpoint) == ("float32", 50, 3, None)
    with pytest.raises(Exception, match="Known: float32"):
        Settings.from_env(dtype="float8")


def test_one_retrieval_serves_every_setting(pipe, monkeypatch):
    """Step 1 runs once per question; step 2 builds each setting's trace from it without searching again."""
    retriever = pipe.engine.retriever("bm25", pipe.domain)
    calls = []
    search = retriever.search
    monkeypatch.setattr(retriever, "search", lambda *a: calls.append(a) or search(*a))
    retrieval = pipe.retrieve(query_id="q1")
    traces = {s: pipe.trace(retrieval, s, n_distractors=2) for s in ("retrieved", "oracle", "noisy")}
    assert len(calls) == 1
    assert [p.id for p in traces["oracle"].passages] == ["p2", "p6"]
    assert [p.id for p in traces["retrieved"].passages] == [p.id for p in retrieval.ranked[:3]]
    assert retrieval.ranked[0].rank == 0  # the settings' ranks are set on copies: the retrieval is reusable


def test_stream_yields_tokens_then_answers_and_closing_it_stops_the_decoding(pipe):
    import threading
    import time

    from mdrag.errors import UnknownNameError
    from mdrag.pipeline import AnswerEvent, TokenEvent

    retrieval = pipe.retrieve("who got the first nobel prize in physics")
    trace = pipe.trace(retrieval, "retrieved")
    events = list(pipe.stream(trace, ["vanilla", "full"]))
    answers = [e.answer for e in events if isinstance(e, AnswerEvent)]
    assert sorted(a.variant for a in answers) == ["full", "vanilla"] and set(trace.answers) == {"vanilla", "full"}
    last_text = {e.variant: e.text for e in events if isinstance(e, TokenEvent)}
    assert all(last_text[a.variant].strip() == a.text.strip() for a in answers)

    before = set(threading.enumerate())
    tokens = 0
    stream = pipe.stream(pipe.trace(retrieval, "retrieved"), ["vanilla"])
    for event in stream:
        tokens += isinstance(event, TokenEvent)
        if tokens == 2:
            break
    stream.close()
    assert {t for t in threading.enumerate() if t.is_alive()} <= before  # the worker is gone
    time.sleep(0.3)
    with pytest.raises(UnknownNameError):  # an error in the worker reaches the consumer
        list(pipe.stream(trace, ["nonsense"]))
