"""What the differential test (tests/unit/test_kernel.py) and the coverage-guided fuzzer (tests/fuzz/) share:
rule sets to draw from, and a table's two maskers, the kernel and the Python reference."""

from __future__ import annotations

import os

from prodclone.catalog import Column, Table
from prodclone.masking import kernel, rewriter
from prodclone.masking.rules import parse_rules

KEY = b"differential-test-key-" + b"x" * 20

# Rules the kernel runs natively, rules it calls back into Python for, and their null handling.
RULES = [
    "keep", "email", "null", "hash",
    "{transform: hash, length: 40}", "{transform: hash, format: uuid}", "{transform: hash, format: digits, length: 30}",
    '{transform: hash, length: 12, prefix: "c\\tus\\\\_"}', "{transform: hash, format: digits, length: 64}",
    "{transform: faker, provider: first_name}", "{transform: faker, provider: last_name, unique: true}",
    "{transform: faker, provider: phone_number}", "{transform: faker, provider: ipv4}",
    "{transform: faker, provider: city, locale: fr_FR}", "{transform: faker, provider: address}",
    "{transform: faker, provider: street_address, unique: true}", "{transform: faker, provider: job, pool_only: true}",
    "{transform: faker, provider: postcode, nulls: mask}", "{transform: faker, provider: date_of_birth}",
    '{transform: constant, value: "x\\ty"}', "{transform: constant, value: 0, nulls: mask}",
    "{transform: redact, keep_end: 4}", "{transform: date_shift, days: 30}", "{transform: scrub}",
    "card_number", "{transform: card_number, nulls: mask}",
    "{transform: faker, provider: paragraph, fit_length: true}", "{transform: faker, provider: word, fit_length: true, nulls: mask}",
    "{transform: faker, provider: city, locale: fr_FR, fit_length: true}",
    "{transform: json, paths: {ip: {transform: faker, provider: ipv4}, name: {transform: faker, provider: name}, "
    "a.b: hash, 'items[*].email': email, keep: keep, gone: null}, unlisted: keep}",
    "{transform: json, paths: {ip: {transform: faker, provider: ipv4}, a: keep, n: null}}",
    "{transform: json, paths: {x: {transform: redact}, a.b: email, n: card_number}, unlisted: null}",
    "{transform: json, paths: {name: {transform: faker, provider: first_name}, o: keep}, unlisted: drop}",
]

_masker_cache: dict[tuple[str, ...], tuple[rewriter.TableMasker, rewriter.TableMasker]] = {}


def maskers(rules: tuple[str, ...], monkeypatch=None) -> tuple[rewriter.TableMasker, rewriter.TableMasker]:
    """(kernel, Python reference) for a table whose column i has rules[i]."""
    if rules not in _masker_cache:
        if len(_masker_cache) >= 64:  # a long fuzzing run meets thousands of rule sets: keep memory flat
            _masker_cache.clear()
        cols = [f"c{i}" for i in range(len(rules))]
        text = "version: 1\ntables:\n  public.t:\n    columns:\n" + "".join(f"      {c}: {r}\n" for c, r in zip(cols, rules, strict=True))
        table = Table("public.t", "table", [Column(c, "text", False) for c in cols])
        fast = rewriter.TableMasker(table, parse_rules(text).bind(KEY))
        old = os.environ.get(kernel.ENV)
        os.environ[kernel.ENV] = "0"  # the reference: no kernel anywhere, json leaves included
        try:
            slow = rewriter.TableMasker(table, parse_rules(text).bind(KEY))
        finally:
            os.environ.pop(kernel.ENV) if old is None else os.environ.__setitem__(kernel.ENV, old)
        assert fast.passthrough or fast.kernel is not None
        assert slow.kernel is None
        _masker_cache[rules] = (fast, slow)
    return _masker_cache[rules]


def outcome(fn, *args):
    try:
        return ("ok", fn(*args))
    except Exception as exc:  # the same error, word for word, on both paths
        return ("error", type(exc).__name__, str(exc))
