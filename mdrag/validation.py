"""Query validation: clear errors for bad input, nothing silently changed except control characters.

HTML or script text is NOT altered here: a query is data, stored verbatim and escaped wherever it is
rendered. Control characters (other than tab and newline) are removed because they break tokenisers
and terminals and carry no meaning in a question.
"""

from __future__ import annotations

import re
import unicodedata

from mdrag.config import LIMITS
from mdrag.errors import InvalidQueryError

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def clean_query(query: str | bytes, max_chars: int | None = None) -> str:
    """Return the query ready for retrieval, or raise InvalidQueryError saying what is wrong.

    Policy for long queries: rejected, not truncated, above `max_chars` (MDRAG_MAX_QUERY_CHARS,
    default 2,000): cutting a question silently changes what is asked.
    """
    limit = max_chars if max_chars is not None else LIMITS.max_query_chars
    if isinstance(query, bytes):
        try:
            query = query.decode("utf-8")
        except UnicodeDecodeError as err:
            raise InvalidQueryError(f"The query is not valid UTF-8 (byte {err.start}). Send UTF-8 text.") from err
    if not isinstance(query, str):
        raise InvalidQueryError(f"The query must be text, got {type(query).__name__}.")
    if any(0xD800 <= ord(c) <= 0xDFFF for c in query):  # lone surrogates: invalid UTF-8 smuggled in a str
        raise InvalidQueryError("The query contains invalid Unicode (lone surrogate characters).")
    text = unicodedata.normalize("NFC", _CONTROL.sub(" ", query)).strip()
    text = re.sub(r"[ \t]+", " ", text)
    if not text:
        raise InvalidQueryError("The query is empty. Type a question.")
    if len(text) > limit:
        raise InvalidQueryError(
            f"The query has {len(text):,} characters; the limit is {limit:,} (set MDRAG_MAX_QUERY_CHARS "
            "to change it). Shorten the question."
        )
    return text
