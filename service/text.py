"""How text a client sent (a category, a filename, a form field, a header) appears in messages and logs: quoted,
and cut to a bound, so a 60 000-character field cannot blow up a problem detail or a log line."""

from __future__ import annotations

SHOWN_CHARS = 80
"""Characters of a user-provided string shown in a message; the rest is replaced by an ellipsis and the length."""
LOGGED_CHARS = 300
"""Characters of a request path (with its query) kept in a log line."""


def cut(text: str, limit: int = LOGGED_CHARS) -> str:
    """``text``, or its first ``limit`` characters, an ellipsis and its full length."""
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


def shown(value: object, limit: int = SHOWN_CHARS) -> str:
    """``repr`` of ``value``, cut to ``limit`` characters with an ellipsis and its full length when longer.

    >>> shown("x" * 100, limit=3)
    "'xxx…' (100 characters)"
    """
    text = str(value)
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit] + '…'!r} ({len(text)} characters)"
