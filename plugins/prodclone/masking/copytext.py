"""PostgreSQL COPY text format: one row per line, tab-separated, ``\\N`` is NULL.

Transforms work on the escaped bytes of a field, so the same value hashes the
same in every table and type, and untouched fields are never decoded.
"""

from __future__ import annotations

import re

NULL = b"\\N"

_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\"}
_UNESCAPE_RE = re.compile(r"\\(x[0-9a-fA-F]{1,2}|[0-7]{1,3}|.)")
_ESCAPE_TABLE = str.maketrans(
    {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\b": "\\b", "\f": "\\f", "\v": "\\v"}
)


def _unescape_one(m: re.Match) -> str:
    s = m.group(1)
    if s in _ESCAPES:
        return _ESCAPES[s]
    if s[0] == "x" and len(s) > 1:
        return chr(int(s[1:], 16))
    if s[0] in "01234567":
        return chr(int(s, 8))
    return s


def decode(field: bytes) -> str:
    """A COPY field (not NULL) as the value's text."""
    text = field.decode()
    return _UNESCAPE_RE.sub(_unescape_one, text) if "\\" in text else text


def encode(value: str) -> bytes:
    """A value's text as a COPY field."""
    return value.translate(_ESCAPE_TABLE).encode()
