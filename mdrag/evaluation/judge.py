"""LLMEval judge (paper): a model asked whether the generated answer is correct given the question and
the golden answer. Score = P("Yes") / (P("Yes") + P("No")) at the first generated token. The 3-level
variant asks for Yes, Partially or No and scores 1 / 0.5 / 0 weighted by the same first-token probabilities.

Judges are registry entries (`JUDGES`) plus two open forms:
- `qwen2.5-coder-1.5b` (default): the packaged Qwen2.5-Coder-1.5B-Instruct (22 PyPI parts, joined once).
  Measured against Match on shipped answers: kappa 0.72, AUC 0.91 (../shared/VERIFIED.md); the validity
  report (evaluation/judge_validity.py) measures it again on whatever store it judges.
- `smollm2-135m`: the packaged 135M generator as judge, a weak stand-in (kappa -0.03 against Match on the
  shipped grid: chance), kept for comparison and labelled so everywhere.
- `hf:DIR` (a local HF causal LM) and `openai:MODEL@URL` (chat completions with logprobs, e.g. vLLM).

Every gold alias is shown to the judge (`gold_text`): the first as the golden answer, the others after it as
"also accepted". A verdict records P(Yes), P(No), P(Partially), and the first-token mass on the allowed words
(a verdict whose mass is under 0.5 is flagged: the judge mostly wanted to say something else).

A judge failure is returned as an error string, never raised, so an evaluation run records it and goes on.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mdrag.config import generation_dtype
from mdrag.errors import MdragError, UnknownNameError
from mdrag.openai_compat import ChatEndpoint, EndpointError

if TYPE_CHECKING:
    from mdrag.engine import Engine

JUDGE_SYSTEM = "You are an evaluation tool. Answer with one of Yes, No."
JUDGE_USER = (
    "Here is a question, a golden answer and an AI-generated answer. Can you judge whether the AI-generated "
    "answer is correct according to the question and golden answer, simply answer with one of Yes, No.\n "
    "Question: {question}. \nGolden answer: {answer} \n Generated answer: {prediction}"
)
JUDGE3_SYSTEM = "You are an evaluation tool. Answer with one of Yes, Partially, No."
JUDGE3_USER = JUDGE_USER.replace("simply answer with one of Yes, No.", "simply answer with one of Yes, Partially, No.")
LEVELS = {2: {"yes": 1.0, "no": 0.0}, 3: {"yes": 1.0, "partially": 0.5, "no": 0.0}}
# Part of every verdict's key: a change to the prompt or to how gold answers are shown is a new version.
PROMPT_VERSION = "bergen-v2-aliases"
NO_GOLD = "(no answer in the documents)"
MAX_ALIASES = 8  # NQ-open lists up to a dozen spellings; beyond a few they only lengthen the prompt


def gold_text(answers: list[str] | str | None) -> str:
    """Every gold alias, deduplicated ignoring case: 'A' or 'A (also accepted: B; C)'."""
    if isinstance(answers, str):
        answers = [answers]
    seen, forms = set(), []
    for a in answers or []:
        a = str(a).strip()
        if a and a.lower() not in seen:
            seen.add(a.lower())
            forms.append(a)
    if not forms:
        return NO_GOLD
    forms = forms[:MAX_ALIASES]
    return forms[0] if len(forms) == 1 else f"{forms[0]} (also accepted: {'; '.join(forms[1:])})"


def judge_messages(question: str, answer: str, prediction: str, levels: int = 2) -> list[dict[str, str]]:
    system, user = (JUDGE_SYSTEM, JUDGE_USER) if levels == 2 else (JUDGE3_SYSTEM, JUDGE3_USER)
    return [{"role": "system", "content": system},
            {"role": "user", "content": user.format(question=question, answer=answer, prediction=prediction)}]


# A prompt maker: three text fields -> chat messages. One function per prompt (not a lambda per call): the
# judge caches the KV of each maker's fixed prefix, keyed by the function.
Render = Callable[[tuple[str, str, str]], list[dict[str, str]]]


def _judge2(item: tuple[str, str, str]) -> list[dict[str, str]]:
    return judge_messages(*item, 2)


def _judge3(item: tuple[str, str, str]) -> list[dict[str, str]]:
    return judge_messages(*item, 3)


_JUDGE_RENDER: dict[int, Render] = {2: _judge2, 3: _judge3}


@dataclass
class Verdict:
    """One judge's reading of one answer at 2 or 3 levels. 2 levels: score = P(Yes) / (P(Yes) + P(No)); 3 levels:
    score = (P(Yes) + 0.5 P(Partially)) / (P(Yes) + P(Partially) + P(No)). None when the judge failed."""

    score: float | None
    p_yes: float | None = None
    p_no: float | None = None
    p_partially: float | None = None
    mass: float | None = None  # first-token probability on the allowed words
    error: str | None = None


def score_mass(mass: dict[str, float]) -> Verdict:
    """The verdict of a first-token distribution restricted to the allowed words ({yes, no[, partially]})."""
    total = sum(mass.values())
    verdict = Verdict(None, mass.get("yes"), mass.get("no"), mass.get("partially"), total)
    if not total > 0:
        verdict.error = f"the judge put no probability on {', '.join(w.capitalize() for w in mass)}"
        return verdict
    weights = LEVELS[len(mass)]
    verdict.score = sum(weights[w] * p for w, p in mass.items()) / total
    return verdict


def first_token_ids(tok, word: str) -> list[int]:
    """Token ids that start the word in its usual spellings. A word split into pieces ('Part' 'ially')
    counts by its first piece, which is what a first-token judge can see."""
    ids = set()
    for form in (word.capitalize(), " " + word.capitalize(), word, " " + word, word.upper()):
        enc = tok(form, add_special_tokens=False)["input_ids"]
        first = tok.decode(enc[:1]).strip().lower() if enc else ""
        if first and (first == word or (len(first) >= 3 and word.startswith(first))):
            ids.add(enc[0])
    return sorted(ids)


class HFJudge:
    """First-token Yes/No(/Partially) probabilities from a local causal LM, in batches of similar lengths
    that reuse the key/value cache of the prefix every judge prompt shares (system prompt + instruction,
    about half of each prompt)."""

    def __init__(self, folder: Path | str, name: str, fingerprint: str, weak: bool = False,
                 dtype: str | None = None, loader: Callable | None = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.folder = Path(folder)
        self.dtype = dtype or generation_dtype()  # callers pass the engine's settings.dtype
        self.name = name + ("" if self.dtype == "float32" else f" [{self.dtype}]")
        self.fingerprint = f"{fingerprint}@{self.dtype}"  # bf16 and float32 verdicts differ in the 3rd digit
        self.weak = weak
        self.tokenizer = AutoTokenizer.from_pretrained(self.folder, trust_remote_code=False)
        self.model = (loader() if loader else AutoModelForCausalLM.from_pretrained(
            self.folder, dtype=getattr(torch, self.dtype), attn_implementation="sdpa", trust_remote_code=False,
            use_safetensors=True)).eval()
        self.ids = {word: first_token_ids(self.tokenizer, word) for word in ("yes", "no", "partially")}
        if not (self.ids["yes"] and self.ids["no"]):  # "partially" is optional: no 3-level score without it
            raise MdragError(f"Judge {self.name}: its tokenizer has no single token for Yes/No; use another judge.")
        self._prefix: dict[Render, tuple[list[int], object]] = {}  # prompt maker -> (prefix ids, its KV cache)
        self.levels = (2, 3) if self.ids["partially"] else (2,)

    def prompt_ids(self, item: tuple[str, str, str], levels: int) -> list[int]:
        return self._ids(judge_messages(*item, levels))

    def _ids(self, messages: list[dict[str, str]]) -> list[int]:
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                  return_dict=True)["input_ids"]

    def _common_prefix(self, a: list[int], b: list[int]) -> list[int]:
        """The tokens two renderings share, one short: the next text's first word may merge with the last."""
        n = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
        return a[: max(n - 1, 0)]

    def _shared_prefix(self, render: Render) -> tuple[list[int], object]:
        """The token prefix every prompt `render` makes starts with, and its KV cache (batch 1)."""
        if render not in self._prefix:
            prefix = self._common_prefix(self._ids(render(("a", "b", "c"))), self._ids(render(("x y", "z w", "u v"))))
            self._prefix[render] = (prefix, self._extend(None, prefix, 0))
        return self._prefix[render]

    def _extend(self, cache, ids: list[int], past: int):
        """A copy of `cache` (batch 1, `past` tokens; None: empty) with `ids` appended."""
        import copy

        import torch

        kv = copy.deepcopy(cache) if cache is not None else None
        with torch.inference_mode():
            out = self.model.get_decoder()(input_ids=torch.tensor([ids]), past_key_values=kv, use_cache=True,
                                           attention_mask=torch.ones(1, past + len(ids), dtype=torch.long))
        return out.past_key_values

    def _last_logits(self, suffixes: list[list[int]], cache) -> object:
        """Logits at each row's last real token: (batch, vocab). Rows right-padded after the cached prefix:
        padding after a row's last real token cannot change that token's logits under causal attention."""
        import copy

        import torch

        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        width = max(map(len, suffixes))
        past = cache.get_seq_length() if cache is not None else 0
        ids = torch.tensor([s + [pad] * (width - len(s)) for s in suffixes])  # (batch, width)
        mask = torch.tensor([[1] * (past + len(s)) + [0] * (width - len(s)) for s in suffixes])  # (batch, past+width)
        kwargs = {}
        if cache is not None:
            kv = copy.deepcopy(cache)
            kv.batch_repeat_interleave(len(suffixes))
            kwargs = {"past_key_values": kv, "use_cache": True}
        with torch.inference_mode():
            # The decoder alone, then the LM head only at the positions we read (151k-word vocabulary).
            hidden = self.model.get_decoder()(input_ids=ids, attention_mask=mask, **kwargs).last_hidden_state
            last = hidden[torch.arange(len(suffixes)), torch.tensor([len(s) - 1 for s in suffixes])]  # (batch, h)
            return self.model.get_output_embeddings()(last).float()  # (batch, vocab)

    def judge_many(self, items: list[tuple[str, str, str]], levels: int = 2, batch_size: int = 8,
                   prefix_cache: bool = True) -> list[Verdict]:
        """Verdicts for (question, golden answer text, prediction) triples. Identical triples are judged once.

        With `prefix_cache`, prompts are computed on top of cached prefixes at two levels: the system prompt
        and instruction every judge prompt shares (~80 of ~150 tokens), and, for answers to the same question
        (a store holds every variant's answer in every setting: ~5-18 per question), the question and gold
        answer they share; only each answer's own tokens are computed per verdict. Rows are sorted by length
        and batched (little padding)."""
        if levels == 3 and not self.ids["partially"]:
            return [Verdict(None, error=f"judge {self.name} has no token for Partially") for _ in items]
        return self.score_many(items, _JUDGE_RENDER[levels], tuple(LEVELS[levels]), batch_size, prefix_cache)

    def score_many(self, items: list[tuple[str, str, str]], render: Render, words: tuple[str, ...] = ("yes", "no"),
                   batch_size: int = 8, prefix_cache: bool = True) -> list[Verdict]:
        """First-token verdicts on `words` for any prompt made of three fields: `render(item)` gives the chat
        messages. Items that share their first two fields are computed on one cached prefix (the judge: question
        and gold answer; the claim checker: passage and question), so `render` must place them first."""
        import torch

        unique = list(dict.fromkeys(items))
        prefix, cache = self._shared_prefix(render) if prefix_cache else ([], None)
        by_group: dict[tuple[str, str], list[tuple[tuple, list[int]]]] = {}
        alone = []  # (item, ids) computed from scratch: no cache, or a prompt that does not start with it
        for item in unique:
            ids = self._ids(render(item))
            if prefix and ids[: len(prefix)] == prefix:
                by_group.setdefault(item[:2], []).append((item, ids))
            else:
                alone.append((item, ids))
        batches: list[tuple[list[tuple[tuple, list[int]]], object]] = []  # (item, uncached ids), their cache
        singles = []
        for (first, second), members in by_group.items():
            grouped = self._common_prefix(self._ids(render((first, second, "a"))),
                                          self._ids(render((first, second, "x y"))))
            fits = [m for m in members if m[1][: len(grouped)] == grouped]
            if len(fits) < 2 or len(grouped) <= len(prefix):
                singles += [(item, ids[len(prefix):]) for item, ids in members]
                continue
            singles += [(item, ids[len(prefix):]) for item, ids in members if (item, ids) not in fits]
            kv = self._extend(cache, grouped[len(prefix):], len(prefix))  # the shared two fields, once per group
            fits.sort(key=lambda m: len(m[1]))
            batches += [([(item, ids[len(grouped):]) for item, ids in fits[at: at + batch_size]], kv)
                        for at in range(0, len(fits), batch_size)]
        for rows, kv in ((singles, cache), (alone, None)):
            rows.sort(key=lambda r: len(r[1]))
            batches += [(rows[at: at + batch_size], kv) for at in range(0, len(rows), batch_size)]
        verdicts: dict[tuple, Verdict] = {}
        for rows, kv in batches:
            probs = torch.softmax(self._last_logits([ids for _, ids in rows], kv), dim=-1)  # (batch, vocab)
            for (item, _), row in zip(rows, probs, strict=True):
                verdicts[item] = score_mass({w: float(row[self.ids[w]].sum()) for w in words})
        return [verdicts[item] for item in items]

    def judge(self, question: str, answer: str, prediction: str, levels: int = 2) -> Verdict:
        return self.judge_many([(question, answer, prediction)], levels)[0]


