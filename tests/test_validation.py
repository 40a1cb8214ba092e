import pytest

from mdrag.errors import InvalidQueryError
from mdrag.validation import clean_query


@pytest.mark.parametrize("bad,match", [
    ("", "empty"), ("   \n\t ", "empty"), ("\x00\x01", "empty"),
    ("x" * 2001, "limit is 2,000"), (b"caf\xe9", "not valid UTF-8"), ("a\udc80b", "invalid Unicode"),
    (42, "must be text"),
])
def test_bad_queries_get_clear_errors(bad, match):
    with pytest.raises(InvalidQueryError, match=match):
        clean_query(bad)


@pytest.mark.parametrize("raw,clean", [
    ("  who got the first nobel prize  ", "who got the first nobel prize"),
    ("tab\tand\x07bell", "tab and bell"),
    ("<script>alert(1)</script> what?", "<script>alert(1)</script> what?"),  # stored verbatim
    ("café".encode(), "café"),
    ("x" * 2000, "x" * 2000),
])
def test_good_queries_are_kept(raw, clean):
    assert clean_query(raw) == clean


def test_limit_is_configurable():
    with pytest.raises(InvalidQueryError):
        clean_query("abcdef", max_chars=5)
