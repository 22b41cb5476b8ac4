"""Guess which columns hold personal data, by name and by sampled values, and
suggest a rule. Used by `rules scaffold` and in coverage reports."""

from __future__ import annotations

import dataclasses
import re

from prodclone.catalog import Column
from prodclone.masking.transforms import trait
from prodclone.masking.transforms.scrub import identifiers

# (name pattern, rule, why). First match wins; order matters.
NAME_RULES: list[tuple[str, dict, str]] = [
    (r"(^|_)e?mail(_?address)?$", {"transform": "email"}, "email address"),
    (r"(password|passwd|pwd|secret|token|api_?key|salt|otp|mfa)", {"transform": "hash", "length": 40}, "secret or credential"),
    (r"(^|_)(first|given|middle)_?name$", {"transform": "faker", "provider": "first_name"}, "personal name"),
    (r"(^|_)(last|family|sur)_?name$", {"transform": "faker", "provider": "last_name"}, "personal name"),
    (r"(^|_)(full_?name|name|display_?name|contact_?name|holder_?name|cardholder)$", {"transform": "faker", "provider": "name"}, "personal name"),
    (r"(^|_)(user_?name|login|handle|nick_?name)$", {"transform": "faker", "provider": "user_name"}, "user name"),
    (r"(phone|mobile|fax|msisdn|tel)", {"transform": "faker", "provider": "phone_number"}, "phone number"),
    (r"(^|_)(street|address|address_?line\d?|line\d)$", {"transform": "faker", "provider": "street_address"}, "street address"),
    (r"(^|_)(zip|postal_?code|postcode)$", {"transform": "faker", "provider": "postcode"}, "postal code"),
    (r"(^|_)city$", {"transform": "faker", "provider": "city"}, "city"),
    (r"(birth|dob)", {"transform": "date_shift", "days": 180}, "birth date"),
    (r"(^|_)(ip|ip_?addr(ess)?|last_?ip|remote_?addr)$", {"transform": "faker", "provider": "ipv4"}, "IP address"),
    (r"(ssn|social_?security|national_?id|passport|tax_?id|iban|account_?number)", {"transform": "hash", "length": 24}, "government or bank identifier"),
    (r"(card_?number|pan|cc_?num)", {"transform": "redact", "keep_end": 4}, "card number"),
    (r"(^|_)(company|employer|organi[sz]ation)(_?name)?$", {"transform": "faker", "provider": "company"}, "company name"),
    (r"(^|_)(body|message|comment|notes?|description|bio|text|content)$", {"transform": "faker", "provider": "paragraph"}, "free text may mention people"),
    (r"(^|_)(lat|latitude|lng|lon|longitude)$", {"transform": "noise", "relative": 0.01}, "location"),
]

VALUE_RULES: list[tuple[re.Pattern, dict, str]] = [
    (re.compile(r"^[^@\s]+@[^@\s]+\.[a-z]{2,}$", re.I), {"transform": "email"}, "values look like email addresses"),
    (re.compile(r"^\+?[\d\s().-]{7,20}$"), {"transform": "faker", "provider": "phone_number"}, "values look like phone numbers"),
    (re.compile(r"^(\d{1,3}\.){3}\d{1,3}$"), {"transform": "faker", "provider": "ipv4"}, "values look like IP addresses"),
    (re.compile(r"^\$(2[aby]|argon2)"), {"transform": "hash", "length": 40}, "values look like password hashes"),
]

KEEP_WHY = {
    "number": "numeric, not personal by name",
    "bool": "boolean",
    "temporal": "timestamp, not a birth date by name",
    "json": "json without personal keys by name: review it",
    "text": "text, not personal by name or sampled values",
    "other": "not personal by type and name",
    "array": "array, not personal by name or sampled elements",
}


