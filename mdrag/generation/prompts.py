"""The paper's prompt (BERGEN "basic") and the span map that says which tokens hold what.

The span map records, for each segment (instruction, each passage's text, the question), its
character range in the rendered chat prompt and its token range [start, end). A token belongs to the
segment holding its last character: BPE pieces carry their leading space ("ĠThe"), so the first word
of a passage belongs to the passage, while the "Document i: " label and chat markers stay outside.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

SYSTEM_PROMPT = (
    "You are a helpful assistant. Your task is to extract relevant information from provided documents "
    "and to answer to questions as briefly as possible."
)
USER_TEMPLATE = "Background:\n{docs}\n\nQuestion: {question}"
DOC_TEMPLATE = "Document {i}: {text}\n"


@dataclass
class Span:
    name: str  # instruction | passage_1..k | question | answer
    kind: str  # instruction | passage | question | answer
    start: int  # first token (inclusive)
    end: int  # last token (exclusive)
    char_start: int = -1  # in the rendered prompt; -1 for generated tokens
    char_end: int = -1

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class BuiltPrompt:
    text: str  # the exact rendered chat prompt fed to the model
    input_ids: list[int]
    spans: list[Span]


def user_message(question: str, passages: list[str]) -> tuple[str, list[tuple[str, str, int, int]]]:
    """The user turn and each segment's (name, kind, start, end) char range inside it."""
    docs, segments, offset = [], [], len("Background:\n")
    for i, text in enumerate(passages, 1):
        line = DOC_TEMPLATE.format(i=i, text=text)
        start = offset + len(f"Document {i}: ")
        segments.append((f"passage_{i}", "passage", start, start + len(text)))
        docs.append(line)
        offset += len(line)
    message = USER_TEMPLATE.format(docs="".join(docs), question=question)
    q_start = len(message) - len(question)
    segments.append(("question", "question", q_start, len(message)))
    return message, segments


def build_prompt(tokenizer, question: str, passages: list[str]) -> BuiltPrompt:
    """Render the chat prompt (system + user, generation prompt added) and map segments to tokens."""
    user, user_segments = user_message(question, passages)
    messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    sys_at = text.find(SYSTEM_PROMPT)
    user_at = text.find(user, sys_at + len(SYSTEM_PROMPT))
    if sys_at < 0 or user_at < 0:
        raise ValueError("the chat template altered the prompt text; cannot build the span map")
    char_segments = [("instruction", "instruction", sys_at, sys_at + len(SYSTEM_PROMPT))]
    char_segments += [(n, k, user_at + s, user_at + e) for n, k, s, e in user_segments]
    # The rendered text already holds the template's special tokens; BOS (if any) is in the template.
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    spans = []
    for name, kind, cs, ce in char_segments:
        inside = [t for t, (s, e) in enumerate(offsets) if e > s and cs <= e - 1 < ce]
        start, end = (inside[0], inside[-1] + 1) if inside else (0, 0)
        spans.append(Span(name, kind, start, end, cs, ce))
    return BuiltPrompt(text, list(ids), spans)