class OpenAIJudge(ChatEndpoint):
    """First-token Yes/No probabilities from the endpoint's top logprobs."""

    weak = False
    levels = (2, 3)

    @property
    def fingerprint(self) -> str:  # what the server serves under that name is the server's business
        return f"openai:{self.model}@{self.base_url}"

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

    def judge(self, question: str, answer: str, prediction: str, levels: int = 2) -> Verdict:
        return self.judge_many([(question, answer, prediction)], levels)[0]

    def judge_many(self, items: list[tuple[str, str, str]], levels: int = 2, **_) -> list[Verdict]:
        return self.score_many(items, _JUDGE_RENDER[levels], tuple(LEVELS[levels]))

    def score_many(self, items: list[tuple[str, str, str]], render: Render, words: tuple[str, ...] = ("yes", "no"),
                   **_) -> list[Verdict]:
        """First-token verdicts on `words` for prompts `render(item)`, one request per distinct item."""
        def one(item: tuple[str, str, str]) -> Verdict:
            try:
                return score_mass(self._first_token_mass(render(item), words))
            except (EndpointError, KeyError, IndexError, TypeError, ValueError) as err:
                return Verdict(None, error=f"judge {err}")

        verdicts = {item: one(item) for item in dict.fromkeys(items)}
        return [verdicts[item] for item in items]


