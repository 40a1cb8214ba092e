"""LLMEval judge scoring and the statistics helpers."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pytest
import torch

from mdrag.errors import MdragError
from mdrag.evaluation.judge import (
    _JUDGE_RENDER,
    JUDGE3_USER,
    JUDGE_USER,
    OpenAIJudge,
    get_judge,
    gold_text,
    judge_messages,
    score_mass,
)
from mdrag.evaluation.stats import bootstrap_ci, cohen_kappa


def test_prompt_is_the_papers_verbatim():
    msgs = judge_messages("who?", "Röntgen", "It was Röntgen")
    assert msgs[0]["content"] == "You are an evaluation tool. Answer with one of Yes, No."
    assert msgs[1]["content"].endswith("Question: who?. \nGolden answer: Röntgen \n Generated answer: It was Röntgen")
    assert JUDGE_USER.startswith("Here is a question, a golden answer and an AI-generated answer.")


@pytest.mark.parametrize("p_yes,p_no,score", [(0.3, 0.1, 0.75), (0.0, 0.5, 0.0), (0.2, 0.0, 1.0)])
def test_yes_no_weighting(p_yes, p_no, score):
    verdict = score_mass({"yes": p_yes, "no": p_no})
    assert verdict.score == pytest.approx(score) and verdict.mass == pytest.approx(p_yes + p_no)


@pytest.mark.parametrize("mass,score", [
    ({"yes": 0.2, "partially": 0.2, "no": 0.0}, 0.75),  # (0.2 + 0.1) / 0.4
    ({"yes": 0.0, "partially": 0.3, "no": 0.3}, 0.25),
    ({"yes": 0.0, "partially": 0.0, "no": 0.9}, 0.0),
    ({"yes": 0.0, "partially": 0.0, "no": 0.0}, None),
])
def test_three_level_weighting(mass, score):
    assert score_mass(mass).score == (pytest.approx(score) if score is not None else None)


def test_three_level_prompt_differs_only_in_the_allowed_answers():
    assert JUDGE_USER.replace("one of Yes, No.", "one of Yes, Partially, No.") == JUDGE3_USER
    assert judge_messages("q", "a", "p", 3)[0]["content"].endswith("one of Yes, Partially, No.")


def test_no_mass_on_yes_or_no_is_a_recorded_failure():
    v = score_mass({"yes": 0.0, "no": 0.0})
    assert v.score is None and "no probability" in v.error


@pytest.mark.parametrize("prefix_cache", [True, False])
def test_hf_judge_reads_first_token_probabilities(tiny_generator_dir, prefix_cache):
    """Against an independent reference: a plain fp32 copy of the model, the whole prompt, no mask, full logits."""
    from transformers import AutoModelForCausalLM

    judge = get_judge(f"hf:{tiny_generator_dir}", dtype="float32")  # bf16 differs in the 3rd digit between paths
    model = AutoModelForCausalLM.from_pretrained(tiny_generator_dir, dtype=torch.float32).eval()
    tok = judge.tokenizer
    assert judge.ids["yes"] and judge.ids["no"] and not set(judge.ids["yes"]) & set(judge.ids["no"])
    items = [("q", "a", "p"), ("who wrote <b>it</b>?", "Ann (also accepted: A. N.)", "Ann, in 1901"),
             # answers to one question share its cached question + gold prefix
             ("who wrote <b>it</b>?", "Ann (also accepted: A. N.)", "Bob"),
             ("who wrote <b>it</b>?", "Ann (also accepted: A. N.)", "")]
    for levels in (2, 3):
        found = judge.judge_many(items, levels=levels, prefix_cache=prefix_cache)
        for item, verdict in zip(items, found, strict=True):
            ids = tok.apply_chat_template(judge_messages(*item, levels), add_generation_prompt=True, tokenize=True,
                                          return_dict=True)["input_ids"]
            with torch.no_grad():
                probs = torch.softmax(model(torch.tensor([ids])).logits[0, -1].float(), -1)
            words = ("yes", "no") if levels == 2 else ("yes", "partially", "no")
            if levels == 3 and not judge.ids["partially"]:
                assert verdict.score is None and "Partially" in verdict.error
                continue
            p = {w: probs[judge.ids[w]].sum().item() for w in words}
            want = (p["yes"] + 0.5 * p.get("partially", 0.0)) / sum(p.values())
            assert verdict.score == pytest.approx(want, rel=1e-4)
            assert verdict.mass == pytest.approx(sum(p.values()), rel=1e-4)


def test_the_shared_prefix_is_a_real_prefix_of_every_prompt(tiny_generator_dir):
    judge = get_judge(f"hf:{tiny_generator_dir}", dtype="float32")
    prefix, cache = judge._shared_prefix(_JUDGE_RENDER[2])
    assert len(prefix) > 10 and cache.get_seq_length() == len(prefix)
    for item in [("q", "a", "p"), (":colon first", "x", "y"), ("", "", "")]:
        assert judge.prompt_ids(item, 2)[: len(prefix)] == prefix


@pytest.mark.parametrize("answers,text", [
    (["Lithium", "lithium"], "Lithium"),
    (["Paris", "paris", "City of Paris"], "Paris (also accepted: City of Paris)"),
    (["  a ", "b", "c"], "a (also accepted: b; c)"),
    ([], "(no answer in the documents)"),
    (None, "(no answer in the documents)"),
    ("single", "single"),
])
def test_the_judge_sees_every_gold_alias(answers, text):
    assert gold_text(answers) == text


@pytest.mark.parametrize("spec,match", [("openai:model", "openai:MODEL@BASE_URL"), ("gpt-5", "Unknown judge"),
                                        ("hf:/nowhere/at/all", "not a local Hugging Face model directory")])
def test_bad_judge_names_are_clear_errors(spec, match):
    with pytest.raises(MdragError, match=match):
        get_judge(spec)


class Chat(BaseHTTPRequestHandler):
    reply = b""

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", str(len(Chat.reply)))
        self.end_headers()
        self.wfile.write(Chat.reply)

    def log_message(self, *a):
        pass


@pytest.fixture
def endpoint():
    httpd = HTTPServer(("127.0.0.1", 0), Chat)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}/v1"
    httpd.shutdown()


def test_openai_judge_sums_yes_and_no_logprobs(endpoint):
    top = [{"token": "Yes", "logprob": np.log(0.6)}, {"token": " yes", "logprob": np.log(0.1)},
           {"token": "No", "logprob": np.log(0.2)}, {"token": "Maybe", "logprob": np.log(0.1)}]
    Chat.reply = json.dumps({"choices": [{"logprobs": {"content": [{"top_logprobs": top}]}}]}).encode()
    verdict = OpenAIJudge("m", endpoint).judge("q", "a", "p")
    assert verdict.score == pytest.approx(0.7 / 0.9) and verdict.mass == pytest.approx(0.9)
    three = OpenAIJudge("m", endpoint).judge("q", "a", "p", levels=3)
    assert three.score == pytest.approx(0.7 / 0.9)  # the same reply carries no "Partially" mass


def test_openai_judge_three_level_counts_a_split_partially(endpoint):
    top = [{"token": "Part", "logprob": np.log(0.4)}, {"token": "Yes", "logprob": np.log(0.4)},
           {"token": "No", "logprob": np.log(0.2)}, {"token": "Pa", "logprob": np.log(0.5)}]
    Chat.reply = json.dumps({"choices": [{"logprobs": {"content": [{"top_logprobs": top}]}}]}).encode()
    verdict = OpenAIJudge("m", endpoint).judge("q", "a", "p")
    assert verdict.score == pytest.approx(0.4 / 0.6)
    three = OpenAIJudge("m", endpoint).judge("q", "a", "p", levels=3)
    assert three.score == pytest.approx((0.4 + 0.2) / 1.0)  # 'Pa' is too short a prefix to count
    assert three.p_partially == pytest.approx(0.4)


def test_openai_judge_garbage_is_recorded_not_raised(endpoint):
    Chat.reply = b"<html>oops</html>"
    v = OpenAIJudge("m", endpoint).judge("q", "a", "p")
    assert v.score is None and "failed" in v.error


def test_bootstrap_ci_brackets_the_mean_and_is_seeded():
    values = [0, 1] * 50
    mean, lo, hi = bootstrap_ci(values)
    assert mean == 0.5 and lo < 0.5 < hi and hi - lo == pytest.approx(0.2, abs=0.06)  # ~ 2 * 1.96 * 0.05
    assert bootstrap_ci(values) == (mean, lo, hi)
    assert bootstrap_ci([1.0, None, 1.0])[0] == 1.0


@pytest.mark.parametrize("a,b,kappa", [
    ([1, 1, 0, 0], [1, 1, 0, 0], 1.0),
    ([1, 0, 1, 0], [0, 1, 0, 1], -1.0),
    ([1, 1, 1, 0], [1, 0, 1, 0], (0.75 - (0.75 * 0.5 + 0.25 * 0.5)) / (1 - 0.5)),
])
def test_cohen_kappa(a, b, kappa):
    assert cohen_kappa(a, b) == pytest.approx(kappa)


def test_hf_judge_batch_equals_one_at_a_time(tiny_generator_dir):
    """Right-padded batches after the shared prefix give each prompt the verdict it gets alone; duplicates
    are judged once."""
    judge = get_judge(f"hf:{tiny_generator_dir}", dtype="float32")
    items = [("who wrote it", "Ann", "Ann wrote it"), ("q", "a", "p"), ("who wrote it", "Ann", "Ann wrote it"),
             ("a much longer question about the <b>document</b>", "42 kg", "forty-two"),
             ("who wrote it", "Ann", "Bob wrote it, in a much longer answer than the others"),
             ("who wrote it", "Ann", "nobody"), ("who wrote it", "Ann", "Ann")]
    batched = judge.judge_many(items, batch_size=3)
    for item, verdict in zip(items, batched, strict=True):
        alone = judge.judge_many([item], prefix_cache=False)[0]
        assert verdict.score == pytest.approx(alone.score, rel=1e-4)
    assert batched[0] == batched[2]
