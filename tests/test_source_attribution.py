"""Sentence-level attribution methods (#25) on tiny models whose right answer is known by construction.

- A hand-built one-layer "copier": its only head attends to the tokens of one known sentence (query bias aligned
  with those tokens' keys, on the slow rotary dimensions so position does not matter) and adds their embeddings
  to the residual stream, so the answer that copies that sentence is likely exactly when the sentence is there.
- The same model made blind: its head looks at the template's first token and its output projection is zero,
  so nothing of the context reaches the logits.
Plus the ablation scorer against plain transformers, and the LDS of perfect and constant predictors.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from analysis.ablations import AblationScorer, random_masks, target_logit
from analysis.at2 import fit_and_card, fitting_example, load_head_weights, save_head_weights
from analysis.attribution_scores import lds, score_case
from analysis.source_methods import METHODS, attribute, make_case
from analysis.sources import answer_targets, prompt_sources
from mdrag.evaluation.attribution_table import summary, summary_markdown
from mdrag.generation.prompts import build_prompt
from mdrag.trace import RagTrace, RetrievedPassage, Span, VariantAnswer

COPIED = "Ωψλ ξπ ψΩ λξ."  # bytes no other text of the tiny corpus uses
PASSAGES = [
    "The Eiffel Tower is in Paris. It was built for the 1889 World's Fair.",
    "Python is a programming language. " + COPIED + " Guido van Rossum created it.",
    "The first Nobel Prize in Physics went to Röntgen. He discovered X-rays.",
]
EVERY = [m for m in METHODS if m != "random"]


def _build_copier(folder, tok, focus: list[int], sees: bool):
    """One layer, one head (head_dim 64), MLP off. rope_theta 1e12 makes rotary dims 16..31 (and 48..63) turn by
    < 1e-5 rad per position; q and k live there only, so attention follows token identity, not distance."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(1)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=8, num_hidden_layers=1,
                         num_attention_heads=1, num_key_value_heads=1, attention_bias=True, rope_theta=1e12,
                         max_position_embeddings=2048, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id, tie_word_embeddings=True)
    model = LlamaForCausalLM(config).eval()
    slow = torch.zeros(64)
    slow[16:32] = 1
    slow[48:64] = 1
    with torch.no_grad():
        emb = model.model.embed_tokens.weight
        emb.normal_(0, 1)
        attn = model.model.layers[0].self_attn
        for proj in (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj):
            proj.bias.zero_()
        attn.q_proj.weight.zero_()
        attn.k_proj.weight.copy_(torch.diag(slow))
        attn.v_proj.weight.copy_(torch.eye(64))
        attn.o_proj.weight.copy_(torch.eye(64) * (3.0 if sees else 0.0))
        normed = emb[focus] / emb[focus].pow(2).mean(-1, keepdim=True).sqrt()  # what the keys see (RMSNorm)
        direction = (normed * slow).sum(0)
        attn.q_proj.bias.copy_(direction / direction.norm() * (6.0 if sees else 80.0))  # blind: all on it
        model.model.layers[0].mlp.down_proj.weight.zero_()
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def _trace(tok, passages: list[str], answer: str | None) -> RagTrace:
    built = build_prompt(tok, "what does the second passage say", passages)
    trace = RagTrace(query="what does the second passage say", domain="synthetic", setting="oracle",
                     retriever="none", reranker="none",
                     passages=[RetrievedPassage(f"s{i}", "", t, f"s{i}", i + 1, None, None, None, i == 1)
                               for i, t in enumerate(passages)],
                     prompt=built.text, prompt_ids=built.input_ids, spans=built.spans,
                     query_id="synthetic-" + hashlib.sha256("|".join(passages).encode()).hexdigest()[:8])
    ids = tok(answer if answer is not None else COPIED, add_special_tokens=False)["input_ids"]
    n = len(built.input_ids)
    trace.answers["vanilla"] = VariantAnswer("vanilla", tok.decode(ids), ids, Span("answer", "answer", n, n + len(ids)),
                                             0.0)
    return trace


