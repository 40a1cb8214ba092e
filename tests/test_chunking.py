import itertools

import pytest

from mdrag.data.chunking import chunk_words, normalise_space
from mdrag.data.sources import gold_chunks_for_span


def _doc(n: int) -> str:
    return "  ".join(f"w{i}" for i in range(n))  # double spaces: chunk text must still be single-spaced


@pytest.mark.parametrize("n_words", [0, 1, 50, 100, 120])
def test_short_documents_stay_whole(n_words):
    chunks = chunk_words(_doc(n_words))
    assert len(chunks) == (1 if n_words else 0)
    if n_words:
        assert chunks[0].text == normalise_space(_doc(n_words))


@pytest.mark.parametrize("n_words", [121, 180, 181, 1000, 4659])
def test_windows_are_100_words_with_20_overlap_and_cover_everything(n_words):
    text = _doc(n_words)
    chunks = chunk_words(text)
    words = [c.text.split() for c in chunks]
    assert all(len(w) == 100 for w in words[:-1]) and 0 < len(words[-1]) <= 100
    for a, b in itertools.pairwise(words):
        assert a[-20:] == b[:20]  # consecutive windows share exactly 20 words
    covered = {w for ws in words for w in ws}
    assert covered == set(text.split())
    for c in chunks:  # offsets point at the chunk's words in the source
        assert normalise_space(text[c.start : c.end]) == c.text


@pytest.mark.parametrize("span_words", [1, 5, 20])
def test_any_answer_up_to_the_overlap_lies_whole_in_a_chunk(span_words):
    text = _doc(700)
    chunks = chunk_words(text)
    for first in range(0, 700 - span_words, 7):
        answer = " ".join(f"w{i}" for i in range(first, first + span_words))
        start = text.index(f"w{first}  ") if first + span_words < 700 else text.index(f"w{first}")
        end = start + len(answer.replace(" ", "  "))
        gold = gold_chunks_for_span(chunks, start, end)
        assert gold and all(answer in chunks[k].text for k in gold)


def test_long_answer_spanning_chunks_marks_every_overlapping_chunk():
    text = _doc(400)
    chunks = chunk_words(text)
    start, end = text.index("w70 "), text.index("w130 ") + 4  # 61 words: no chunk holds it whole
    gold = gold_chunks_for_span(chunks, start, end)
    assert len(gold) >= 2
    joined = " ".join(chunks[k].text for k in gold)
    assert "w70" in joined and "w130" in joined


def test_bad_window_parameters_are_rejected():
    with pytest.raises(ValueError):
        chunk_words("a b c", size=10, overlap=10)
