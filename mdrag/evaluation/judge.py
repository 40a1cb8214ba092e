"""LLMEval judge (paper): a model asked whether the generated answer is correct given the question and
the golden answer. Score = P("Yes") / (P("Yes") + P("No")) at the first generated token. The 3-level
variant asks for Yes, Partially or No and scores 1 / 0.5 / 0 weighted by the same first-token probabilities.

Judges: a local HF causal LM (default: the packaged SmolLM2-135M — far weaker than the paper's SOLAR-10.7B,
so every report names the judge and shows its agreement with Match), or an OpenAI-compatible endpoint
(chat completions with logprobs, e.g. a vLLM server). A judge failure is returned as an error string,
never raised, so an evaluation run records it and goes on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mdrag.config import LIMITS
from mdrag.openai_compat import ChatEndpoint, EndpointError

JUDGE_SYSTEM = "You are an evaluation tool. Answer with one of Yes, No."
JUDGE_USER = (
    "Here is a question, a golden answer and an AI-generated answer. Can you judge whether the AI-generated "
    "answer is correct according to the question and golden answer, simply answer with one of Yes, No.\n "
    "Question: {question}. \nGolden answer: {answer} \n Generated answer: {prediction}"
)


JUDGE3_SYSTEM = "You are an evaluation tool. Answer with one of Yes, Partially, No."
JUDGE3_USER = JUDGE_USER.replace("simply answer with one of Yes, No.", "simply answer with one of Yes, Partially, No.")
LEVELS = {2: {"yes": 1.0, "no": 0.0}, 3: {"yes": 1.0, "partially": 0.5, "no": 0.0}}


def judge_messages(question: str, answer: str, prediction: str, levels: int = 2) -> list[dict[str, str]]:
    system, user = (JUDGE_SYSTEM, JUDGE_USER) if levels == 2 else (JUDGE3_SYSTEM, JUDGE3_USER)
    return [{"role": "system", "content": system},
            {"role": "user", "content": user.format(question=question, answer=answer, prediction=prediction)}]


@dataclass
class Verdict:
    score: float | None  # P(Yes) / (P(Yes) + P(No)); None when the judge failed
    p_yes: float | None = None
    p_no: float | None = None
    error: str | None = None
    score3: float | None = None  # 3-level: (1 P(Yes) + 0.5 P(Partially)) / (P(Yes) + P(Partially) + P(No))


def yes_no_score(p_yes: float, p_no: float) -> Verdict:
    total = p_yes + p_no
    if not total > 0:
        return Verdict(None, p_yes, p_no, "the judge put no probability on Yes or No")
    return Verdict(p_yes / total, p_yes, p_no)


def level_score(mass: dict[str, float]) -> float | None:
    """Expected level under the judge's first-token distribution restricted to the allowed words."""
    total = sum(mass.values())
    if not total > 0:
        return None
    weights = LEVELS[len(mass)]
    return sum(weights[w] * p for w, p in mass.items()) / total


def combine(two: dict[str, float], three: dict[str, float] | None) -> Verdict:
    verdict = yes_no_score(two["yes"], two["no"])
    if three is not None:
        verdict.score3 = level_score(three)
    return verdict


