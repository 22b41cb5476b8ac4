"""How prodclone marks what it creates, and the databases it never touches.

A marked object's comment reads ``managed-by=prodclone; role=<role>; k=v; ...``
(values percent-encoded); a Kubernetes object carries the label
``app.kubernetes.io/managed-by=prodclone``. Teardown, prune and seed act only on objects whose
parsed mark says exactly what they expect: a substring match is not enough.
"""

from __future__ import annotations

from urllib.parse import quote, unquote

MARKER = "managed-by=prodclone"
K8S_LABEL = ("app.kubernetes.io/managed-by", "prodclone")  # the velero driver's mark: (key, value)
ADMIN_DB = "postgres"
SYSTEM_DBS = (ADMIN_DB, "template0", "template1")
MAX_IDENT_BYTES = 63  # Postgres truncates longer names (NAMEDATALEN - 1)


def format_marker(**tags: str) -> str:
    """``managed-by=prodclone; role=base; base=shop`` for format_marker(role="base", base="shop")."""
    return "; ".join([MARKER, *(f"{k}={quote(str(v), safe='')}" for k, v in tags.items())])


def parse_marker(comment: str | None) -> dict[str, str] | None:
    """The tags of a prodclone mark, or None if ``comment`` is not one (it must start with the marker)."""
    if not comment:
        return None
    parts = [p.strip() for p in comment.split(";")]
    if parts[0] != MARKER:
        return None
    tags = {}
    for part in parts[1:]:
        key, sep, value = part.partition("=")
        if not sep or not key or key in tags:
            return None
        tags[key] = unquote(value)
    return tags


def marked_as(comment: str | None, **expected: str) -> bool:
    """Whether ``comment`` is a prodclone mark carrying every ``expected`` tag with exactly that value."""
    tags = parse_marker(comment)
    return tags is not None and all(tags.get(k) == v for k, v in expected.items())


def ident_fits(name: str, suffix: str = "") -> bool:
    """Whether ``name + suffix`` stays within Postgres's 63-byte identifier limit (bytes, not characters)."""
    return len((name + suffix).encode()) <= MAX_IDENT_BYTES