@pytest.fixture(scope="module")
def copier(tiny_generator_dir, tmp_path_factory):
    """(engine that copies the known sentence, engine that cannot see the context, tokenizer)."""
    from transformers import AutoTokenizer

    from mdrag.engine import Engine, Settings

    tok = AutoTokenizer.from_pretrained(tiny_generator_dir)
    copied = set(tok(COPIED, add_special_tokens=False)["input_ids"])
    elsewhere = set(tok(build_prompt(tok, "what does the second passage say",
                                     [p.replace(COPIED, "") for p in PASSAGES]).text,
                        add_special_tokens=False)["input_ids"])
    focus = sorted(copied - elsewhere)
    assert len(focus) >= 3, "the copied sentence must hold tokens found nowhere else in the prompt"
    sees = _build_copier(tmp_path_factory.mktemp("copier"), tok, focus, sees=True)
    blind = _build_copier(tmp_path_factory.mktemp("blind"), tok, [tok.convert_tokens_to_ids("<|im_start|>")],
                          sees=False)
    return (Engine(Settings(dtype="float32", generator=str(sees))),
            Engine(Settings(dtype="float32", generator=str(blind))), tok)


@pytest.fixture(scope="module")
def at2_folder(copier, tmp_path_factory):
    """AT2 weights fitted for the copier on prompts where the copied sentence sits in other passages."""
    engine, _, tok = copier
    examples = []
    layouts = [[PASSAGES[1], PASSAGES[0], PASSAGES[2]], [PASSAGES[0], PASSAGES[2], PASSAGES[1]],
               [PASSAGES[2], PASSAGES[1], PASSAGES[0]], PASSAGES]
    for i, layout in enumerate(layouts):
        examples.append(fitting_example(make_case(_trace(tok, layout, None), "vanilla", engine), 16, 0.5, seed=i))
    weights, card = fit_and_card("vanilla", examples, masks=16)
    folder = tmp_path_factory.mktemp("at2")
    save_head_weights("vanilla", weights, card, folder)
    return folder


def _copied_index(case) -> int:
    return next(i for i, s in enumerate(case.sources) if s.text.startswith("Ωψλ"))


def test_sources_are_every_sentence_of_every_passage(copier):
    _engine, _, tok = copier
    trace = _trace(tok, PASSAGES, None)
    sources = prompt_sources(trace)
    assert [(s.passage, s.index) for s in sources] == [(1, 0), (1, 1), (2, 0), (2, 1), (2, 2), (3, 0), (3, 1)]
    for s in sources:
        assert trace.prompt[s.char_start: s.char_end] == s.text
    assert sources[3].text == COPIED


def test_answer_targets_cover_the_answer_and_each_sentence(tiny_generator_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_generator_dir)
    ids = tok("Paris is in France. It was built in 1889.", add_special_tokens=False)["input_ids"]
    targets = answer_targets(ids, tok)
    assert [t.name for t in targets] == ["answer", "sentence 1", "sentence 2"]
    assert (targets[0].lo, targets[0].hi) == (0, len(ids))
    assert targets[1].lo == 0 and targets[1].hi == targets[2].lo and targets[2].hi == len(ids)
    assert targets[1].text == "Paris is in France." and targets[2].text == "It was built in 1889."
    assert [(t.lo, t.hi) for t in answer_targets(ids, tok, (2, 4))] == [(2, 4)]
    with pytest.raises(ValueError, match="outside the answer"):
        answer_targets(ids, tok, (3, 99))
    with pytest.raises(ValueError, match="empty"):
        answer_targets([], tok)


@pytest.mark.parametrize(("prefix_cache", "batch_size"), [(True, 1), (True, 3), (False, 3)])
def test_ablation_scorer_equals_plain_transformers_on_each_ablated_prompt(trace_and_engine, prefix_cache, batch_size):
    """Every mask's per-token log-probs equal a plain float32 forward of the cut prompt + answer."""
    from transformers import AutoModelForCausalLM

    trace, engine, folder = trace_and_engine
    scorer = AblationScorer(trace, "vanilla", engine, batch_size=batch_size, prefix_cache=prefix_cache)
    masks = random_masks(5, len(scorer.sources), 0.5, seed=3)
    masks[0] = True  # the full prompt too
    got = scorer.token_logprobs(masks)
    assert scorer.forwards == 5
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    answer = trace.answers["vanilla"].token_ids
    for row, keep in zip(got, masks, strict=True):
        ids = scorer.prompt_ids(keep)
        with torch.no_grad():
            logits = model(torch.tensor([ids + answer])).logits[0, len(ids) - 1: -1]
        want = torch.log_softmax(logits, -1)[torch.arange(len(answer)), torch.tensor(answer)].numpy()
        np.testing.assert_allclose(row, want, atol=2e-4)
    assert scorer.prompt_ids(masks[0]) == list(trace.prompt_ids)
    removed = scorer.m.tokenizer.decode(scorer.prompt_ids(~np.eye(len(scorer.sources), dtype=bool)[0]))
    assert scorer.sources[0].text not in removed


