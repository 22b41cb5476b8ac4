"""What a transform emits, as `rules check` compares it with a column: the types its
values load into, and their longest length. Shared by the transforms that declare it."""

from __future__ import annotations

import datetime as dt
import ipaddress
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

TEXT = "text"  # any text type (text, varchar(n), char(n), citext, name), within its length
INTEGER_RANGES = {"smallint": 2**15 - 1, "integer": 2**31 - 1, "bigint": 2**63 - 1}
FLOATING = frozenset({"numeric", "real", "double precision"})  # take any integer's text
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)
_INT = re.compile(r"-?[0-9]+")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_TIMESTAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?([+-][0-9]{2}:[0-9]{2})?")
_TIMESTAMPS = frozenset({"timestamp without time zone", "timestamp with time zone"})


@dataclass(frozen=True)
class Output:
    """``types``: the column base types (as format_type names them) its values load into, TEXT for any
    text type; None: the input's own type, fitting wherever the input did. ``max_length``: the longest
    value in characters; None: never longer than its input; math.inf: no bound."""

    types: frozenset[str] | None = None
    max_length: float | None = None


ANY_TEXT = Output(frozenset({TEXT}), math.inf)  # what a transform emits unless it declares better


def integer_types(largest: int) -> frozenset[str]:
    """The types holding every integer up to ``largest`` in magnitude."""
    return FLOATING | {t for t, top in INTEGER_RANGES.items() if largest <= top}


def _types_of(v: str) -> frozenset[str]:
    """The types PostgreSQL's input functions accept ``v`` for, among those checked here (conservative:
    only canonical forms)."""
    found = {TEXT}
    if _UUID.fullmatch(v):
        found.add("uuid")
    if _INT.fullmatch(v):
        found |= integer_types(abs(int(v)))
    if _DATE.fullmatch(v) and _valid(dt.date.fromisoformat, v):
        found |= {"date"} | _TIMESTAMPS
    if _TIMESTAMP.fullmatch(v) and _valid(dt.datetime.fromisoformat, v):
        found |= _TIMESTAMPS
    if "%" not in v and _valid(ipaddress.ip_address, v):  # no IPv6 zone: PostgreSQL has none
        found |= {"inet", "cidr"}
    elif "%" not in v and "/" in v and _valid(ipaddress.ip_interface, v):
        found |= {"inet"} | ({"cidr"} if _valid(lambda s: ipaddress.ip_network(s, strict=True), v) else set())
    return frozenset(found)


def _valid(parse, v: str) -> bool:
    try:
        parse(v)
    except ValueError:
        return False
    return True


def of_values(values: Iterable[str], extra_length: int = 0) -> Output:
    """The Output of a transform that emits only these values (a pool, a constant), each perhaps
    followed by a tag of ``extra_length`` characters (which leaves them text only)."""
    values = list(values)
    types = frozenset.intersection(*map(_types_of, values)) if values else frozenset({TEXT})
    return Output(types if not extra_length else frozenset({TEXT}),
                  max(map(len, values), default=0) + extra_length)