# ------------------------------------------------------------------------------------------------ registry


@dataclass(frozen=True)
class JudgeSpec:
    label: str
    folder: Callable[[], Path]  # the local safetensors folder (converted on first use)
    fingerprint: Callable[[], str]
    weak: bool  # shown as a stand-in wherever its scores appear
    rank: int  # preference when no judge is chosen and no validity can be measured: lower first


def _qwen_folder() -> Path:
    from mdrag.generation.split_gguf import QWEN_JUDGE

    return QWEN_JUDGE.converted_dir()


def _smollm_folder() -> Path:
    from mdrag.generation.model import converted_generator_dir

    return converted_generator_dir()


def _qwen_fingerprint() -> str:
    from mdrag.generation.split_gguf import QWEN_JUDGE

    return f"{QWEN_JUDGE.name}-q4km-{QWEN_JUDGE.sha256[:12]}"  # the checked GGUF it was converted from


JUDGES: dict[str, JudgeSpec] = {
    "qwen2.5-coder-1.5b": JudgeSpec("Qwen2.5-Coder-1.5B-Instruct (packaged judge)", _qwen_folder,
                                    _qwen_fingerprint, weak=False, rank=0),
    "smollm2-135m": JudgeSpec("SmolLM2-135M-Instruct (135M stand-in, at chance against Match)", _smollm_folder,
                              lambda: _smollm_folder().name, weak=True, rank=9),
}
DEFAULT_JUDGE = "qwen2.5-coder-1.5b"


