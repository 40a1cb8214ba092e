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


@pytest.mark.parametrize("flags, native", [("fpu sse avx avx2 fma", False),
                                           ("fpu avx2 avx512f avx512_bf16 avx512_vnni", True),
                                           ("fpu avx2 amx_bf16 amx_tile", True)])
def test_bf16_is_native_only_where_the_cpu_says_so(tmp_path, flags, native):
    from mdrag.config import native_bf16

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n")
    assert native_bf16(cpuinfo) is native
    assert native_bf16(tmp_path / "missing") is False  # not Linux: unknown means no


@pytest.mark.parametrize("requested, native, dtype", [(None, True, "bfloat16"), (None, False, "float32"),
                                                      ("float32", True, "float32"), ("bfloat16", False, "bfloat16"),
                                                      ("", False, "float32")])
def test_generation_dtype_follows_the_cpu_unless_asked(requested, native, dtype):
    from mdrag.config import generation_dtype

    assert generation_dtype(requested, native=native) == dtype


def test_an_unknown_dtype_is_refused_with_the_known_ones():
    from mdrag.config import generation_dtype
    from mdrag.errors import MdragError

    with pytest.raises(MdragError, match="bfloat16"):
        generation_dtype("fp8")


def test_errors_keep_their_cause(tmp_path):
    """A clear message for the user, and the underlying error chained for whoever debugs it."""
    from mdrag.generation.adapters import AdapterError, read_card

    with pytest.raises(InvalidQueryError) as err:
        clean_query(b"caf\xe9")
    assert isinstance(err.value.__cause__, UnicodeDecodeError)
    (tmp_path / "card.json").write_text("{not json")
    with pytest.raises(AdapterError, match="not valid JSON") as err:
        read_card(tmp_path)
    assert err.value.__cause__ is not None
