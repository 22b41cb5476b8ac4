"""PostgreSQL COPY text format: one row per line, tab-separated, ``\\N`` is NULL.

Transforms work on the escaped bytes of a field, so the same value hashes the
same in every table and type, and untouched fields are never decoded.
"""

from __future__ import annotations

import functools
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


# PostgreSQL array text (array_out), the second level of escaping inside a COPY field: optional
# dimension bounds ("[0:1]="), braces, elements separated by the element type's delimiter, each
# bare or double-quoted with backslash escapes; a bare NULL is an SQL NULL, a quoted "NULL" the string.
_DIMS = re.compile(r"(?:\[-?\d+:-?\d+\])+=")
_ARRAY_SPACE = " \t\n\r\v\f"  # what array_in skips and array_out therefore quotes
_QUOTED_CHAR = re.compile(r"\\(.)", re.S)
_OPEN, _CLOSE, _DELIMITER, _QUOTED, _BARE = 1, 2, 3, 4, 5  # the groups of _array_token
_ITEM = (_QUOTED, _BARE)
_MAY_FOLLOW = {_OPEN: {_OPEN, _CLOSE, *_ITEM}, _DELIMITER: {_OPEN, *_ITEM}, _BARE: {_CLOSE, _DELIMITER},
               _CLOSE: {_CLOSE, _DELIMITER}}


@functools.lru_cache(maxsize=8)
def _array_token(delimiter: str) -> re.Pattern:
    d = re.escape(delimiter)
    return re.compile(rf'(\{{)|(\}})|({d})|"((?:[^"\\]|\\.)*)"|([^{{}}"\\{d}{_ARRAY_SPACE}]+)', re.S)


def array_items(text: str, delimiter: str = ",") -> list[tuple[int, int, str | None]]:
    """Every element of an array's text: (start, end, value), value None for an SQL NULL. Everything
    between elements (bounds, braces, delimiters) is structure, kept by whoever splices the text.
    Raises ValueError on text array_out would not write, rather than guess where elements are."""
    token = _array_token(delimiter)
    pos = m.end() if (m := _DIMS.match(text)) else 0
    items: list[tuple[int, int, str | None]] = []
    depth, prev = 0, _OPEN  # at the start, as after a '{': a '{' may come
    while pos < len(text) and (depth or prev == _OPEN):
        m = token.match(text, pos)
        kind = m.lastindex if m else None
        if kind not in _MAY_FOLLOW[prev] or (kind != _OPEN and not depth):
            raise ValueError(f"unexpected text at offset {pos}")
        pos = m.end()
        depth += {_OPEN: 1, _CLOSE: -1}.get(kind, 0)
        if kind in _ITEM:
            value = m[_BARE] if kind == _BARE else _QUOTED_CHAR.sub(r"\1", m[_QUOTED])
            items.append((m.start(), pos, None if kind == _BARE and value.upper() == "NULL" else value))
        prev = _BARE if kind in _ITEM else kind
    if depth or pos != len(text) or prev != _CLOSE:
        raise ValueError("unbalanced braces or text after the array")
    return items


def array_item(value: str | None, delimiter: str = ",") -> str:
    """One element as array_out writes it: bare where it can be, else quoted with \\ before " and \\."""
    if value is None:
        return "NULL"
    if value and value.upper() != "NULL" and not any(c in value for c in f'{{}}"\\{delimiter}{_ARRAY_SPACE}'):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