@pytest.fixture
def trace_and_engine(make_tiny_trace, tiny_engine, tiny_generator_dir):
    return make_tiny_trace(["vanilla", "full"], max_answer_tokens=5), tiny_engine, tiny_generator_dir


@pytest.mark.parametrize("method", EVERY)
def test_every_method_ranks_the_copied_sentence_first(copier, at2_folder, method):
    engine, _, tok = copier
    case = make_case(_trace(tok, PASSAGES, None), "vanilla", engine)
    params = {"folder": at2_folder} if method == "at2" else {}
    attr = attribute(case, method, **params)
    assert attr.scores.shape == (len(case.targets), len(case.sources))
    copied = _copied_index(case)
    best = attr.scores[0].max()
    if method == "passage_loo":  # a passage-level method ties the sentences of the passage it ranks first
        assert {case.sources[i].passage for i in np.flatnonzero(attr.scores[0] == best)} == {2}
    else:
        assert int(np.argmax(attr.scores[0])) == copied, attr.frame().sort_values("score").tail(3)
    assert attr.method == method and attr.seconds > 0
    assert attr.params.items() >= METHODS[method].defaults.items() and "folder" not in attr.params


@pytest.mark.parametrize("method", EVERY)
def test_a_model_that_cannot_see_the_context_gets_zero_attribution(copier, at2_folder, method):
    _, blind, tok = copier
    case = make_case(_trace(tok, PASSAGES, None), "vanilla", blind)
    params = {"folder": at2_folder} if method == "at2" else {}
    attr = attribute(case, method, **params)
    np.testing.assert_allclose(attr.scores, 0.0, atol=1e-6)


