"""Sources and targets of sentence-level context attribution (#25).

A *source* is one sentence of one prompt passage: every passage of the prompt is split by
`mdrag.data.chunking.sentences`, so a 5-passage prompt has ~15-40 sources. A *target* is the span of the answer
being explained: the whole answer, each of its sentences, or a token range a user picks. Targets are token
ranges of the variant's answer; the log-probability of a target is read teacher-forced after the prompt and the
answer tokens before it (ContextCite attributes a selected response span the same way).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mdrag.data.chunking import sentences
from mdrag.trace import RagTrace


@dataclass(frozen=True)
class Source:
    passage: int  # 1-based prompt position of its passage
    index: int  # 0-based sentence number inside the passage
    char_start: int  # in trace.prompt
    char_end: int
    text: str

    @property
    def name(self) -> str:
        return f"passage_{self.passage}.s{self.index + 1}"


@dataclass(frozen=True)
class Target:
    lo: int  # first answer token (inclusive)
    hi: int  # last answer token (exclusive)
    text: str
    name: str  # "answer" or "sentence 1", ... or "tokens lo..hi"


def prompt_sources(trace: RagTrace) -> list[Source]:
    """Every sentence of every passage, in prompt order."""
    out = []
    passages = [s for s in trace.spans if s.kind == "passage"]
    for number, span in enumerate(passages, start=1):
        text = trace.prompt[span.char_start: span.char_end]
        for i, (s, e) in enumerate(sentences(text)):
            out.append(Source(number, i, span.char_start + s, span.char_start + e, text[s:e]))
    return out


def source_owner(trace: RagTrace, sources: list[Source], tokenizer) -> np.ndarray:
    """(prompt tokens,) index of the source each prompt token belongs to, -1 outside every source. A token
    belongs to the source holding its last character (the rule `build_prompt` uses for segments)."""
    enc = tokenizer(trace.prompt, add_special_tokens=False, return_offsets_mapping=True)
    if list(enc["input_ids"]) != list(trace.prompt_ids):
        raise ValueError("The prompt does not tokenise to the trace's prompt ids; cannot place its sentences")
    owner = np.full(len(trace.prompt_ids), -1, dtype=np.int64)
    starts = np.array([s.char_start for s in sources])
    ends = np.array([s.char_end for s in sources])
    for t, (s, e) in enumerate(enc["offset_mapping"]):
        if e > s:
            hit = np.nonzero((starts <= e - 1) & (e - 1 < ends))[0]
            if hit.size:
                owner[t] = hit[0]
    return owner


def answer_targets(answer_ids: list[int], tokenizer, span: tuple[int, int] | None = None) -> list[Target]:
    """The whole answer first, then each of its sentences when it has more than one (token ranges found by
    decoding prefixes, so they follow the generated tokens exactly); or only the token range `span`."""
    n = len(answer_ids)
    if n == 0:
        raise ValueError("The answer is empty: nothing to attribute")
    if span is not None:
        lo, hi = span
        if not 0 <= lo < hi <= n:
            raise ValueError(f"Token range {lo}..{hi} is outside the answer (0..{n})")
        return [Target(lo, hi, tokenizer.decode(answer_ids[lo:hi]), f"tokens {lo}..{hi}")]
    text = tokenizer.decode(answer_ids)
    ends = [len(tokenizer.decode(answer_ids[: i + 1])) for i in range(n)]  # chars decoded after token i
    targets = [Target(0, n, text, "answer")]
    parts = sentences(text)
    if len(parts) > 1:
        lo = 0
        for k, (_, e) in enumerate(parts):
            hi = next((i + 1 for i, c in enumerate(ends) if c >= e), n) if k < len(parts) - 1 else n
            if hi > lo:
                targets.append(Target(lo, hi, tokenizer.decode(answer_ids[lo:hi]).strip(), f"sentence {k + 1}"))
                lo = hi
    return targets
