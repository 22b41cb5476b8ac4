"""Evidence from a column's values and its table's place in the schema, so scaffold decides from what the data
is and not only from what a column is called: Faker's name lists, image magic numbers in bytea, dates in the
birth range, and whether a table's rows are about people or are a catalogue that other tables look up."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import importlib
import pkgutil
import re

# Share of a column's distinct sampled values that must be names (first, last, or "First [Middle] Last") before
# the values alone call it a name column, and the fewest distinct values that can show it.
NAME_SHARE = 0.6
MIN_DISTINCT = 5
# Magic numbers of image formats, and offsets where they may sit: 0, or after the 78-byte OLE header that
# Microsoft Access wraps pictures in (the Northwind sample's photos).
IMAGE_MAGIC = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"),
               (b"BM", "BMP"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"\x00\x00\x01\x00", "ICO"))
IMAGE_OFFSETS = (0, 78)
IMAGE_HEAD = 96  # bytes of each value scaffold reads: enough for every magic number at every offset
_WEBP = re.compile(rb"RIFF....WEBP", re.S)
BIRTH_AGES = (14, 110)  # a date of birth of someone in a database today: between these ages


@functools.cache
def name_lists() -> tuple[frozenset[str], frozenset[str], int]:
    """Casefolded first and last names of every Faker locale, and how many locales: built once, on first use
    (importing the ~90 person providers takes about a second)."""
    from faker.providers import person

    first, last, locales = set(), set(), 0
    for mod in pkgutil.iter_modules(person.__path__):
        provider = getattr(importlib.import_module(f"{person.__name__}.{mod.name}"), "Provider", None)
        if provider is None:
            continue
        locales += 1
        for attr in dir(provider):
            target = first if attr.startswith("first_names") else last if attr.startswith("last_names") else None
            if target is not None and isinstance(getattr(provider, attr), dict | list | tuple | set | frozenset):
                target.update(n.casefold() for n in getattr(provider, attr) if isinstance(n, str))
    return frozenset(first), frozenset(last), locales


def _tokens(value: str) -> list[str]:
    return [t.casefold() for t in re.split(r"[\s.]+", value.strip()) if t]


def name_kind(samples: list[str]) -> tuple[str, str] | None:
    """("first_name" | "last_name" | "name", why) when most distinct sampled values are names of that kind in
    Faker's lists across its locales; None otherwise (catalogue names: genres, airports, artists, products)."""
    distinct = {s.strip() for s in samples if s and s.strip()}
    if len(distinct) < MIN_DISTINCT:
        return None
    first, last, locales = name_lists()
    counts = {
        "first_name": sum(1 for v in distinct if v.casefold() in first),
        "last_name": sum(1 for v in distinct if v.casefold() in last),
        "name": sum(1 for v in distinct if _is_full_name(_tokens(v), first, last)),
    }
    kind, hits = max(counts.items(), key=lambda kv: kv[1])
    if hits < NAME_SHARE * len(distinct):
        return None
    what = {"first_name": "first names", "last_name": "last names", "name": "first and last names"}[kind]
    return kind, f"{hits} of {len(distinct)} distinct sampled values are {what} in Faker's lists ({locales} locales)"


def _is_full_name(tokens: list[str], first: frozenset[str], last: frozenset[str]) -> bool:
    """"First [Middle …] Last": two to four words, the first a first name and the last a last name."""
    return 2 <= len(tokens) <= 4 and tokens[0] in first and tokens[-1] in last and "," not in "".join(tokens)


def mentions_names(samples: list[str]) -> int:
    """How many sampled texts name a person: a capitalised first name followed by a capitalised last name."""
    first, last, _ = name_lists()
    pair = re.compile(r"\b([A-Z][\w'-]+)\s+([A-Z][\w'-]+)\b")
    return sum(1 for s in samples
               if any(a.casefold() in first and b.casefold() in last for a, b in pair.findall(s)))


def image_kinds(heads: list[bytes]) -> tuple[list[str], int]:
    """The image formats the sampled bytea values start with (at offset 0 or after an OLE header), and how
    many values are images."""
    kinds, hits = set(), 0
    for head in heads:
        kind = next((k for off in IMAGE_OFFSETS for magic, k in IMAGE_MAGIC if head[off:off + len(magic)] == magic),
                    "WEBP" if _WEBP.match(head) else None)
        if kind:
            kinds.add(kind)
            hits += 1
    return sorted(kinds), hits


def in_birth_range(dates: list[dt.date], today: dt.date | None = None) -> bool:
    """Are all sampled dates (at least MIN_DISTINCT of them) dates of birth of living people by age?"""
    today = today or dt.date.today()
    young, old = (today.replace(year=today.year - a) if not (today.month == 2 and today.day == 29)
                  else today.replace(year=today.year - a, day=28) for a in BIRTH_AGES)
    return len(dates) >= MIN_DISTINCT and all(old <= d <= young for d in dates)


@dataclasses.dataclass(frozen=True)
class TableRole:
    """Why a table's rows are about people (it holds direct identifiers, or references a table that does), or
    None: then contact-like and descriptive columns in it (city, description, picture, latitude) are catalogue.
    ``direct``: the table itself holds them (its bare ``name`` column is a person's, whatever its values)."""
    people: str | None = None
    direct: bool = False

    @classmethod
    def unknown(cls) -> TableRole:
        """No evidence read (coverage reports): assume people, so nothing is kept for lack of looking."""
        return cls(people="table not surveyed", direct=True)