def get_judge(spec: str | None = None, dtype: str | None = None) -> HFJudge | OpenAIJudge:
    """A judge from its registry name, `hf:DIR`, or `openai:MODEL@URL`; None or 'default': DEFAULT_JUDGE."""
    spec = DEFAULT_JUDGE if spec in (None, "", "default") else spec
    if spec.startswith("openai:"):
        model, sep, url = spec[len("openai:"):].partition("@")
        if not (model and sep and url):
            raise MdragError(f"Judge '{spec}': write openai:MODEL@BASE_URL, e.g. "
                             "openai:Qwen2.5-7B-Instruct@http://127.0.0.1:8000/v1")
        return OpenAIJudge(model, url)
    if spec.startswith("hf:"):
        from mdrag.generation.model import resolve_generator_dir
        from mdrag.hashing import folder_fingerprint

        folder = resolve_generator_dir(spec[3:])
        return HFJudge(folder, f"hf:{folder.name}", f"hf:{folder.name}-{folder_fingerprint(folder)}",
                       weak="135m" in folder.name.lower(), dtype=dtype)
    if spec not in JUDGES:
        raise UnknownNameError(f"Unknown judge '{spec}'. Known: {', '.join(JUDGES)}, hf:DIR, openai:MODEL@URL")
    entry = JUDGES[spec]
    return HFJudge(entry.folder(), entry.label, entry.fingerprint(), weak=entry.weak, dtype=dtype)


def shared_judge(engine: Engine, spec: str | None = None) -> HFJudge | OpenAIJudge:
    """The judge `spec` in the engine's generation dtype, loaded once per engine and shared read-only by its
    sessions and sections (engine.release('judge') lets it go)."""
    dtype = engine.settings.dtype
    name = DEFAULT_JUDGE if spec in (None, "", "default") else spec  # one copy whatever names the default
    return engine.share(("judge", name, dtype), lambda: get_judge(name, dtype))


def verdict_rows(judge, answers: list[dict], verdicts: list[Verdict], levels: int, seconds: float) -> list[dict]:
    """Store rows (ResultsStore.put_verdicts) for `answers` (dicts with answer_id) judged at `levels`;
    `seconds`: judging time per verdict."""
    return [{"answer_id": a["answer_id"], "judge": judge.fingerprint, "judge_name": judge.name,
             "prompt_version": PROMPT_VERSION, "levels": levels, "score": v.score, "p_yes": v.p_yes, "p_no": v.p_no,
             "p_partially": v.p_partially, "mass": v.mass, "error": v.error, "seconds": seconds,
             "created": time.time()} for a, v in zip(answers, verdicts, strict=True)]
