"""Word-window chunking as in the paper: 100 words with 20 words of overlap for long documents.

Chunks keep character offsets into the source document, so a gold passage can be found as the chunk
that contains an answer span given by character offset (CovidQA `answer_start`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_WORD = re.compile(r"\S+")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=\S)")


def sentences(text: str) -> list[tuple[int, int]]:
    """Char ranges of the sentences of a text (split after . ! ? followed by space): the sources of sentence
    ablation and the claims of the groundedness checker."""
    bounds, at = [], 0
    for match in SENTENCE_END.finditer(text):
        bounds.append((at, match.start()))
        at = match.end()
    bounds.append((at, len(text)))
    return [(s, e) for s, e in bounds if e > s]


@dataclass(frozen=True)
class Chunk:
    text: str  # the chunk's words joined by single spaces
    start: int  # character offset of its first word in the document
    end: int  # character offset just past its last word


def chunk_words(text: str, size: int = 100, overlap: int = 20, keep_under: int = 120) -> list[Chunk]:
    """Split `text` into windows of `size` words that overlap by `overlap` words.

    A document of at most `keep_under` words stays whole: cutting a 110-word passage into 100 + 30 words
    only makes a fragment. Any answer of at most `overlap` words lies wholly inside at least one chunk.
    """
    if not 0 <= overlap < size:
        raise ValueError(f"need 0 <= overlap < size, got overlap={overlap}, size={size}")
    words = [(m.group(), m.start(), m.end()) for m in _WORD.finditer(text)]
    if not words:
        return []
    if len(words) <= max(size, keep_under):
        return [Chunk(" ".join(w for w, _, _ in words), words[0][1], words[-1][2])]
    step = size - overlap
    chunks = []
    for first in range(0, len(words), step):
        window = words[first : first + size]
        chunks.append(Chunk(" ".join(w for w, _, _ in window), window[0][1], window[-1][2]))
        if first + size >= len(words):
            break
    return chunks


def normalise_space(text: str) -> str:
    return " ".join(text.split())