class HFJudge:
    """First-token Yes/No probabilities from a local causal LM (spellings 'Yes', ' Yes', 'yes' summed)."""

    def __init__(self, generator_path: str | None = None):
        from mdrag.generation.model import load_generator

        self.loaded = load_generator(generator_path)
        self.dtype = LIMITS.dtype
        self.name = f"hf:{self.loaded.name}" + ("" if self.dtype == "float32" else f" [{self.dtype}]") + (
            " (135M stand-in for the paper's 10.7B judge)" if "135m" in self.loaded.name.lower() else "")
        tok = self.loaded.tokenizer
        self.ids = {word: self._first_ids(tok, word) for word in ("yes", "no", "partially")}
        if not (self.ids["yes"] and self.ids["no"]):  # "partially" is optional: no 3-level score without it
            from mdrag.errors import MdragError

            raise MdragError(f"Judge {self.name}: its tokenizer has no single token for Yes/No; use another judge.")

    @staticmethod
    def _first_ids(tok, word: str) -> list[int]:
        """Token ids that start the word in its usual spellings. A word split into pieces ('Part' 'ially')
        counts by its first piece, which is what a first-token judge can see."""
        ids = set()
        for form in (word.capitalize(), " " + word.capitalize(), word, " " + word):
            enc = tok(form, add_special_tokens=False)["input_ids"]
            first = tok.decode(enc[:1]).strip().lower() if enc else ""
            if first and (first == word or (len(first) >= 3 and word.startswith(first))):
                ids.add(enc[0])
        return sorted(ids)

    def _prompt_ids(self, item: tuple[str, str, str], levels: int) -> list[int]:
        return self.loaded.tokenizer.apply_chat_template(judge_messages(*item, levels), add_generation_prompt=True,
                                                         tokenize=True, return_dict=True)["input_ids"]

    def judge_many(self, items: list[tuple[str, str, str]], three_level: bool = True,
                   batch_size: int = 16) -> list[Verdict]:
        """Verdicts for (question, golden answer, prediction) triples. Identical triples are judged once;
        prompts go through the base model in right-padded batches (padding after the last real token
        cannot change its logits under causal attention, and positions stay those of the unpadded prompt)."""
        import torch

        from mdrag.generation.generator import multi_lora_model

        unique = list(dict.fromkeys(items))
        levels = [2, 3] if three_level and self.ids["partially"] else [2]
        jobs = [(item, lv) for item in unique for lv in levels]
        model = multi_lora_model(self.loaded, self.dtype).model  # the plain base: no adapter rows set
        pad = self.loaded.tokenizer.pad_token_id
        mass: dict[tuple, dict[str, float]] = {}
        for at in range(0, len(jobs), batch_size):
            chunk = jobs[at: at + batch_size]
            prompts = [self._prompt_ids(item, lv) for item, lv in chunk]
            width = max(map(len, prompts))
            ids = torch.tensor([p + [pad] * (width - len(p)) for p in prompts])  # (batch, width)
            mask = torch.tensor([[1] * len(p) + [0] * (width - len(p)) for p in prompts])
            with torch.inference_mode():
                logits = model(input_ids=ids, attention_mask=mask).logits  # (batch, width, vocab)
            last = logits[torch.arange(len(prompts)), torch.tensor([len(p) - 1 for p in prompts])]  # (batch, vocab)
            probs = torch.softmax(last.float(), dim=-1)
            for (item, lv), row in zip(chunk, probs, strict=True):
                words = tuple(LEVELS[lv])
                mass[(item, lv)] = {w: float(row[self.ids[w]].sum()) for w in words}
        verdicts = {item: combine(mass[(item, 2)], mass.get((item, 3))) for item in unique}
        return [verdicts[item] for item in items]

    def judge(self, question: str, answer: str, prediction: str, three_level: bool = True) -> Verdict:
        return self.judge_many([(question, answer, prediction)], three_level)[0]


class OpenAIJudge(ChatEndpoint):
    """First-token Yes/No probabilities from the endpoint's top logprobs."""

    def _first_token_mass(self, messages: list[dict[str, str]], words: tuple[str, ...]) -> dict[str, float]:
        choice = self.complete(messages, max_tokens=1, logprobs=True, top_logprobs=20)
        mass = dict.fromkeys(words, 0.0)
        for entry in choice["logprobs"]["content"][0]["top_logprobs"]:
            token = str(entry.get("token", "")).strip().lower()
            word = next((w for w in words if token and (token == w or (len(token) >= 3 and w.startswith(token)))),
                        None)
            if word:
                mass[word] += math.exp(float(entry["logprob"]))
        return mass

    def judge(self, question: str, answer: str, prediction: str, three_level: bool = True) -> Verdict:
        try:
            two = self._first_token_mass(judge_messages(question, answer, prediction), ("yes", "no"))
            three = (self._first_token_mass(judge_messages(question, answer, prediction, 3),
                                            ("yes", "partially", "no")) if three_level else None)
        except (EndpointError, KeyError, IndexError, TypeError, ValueError) as err:
            return Verdict(None, error=f"judge {err}")
        return combine(two, three)

    def judge_many(self, items: list[tuple[str, str, str]], three_level: bool = True) -> list[Verdict]:
        verdicts = {item: self.judge(*item, three_level) for item in dict.fromkeys(items)}
        return [verdicts[item] for item in items]
