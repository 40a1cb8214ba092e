"""LLMEval judge scoring and the statistics helpers."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pytest
import torch

from mdrag.evaluation.judge import JUDGE_USER, HFJudge, OpenAIJudge, judge_messages, yes_no_score
from mdrag.evaluation.stats import bootstrap_ci, cohen_kappa


def test_prompt_is_the_papers_verbatim():
    msgs = judge_messages("who?", "Röntgen", "It was Röntgen")
    assert msgs[0]["content"] == "You are an evaluation tool. Answer with one of Yes, No."
    assert msgs[1]["content"].endswith("Question: who?. \nGolden answer: Röntgen \n Generated answer: It was Röntgen")
    assert JUDGE_USER.startswith("Here is a question, a golden answer and an AI-generated answer.")


@pytest.mark.parametrize("p_yes,p_no,score", [(0.3, 0.1, 0.75), (0.0, 0.5, 0.0), (0.2, 0.0, 1.0)])
def test_yes_no_weighting(p_yes, p_no, score):
    assert yes_no_score(p_yes, p_no).score == pytest.approx(score)


def test_no_mass_on_yes_or_no_is_a_recorded_failure():
    v = yes_no_score(0.0, 0.0)
    assert v.score is None and "no probability" in v.error


def test_hf_judge_reads_first_token_probabilities(tiny_generator_dir):
    judge = HFJudge(str(tiny_generator_dir))
    model = judge.loaded.model
    tok = judge.loaded.tokenizer
    ids = tok.apply_chat_template(judge_messages("q", "a", "p"), add_generation_prompt=True, tokenize=True,
                                  return_dict=True)["input_ids"]
    kwargs = {"adapter_names": ["__base__"]} if hasattr(model, "peft_config") else {}
    with torch.no_grad():
        probs = torch.softmax(model(torch.tensor([ids]), **kwargs).logits[0, -1], -1)
    p_yes, p_no = probs[judge.ids["yes"]].sum().item(), probs[judge.ids["no"]].sum().item()
    verdict = judge.judge("q", "a", "p")
    assert judge.ids["yes"] and judge.ids["no"] and not set(judge.ids["yes"]) & set(judge.ids["no"])
    assert verdict.score == pytest.approx(p_yes / (p_yes + p_no), rel=1e-5)


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
    assert OpenAIJudge("m", endpoint).judge("q", "a", "p").score == pytest.approx(0.7 / 0.9)


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
