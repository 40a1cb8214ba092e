"""LLMEval judge (paper): a model asked whether the generated answer is correct given the question and
the golden answer. Score = P("Yes") / (P("Yes") + P("No")) at the first generated token.

Judges: a local HF causal LM (default: the packaged SmolLM2-135M — far weaker than the paper's SOLAR-10.7B,
so every report names the judge and shows its agreement with Match), or an OpenAI-compatible endpoint
(chat completions with logprobs, e.g. a vLLM server). A judge failure is returned as an error string,
never raised, so an evaluation run records it and goes on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mdrag.openai_compat import ChatEndpoint, EndpointError

JUDGE_SYSTEM = "You are an evaluation tool. Answer with one of Yes, No."
JUDGE_USER = (
    "Here is a question, a golden answer and an AI-generated answer. Can you judge whether the AI-generated "
    "answer is correct according to the question and golden answer, simply answer with one of Yes, No.\n "
    "Question: {question}. \nGolden answer: {answer} \n Generated answer: {prediction}"
)


def judge_messages(question: str, answer: str, prediction: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": JUDGE_SYSTEM},
            {"role": "user", "content": JUDGE_USER.format(question=question, answer=answer, prediction=prediction)}]


@dataclass
class Verdict:
    score: float | None  # P(Yes) / (P(Yes) + P(No)); None when the judge failed
    p_yes: float | None = None
    p_no: float | None = None
    error: str | None = None


def yes_no_score(p_yes: float, p_no: float) -> Verdict:
    total = p_yes + p_no
    if not total > 0:
        return Verdict(None, p_yes, p_no, "the judge put no probability on Yes or No")
    return Verdict(p_yes / total, p_yes, p_no)


class HFJudge:
    """First-token Yes/No probabilities from a local causal LM (spellings 'Yes', ' Yes', 'yes' summed)."""

    def __init__(self, generator_path: str | None = None):
        from mdrag.generation.model import load_generator

        self.loaded = load_generator(generator_path)
        self.name = f"hf:{self.loaded.name}" + (" (135M stand-in for the paper's 10.7B judge)"
                                                  if "135m" in self.loaded.name.lower() else "")
        tok = self.loaded.tokenizer
        self.ids = {word: self._first_ids(tok, word) for word in ("yes", "no")}
        if not all(self.ids.values()):
            from mdrag.errors import MdragError

            raise MdragError(f"Judge {self.name}: its tokenizer has no single token for Yes/No; use another judge.")

    @staticmethod
    def _first_ids(tok, word: str) -> list[int]:
        ids = set()
        for form in (word.capitalize(), " " + word.capitalize(), word, " " + word):
            enc = tok(form, add_special_tokens=False)["input_ids"]
            if enc and tok.decode(enc[:1]).strip().lower() == word:
                ids.add(enc[0])
        return sorted(ids)

    def judge(self, question: str, answer: str, prediction: str) -> Verdict:
        import torch

        tok = self.loaded.tokenizer
        ids = tok.apply_chat_template(judge_messages(question, answer, prediction), add_generation_prompt=True,
                                      tokenize=True, return_dict=True)["input_ids"]
        model = self.loaded.model
        kwargs = {"adapter_names": ["__base__"]} if hasattr(model, "peft_config") else {}
        with torch.inference_mode():
            logits = model(torch.tensor([ids]), logits_to_keep=1, **kwargs).logits[0, -1]  # (vocab,)
        probs = torch.softmax(logits.float(), dim=-1)
        return yes_no_score(float(probs[self.ids["yes"]].sum()), float(probs[self.ids["no"]].sum()))


class OpenAIJudge(ChatEndpoint):
    """First-token Yes/No probabilities from the endpoint's top logprobs."""

    def judge(self, question: str, answer: str, prediction: str) -> Verdict:
        try:
            choice = self.complete(judge_messages(question, answer, prediction), max_tokens=1, logprobs=True,
                                   top_logprobs=20)
            top = choice["logprobs"]["content"][0]["top_logprobs"]
            mass = {"yes": 0.0, "no": 0.0}
            for entry in top:
                word = str(entry.get("token", "")).strip().lower()
                if word in mass:
                    mass[word] += math.exp(float(entry["logprob"]))
        except (EndpointError, KeyError, IndexError, TypeError, ValueError) as err:
            return Verdict(None, error=f"judge {err}")
        return yes_no_score(mass["yes"], mass["no"])