def suggest(column: Column, samples: list[str] | None = None, is_key: bool = False) -> tuple[dict, str]:
    """A rule for ``column`` and why. Keys (ids, FKs) are kept so joins hold."""
    name = column.name.lower()
    if column.type == "tsvector":
        return ({"transform": "null"}, "search vector derived from other columns: rebuild it in the clone") if not column.not_null \
            else ({"transform": "constant", "value": ""}, "search vector derived from other columns")
    if is_key and column.category in ("number", "other"):
        return {"transform": "keep"}, "key column (ids are not personal)"
    if column.category in ("text", "other", "json", "temporal", "number"):
        for pattern, rule, why in NAME_RULES:
            if re.search(pattern, name):
                if not _fits_category(rule, column.category):
                    continue
                if column.category == "json":
                    return {"transform": "null"}, f"json that looks like {why}: mask paths with the json transform"
                return _uniq(dict(rule), column), why
    if column.category == "array":
        return _suggest_elements(column, samples, is_key)
    if samples and column.category == "text" and not is_key:  # keys: values like "978-..." are ids, not phones
        for pattern, rule, why in VALUE_RULES:
            hits = sum(1 for s in samples if pattern.search(s))
            if hits and hits >= max(1, len(samples) // 5):
                return _uniq(dict(rule), column), why
        kinds = sorted({kind for s in samples for kind, _, _ in identifiers(s)})
        if kinds:  # one row is enough: scrub leaves text without identifiers as it is
            hits = sum(1 for s in samples if identifiers(s))
            return _uniq({"transform": "scrub"}, column), \
                f"free text carrying {', '.join(kinds)} ({hits} of {len(samples)} sampled rows)"
    return {"transform": "keep"}, KEEP_WHY.get(column.category, "not personal")


def element_column(column: Column) -> Column:
    """One element of an array column, as a column of its own: the element type with the array's typmod
    (varchar(20)[] holds varchar(20) elements), nullable, and unique only as part of the array."""
    base = (column.base_type or column.type).removesuffix("[]")  # format_type writes any array as 'elem[]'
    return dataclasses.replace(column, name=f"{column.name}[*]", type=base, base_type=base, not_null=False,
                               unique=False)


def _suggest_elements(column: Column, samples: list[str] | None, is_key: bool) -> tuple[dict, str]:
    """An array is masked element by element, with the rule its name or sampled elements suggest
    for one element; unique arrays need an element rule that keeps elements distinct."""
    element = dataclasses.replace(element_column(column), name=column.name, unique=column.unique)
    rule, why = suggest(element, samples, is_key)
    if not trait(rule, "masks"):
        return {"transform": "keep"}, KEEP_WHY["array"]
    if element.unique and not trait(rule, "can_be_unique"):
        rule = {"transform": "hash", "length": 24}
    spec = {"transform": "elements", "rule": rule if list(rule) != ["transform"] else rule["transform"]}
    if column.delimiter != ",":
        spec["delimiter"] = column.delimiter
    return spec, f"each element: {why}"


def _fits_category(rule: dict, category: str) -> bool:
    """Does the rule's transform take this column category? One for any category (faker, hash) is
    not suggested for numbers and dates, whose own transforms keep them valid."""
    accepted = trait(rule, "categories")
    return category in accepted if accepted is not None else category not in ("temporal", "number")


def _uniq(rule: dict, column: Column) -> dict:
    if column.unique and trait(rule, "unique_changes_output"):
        rule["unique"] = True
    if column.unique and not trait(rule, "can_be_unique") and column.category == "text":
        rule = {"transform": "hash", "length": 24}
    return rule


def _leaf_paths(node, prefix: str = "") -> set[str]:
    """Every path a json rule must list for ``node``: its scalars, and its empty objects and arrays."""
    if isinstance(node, (dict, list)) and not node:
        return {prefix} if prefix else set()
    if isinstance(node, dict):
        out = set()
        for k, v in node.items():
            out |= _leaf_paths(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    if isinstance(node, list):
        out = set()
        for v in node[:20]:
            out |= _leaf_paths(v, f"{prefix}[*]")
        return out
    return {prefix} if prefix else set()


def suggest_json(column: Column, docs: list) -> tuple[dict, str] | None:
    """A json-paths rule listing every path of the sampled documents: personal keys masked,
    the others ``keep``, so a key no sample showed stops the export (unlisted: fail)."""
    paths, personal = {}, []
    for path in sorted(set().union(*(_leaf_paths(d) for d in docs)) if docs else ()):
        leaf = path.rsplit(".", 1)[-1].replace("[*]", "")
        paths[path] = {"transform": "keep"}
        for pattern, rule, _why in NAME_RULES:
            if _fits_category(rule, "text") and re.search(pattern, leaf.lower()):
                paths[path] = rule
                break
        else:
            if leaf.lower() in ("zip", "ip"):
                paths[path] = {"transform": "faker", "provider": "postcode" if leaf.lower() == "zip" else "ipv4"}
        if trait(paths[path], "masks"):
            personal.append(path)
    if not paths:
        return None
    why = f"personal keys in sampled documents: {', '.join(personal)}" if personal else \
        "no personal keys in sampled documents: review them"
    return {"transform": "json", "paths": paths}, why
