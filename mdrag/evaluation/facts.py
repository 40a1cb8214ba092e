"""The facts a claim states that a checker must find in a passage: its numbers and its names.

Why (#24): the packaged 1.5B checker reads a sentence copied from the gold passage with one name or number
swapped as supported about as often as not (stored validation, entail-v1: 12 of 20 swapped claims right). A
claim whose number or name appears nowhere in the passage (nor in the question it answers) cannot be supported
by that passage, whatever the judge's first token says; FactCC- and SummaC-style checkers use the same entity
and number consistency test. The test is lexical and one-sided: it only ever withdraws support, never grants it.

Names: capitalised words of three letters or more that do not start a sentence (a sentence's first word is
capitalised whatever it is), and the first word of a claim of four words or fewer (a short answer may be one
name). Numbers: digit runs with their decimal part, thousands separators dropped ("1,000" = "1000"); a passage's
number words up to twenty count as their digits. References to the prompt's own scaffolding ("Document 2") are
not facts.
"""

from __future__ import annotations

import re

_WORD = re.compile(r"[^\W\d_]+")  # letters only, any script ("Josipović")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_SENTENCE_START = re.compile(r"(?:^|[.!?:;]\s*)$")  # what may precede a sentence's first word
_SCAFFOLD = re.compile(r"\b(?:Documents?|Passages?|Doc)\s*\d*", re.IGNORECASE)  # the prompt's own labels
SHORT_CLAIM = 4  # a claim of at most this many words may be one name, its first word included
_NUMBER_WORDS = {w: str(i) for i, w in enumerate(
    ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
     "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty"])}


def _number(text: str) -> str:
    """A number as compared: separators dropped, a zero decimal part dropped ("2.0" = "2")."""
    digits = text.replace(",", "")
    return digits.split(".")[0] if re.fullmatch(r"\d+\.0+", digits) else digits


def claim_facts(claim: str) -> tuple[list[str], list[str]]:
    """(numbers, names) the claim states, in order, each once."""
    text = _SCAFFOLD.sub(" ", claim)
    numbers = list(dict.fromkeys(_number(m.group()) for m in _NUMBER.finditer(text)))
    short = len(text.split()) <= SHORT_CLAIM
    names = [m.group() for m in _WORD.finditer(text) if len(m.group()) >= 3 and m.group()[0].isupper()
             and (short or not _SENTENCE_START.search(text[: m.start()]))]
    return numbers, list(dict.fromkeys(names))


def context_facts(*texts: str) -> tuple[set[str], set[str]]:
    """(numbers, lower-cased words) of the texts a claim may draw on: a passage and the question."""
    joined = " ".join(texts)
    numbers = {_number(m.group()) for m in _NUMBER.finditer(joined)}
    words = {w.lower() for w in _WORD.findall(joined)}
    numbers |= {_NUMBER_WORDS[w] for w in words if w in _NUMBER_WORDS}
    return numbers, words


def missing_facts(claim: str, passage: str, question: str = "",
                  context: tuple[set[str], set[str]] | None = None) -> list[str]:
    """The claim's numbers and names found in neither the passage nor the question (empty: nothing missing).
    `context`: context_facts(passage, question) when the caller checks many claims against one passage."""
    numbers, words = context or context_facts(passage, question)
    said_numbers, said_names = claim_facts(claim)
    return [n for n in said_numbers if n not in numbers] + [n for n in said_names if n.lower() not in words]
