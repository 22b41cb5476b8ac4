"""Pools of Faker values, built once per (provider, arguments, locale, size,
key) and picked from by a keyed hash of the original value. Calling Faker per
row is ~70x slower and not deterministic; pools are both fast and stable.
Faker only promises the same seeded output within one version: it is pinned."""

from __future__ import annotations

import datetime as dt
import functools
import json

from faker import Faker

from prodclone.errors import RulesError
from prodclone.masking.copytext import encode


@functools.lru_cache(maxsize=8)
def _faker(locale: str) -> Faker:
    try:
        return Faker(locale)
    except AttributeError:
        raise RulesError(f"unknown Faker locale {locale!r}") from None


def check_provider(provider: str, locale: str) -> None:
    fake = _faker(locale)
    if provider.startswith("_") or not callable(getattr(fake, provider, None)):
        raise RulesError(f"unknown Faker provider {provider!r} (see https://faker.readthedocs.io/en/stable/providers.html)")


def _text(v) -> str:
    if isinstance(v, (dt.date, dt.datetime)):
        return v.isoformat(sep=" ") if isinstance(v, dt.datetime) else v.isoformat()
    if isinstance(v, (dict, list)):
        return json.dumps(v)
    return str(v)


@functools.lru_cache(maxsize=256)
def pool(provider: str, args_json: str, locale: str, size: int, seed: int) -> tuple[bytes, ...]:
    check_provider(provider, locale)
    fake = Faker(locale)
    fake.seed_instance(seed)
    fn = getattr(fake, provider)
    args = json.loads(args_json)
    try:
        values = [_text(fn(**args)) for _ in range(size)]
    except TypeError as exc:
        raise RulesError(f"Faker provider {provider!r} rejected its args {args}: {exc}") from None
    return tuple(encode(v) for v in values)


def text_pool(provider: str, args: dict, locale: str, size: int, subkey: bytes) -> tuple[bytes, ...]:
    return pool(provider, json.dumps(args, sort_keys=True), locale, size, int.from_bytes(subkey[:8], "big"))
