"""The groundedness checker's fact check: which numbers and names of a claim a passage lacks."""

from __future__ import annotations

import pytest

from mdrag.evaluation.facts import claim_facts, missing_facts

PASSAGE = ("Heard It Through the Grapevine. The first recording was produced by Whitfield for Gladys Knight & the "
           "Pips and released as a single in September 1967; it sold 2,500,000 copies and reached number two.")


@pytest.mark.parametrize("claim,missing", [
    # copied from the passage: nothing missing
    ("The first recording was produced by Whitfield for Gladys Knight & the Pips.", []),
    ("It was released in September 1967.", []),
    # a name swapped in: the new name is missing
    ("The first recording was produced by Whitfield for Gladys Crepuscular & the Pips.", ["Crepuscular"]),
    # a number swapped in, or formatted differently (thousands separators, a zero decimal part)
    ("It was released in September 1968.", ["1968"]),
    ("It sold 2500000 copies.", []),
    ("It reached number 2.0 on the chart.", []),  # the passage's "two" is the number 2
    ("It reached number 3.", ["3"]),
    # a name inside brackets is still a name; a sentence's capitalised first word is not one
    ("It was produced by Whitfield (Holland).", ["Holland"]),
    ("Released in 1967 it was.", []),
    # a short answer may be a name, first word included
    ("Gladys Knight", []),
    ("Marvin Gaye", ["Marvin", "Gaye"]),
    # the prompt's own labels are not facts
    ("According to Document 3, it was released in 1967.", []),
    # words of the question count as given
    ("Motown released it.", []),
])
def test_the_fact_check_finds_exactly_the_numbers_and_names_a_passage_lacks(claim, missing):
    assert missing_facts(claim, PASSAGE, question="Which Motown single was released in 1967?") == missing


def test_claim_facts_lists_each_number_and_name_once_in_order():
    assert claim_facts("In 1967 Gladys Knight sang; in 1,967 rooms Knight and Pips. 1967.") == (
        ["1967"], ["Gladys", "Knight", "Pips"])