def test_at2_cannot_be_fitted_on_a_blind_model_and_ships_a_card(copier, at2_folder):
    _, blind, tok = copier
    example = fitting_example(make_case(_trace(tok, PASSAGES, None), "vanilla", blind), 8, 0.5, seed=0)
    assert np.ptp(example.y) == 0
    with pytest.raises(ValueError, match="nothing to fit"):
        fit_and_card("vanilla", [example, example])
    weights = load_head_weights("vanilla", at2_folder)
    assert weights.shape == (1,) and weights[0] > 0  # the one head is the copier's evidence
    from analysis.at2 import load_card

    card = load_card("vanilla", at2_folder)
    from analysis.source_views import at2_curve_figure

    fig = at2_curve_figure(at2_folder)
    assert [t.name for t in fig.data] == ["vanilla"] and list(fig.data[0].x) == [r["prompts"] for r in card["curve"]]
    assert at2_curve_figure(at2_folder / "none") is None
    assert card["n_prompts"] == 4 and card["n_held_out"] == 1 and card["masks"] == 16
    assert card["curve"] and card["held_out_lds"] > 0.2
    with pytest.raises(FileNotFoundError, match="fit-at2"):
        load_head_weights("full", at2_folder)
    (at2_folder / "broken.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="unreadable"):
        load_head_weights("broken", at2_folder)


def test_lds_of_a_perfect_predictor_is_one_and_of_a_constant_one_zero():
    actual = np.array([0.3, -1.2, 2.5, 0.0, 1.1])
    assert lds(actual * 2 + 1, actual) == pytest.approx(1.0)
    assert lds(-actual, actual) == pytest.approx(-1.0)
    assert lds(np.full(5, 0.7), actual) == 0.0
    assert np.isnan(lds(actual, np.zeros(5)))


@pytest.mark.parametrize("salt", ["", " Rome is in Italy."])
def test_scores_separate_the_copier_from_random_and_summarise_with_cis(copier, at2_folder, salt):
    engine, _, tok = copier
    case = make_case(_trace(tok, [PASSAGES[0] + salt, *PASSAGES[1:]], None), "vanilla", engine)
    _, rows = score_case(case, ["context_cite", "sentence_loo", "attention", "at2", "random"], n_eval=12,
                         params={"at2": {"folder": at2_folder}})
    by = {r["method"]: r for r in rows if r["target"] == "answer"}
    copied = _copied_index(case)
    without = target_logit(case.scorer.token_logprobs(np.stack([np.ones(len(case.sources), dtype=bool),
                                                                  np.arange(len(case.sources)) != copied])),
                           case.targets[0])
    for method in ["context_cite", "sentence_loo"]:  # ablation-fitted: they rank the held-out masks
        assert by[method]["lds"] > 0.8, by[method]
        assert by[method]["lds"] > by["random"]["lds"]
    for method in ["context_cite", "sentence_loo", "attention", "at2"]:
        assert by[method]["lds"] > 0.2, by[method]
        # the top-1 removal is the copied sentence's: the largest drop any single sentence can cause
        assert by[method]["drop1"] == pytest.approx(without[0] - without[1]) and by[method]["drop1"] > 5
    assert by["context_cite"]["forwards"] == 32 and by["sentence_loo"]["forwards"] == len(case.sources) + 1
    import pandas as pd

    table = summary(pd.DataFrame(rows).assign(domain="synthetic"))
    assert set(table["method"]) == set(by) and (table["n"] == 1).all()
    assert "context_cite" in summary_markdown(table) and "[" in summary_markdown(table)


def test_target_logit_reads_the_span_and_unknown_parameters_fail(copier):
    lp = np.log(np.array([[0.5, 0.5], [0.9, 0.1]]))
    from analysis.sources import Target

    got = target_logit(lp, Target(0, 2, "", "answer"))
    np.testing.assert_allclose(got, np.log([0.25 / 0.75, 0.09 / 0.91]))
    engine, _, tok = copier
    case = make_case(_trace(tok, PASSAGES, None), "vanilla", engine)
    with pytest.raises(ValueError, match="takes"):
        attribute(case, "context_cite", masks=8, nonsense=1)
    from mdrag.errors import UnknownNameError

    with pytest.raises(UnknownNameError, match="context_cite"):
        attribute(case, "no_such_method")


ATTR_QUERIES = [{"id": f"a{i}", "text": f"question {i}: who created python or where is paris", "answers": ["Paris"],
                 "gold_ids": [["p4"], ["p6"], ["p2", "p6"]][i % 3], "answer_type": "short",
                 "split": "test" if i < 2 else "train"} for i in range(5)]


@pytest.fixture
def attribution_store(tmp_path, tiny_engine, tiny_generator_dir, tiny_adapters_root, monkeypatch):
    """A tiny domain with test and training questions and a store of vanilla/full answers (bm25, no reranker);
    the CLI's engine reads the tiny generator and adapters from the environment."""
    from conftest import write_jsonl

    from mdrag.data.domains import DOMAINS, register_jsonl_domain
    from mdrag.evaluation.runner import Grid, evaluate
    from mdrag.evaluation.store import ResultsStore

    monkeypatch.setenv("MDRAG_DTYPE", "float32")
    monkeypatch.setenv("MDRAG_GENERATOR", str(tiny_generator_dir))
    monkeypatch.setenv("MDRAG_ADAPTERS", str(tiny_adapters_root))
    from conftest import TINY_PASSAGES

    register_jsonl_domain("attrtiny", write_jsonl(tmp_path / "q.jsonl", ATTR_QUERIES),
                          write_jsonl(tmp_path / "p.jsonl", TINY_PASSAGES))
    store = ResultsStore(tmp_path / "r.sqlite")
    evaluate(Grid(["attrtiny"], ["vanilla", "full"], ["retrieved"], retrievers=["bm25"], reranker="none"), store,
             tiny_engine, show_progress=False)
    yield store
    DOMAINS.pop("attrtiny", None)


def test_the_attribution_cli_fits_scores_resumably_and_exports_a_case(attribution_store, tmp_path, capsys):
    from mdrag.cli import main
    from mdrag.evaluation.report import report
    from mdrag.evaluation.store import ResultsStore

    path, weights = str(attribution_store.path), tmp_path / "at2"
    common = ["--domains", "attrtiny", "--variants", "vanilla,full", "--masks", "8", "--weights", str(weights),
              "--retriever", "bm25", "--reranker", "none", "--max-new-tokens", "6"]
    assert main(["attribution", "fit-at2", "--per-domain", "3", *common]) == 0
    assert "held-out LDS" in capsys.readouterr().out
    assert sorted(p.name for p in weights.iterdir()) == ["full.json", "full.safetensors", "vanilla.json",
                                                          "vanilla.safetensors"]
    score = ["attribution", "score", "--store", path, "--limit", "1", "--eval-masks", "6",
             "--methods", "context_cite,at2,sentence_loo,random", *common]
    assert main(score) == 0
    rows = ResultsStore(attribution_store.path).attribution_scores_frame()
    stored = attribution_store.answers_frame()
    first = stored[stored["query_id"] == min(stored["query_id"])]
    assert set(rows["result_key"]) == set(first.loc[first["answer"].str.strip() != "", "key"])  # empty: skipped
    assert set(rows["method"]) == {"context_cite", "at2", "sentence_loo", "random"}
    assert (rows.query("method == 'context_cite'")["forwards"] == 8).all() and rows["n_eval"].eq(6).all()
    assert "| context_cite" in capsys.readouterr().out
    assert main(score) == 0 and "0 new rows" in capsys.readouterr().out  # nothing scored twice
    assert len(ResultsStore(attribution_store.path).attribution_scores_frame()) == len(rows)
    done = ResultsStore(attribution_store.path, read_only=True)
    assert "## Attribution methods, scored on held-out ablations" in report(done.frame(), store=done)
    page = tmp_path / "case.html"
    assert main(["attribution", "explain", "--query-id", "a0", "--methods", "context_cite", "--html", str(page),
                 *common]) == 0
    html = page.read_text(encoding="utf-8")
    assert "<script src" not in html and "Plotly" in html and "mdrag-sources" in html
    assert "<script>alert" not in html  # the tiny corpus's markup passage, if retrieved, is shown as text
    assert "answer:" in capsys.readouterr().out


def test_source_views_escape_markup_and_compare_two_variants(copier):
    from analysis.source_views import case_html, comparison, sources_html

    engine, _, tok = copier
    marked = [PASSAGES[0] + " <img src=x onerror=alert(1)> is text.", PASSAGES[1], PASSAGES[2]]
    trace = _trace(tok, marked, None)
    case = make_case(trace, "vanilla", engine)
    a = attribute(case, "sentence_loo")
    b = attribute(case, "attention")
    b.variant = "other"  # a second reading of the same answer stands in for a second variant
    view = sources_html(a, trace, "LDS 0.50 [0.40, 0.60]")
    assert "<img" not in view and "&lt;img src=x onerror=alert(1)&gt;" in view and "LDS 0.50" in view
    assert view.count("mdrag-top") == 3 and "Doc 2 (gold)" in view
    diff = comparison(a, b)
    assert {"score vanilla", "score other", "in top-3 of"} <= set(diff.columns)
    assert set(diff["in top-3 of"]) <= {"both", "vanilla", "other"} and len(diff) >= 3
    page = case_html(trace, [a, b])
    assert page.startswith("<!DOCTYPE html>") and "<img src=x" not in page and "Where the sources" in page


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["vanilla", "full", "qk_att"])
def test_shipped_at2_weights_fit_the_packaged_generator_and_attribute_in_one_forward(real_engine, variant):
    """Each shipped variant's AT2 weights hold one weight per head of the packaged generator, its card says how
    they were fitted and how well they predict held-out ablations, and attributing with them is one forward."""
    from analysis.at2 import fitted_variants, load_card
    from analysis.gold_attention import trace_from_rows
    from mdrag.evaluation import dashboard
    from mdrag.evaluation.store import ResultsStore

    assert variant in fitted_variants()
    config = real_engine.generator().model.config
    weights = load_head_weights(variant)
    assert weights.shape == (config.num_hidden_layers * config.num_attention_heads,) and np.isfinite(weights).all()
    card = load_card(variant)
    assert card["split"] == "train" and card["n_prompts"] >= 10 and card["masks"] == 32
    assert len({p["domain"] for p in card["prompts"]}) == 5 and card["curve"][-1]["prompts"] == card["n_fit"]
    store = ResultsStore(dashboard.SHIPPED_STORE, read_only=True)
    rows = store.answers_frame().query("domain == 'nq_open' and setting == 'retrieved' and variant == @variant")
    trace = next(t for t in (trace_from_rows(rows.iloc[[i]], real_engine) for i in range(5)) if t is not None)
    attr = attribute(make_case(trace, variant, real_engine), "at2")
    assert attr.forwards == 1 and attr.scores.shape[1] == len(prompt_sources(trace))
    assert np.isfinite(attr.scores).all() and attr.params["weights"]
