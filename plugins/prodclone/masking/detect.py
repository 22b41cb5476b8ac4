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


def _words(key: str) -> str:
    """A JSON key with camelCase words split as the column-name patterns expect (contactEmail -> contact_Email)."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", key)


def suggest_json(surveyed) -> tuple[dict, str] | None:
    """A json-paths rule listing every surveyed path (scalars, empty objects and arrays): personal keys masked,
    birth dates shifted, the others ``keep``, so a key the survey did not see stops the export (unlisted: fail)."""
    paths, personal = {}, []
    for path in sorted(surveyed):
        leaf = _words(path.rsplit(".", 1)[-1].replace("[*]", ""))
        paths[path] = {"transform": "keep"}
        for pattern, rule, _why in NAME_RULES:
            # JSON values are text or ISO dates (birth dates are shifted); never numbers-only transforms
            if (_fits_category(rule, "text") or _fits_category(rule, "temporal")) and re.search(pattern, leaf.lower()):
                paths[path] = rule
                break
        else:
            if leaf.lower() in ("zip", "ip"):
                paths[path] = {"transform": "faker", "provider": "postcode" if leaf.lower() == "zip" else "ipv4"}
        if trait(paths[path], "masks"):
            personal.append(path)
    if not paths:
        return None
    why = f"personal keys in surveyed documents: {', '.join(personal)}" if personal else \
        "no personal keys in surveyed documents: review them"
    return {"transform": "json", "paths": paths}, why


# Personal data and secrets inside free text (schema text: defaults, CHECKs, enum labels, function bodies,
# view definitions, kept comments): what each finds, a pattern, and an optional check that cuts false hits.
def _luhn(digits: str) -> bool:
    total = sum(d if i % 2 == 0 else (d * 2 - 9 if d > 4 else d * 2) for i, d in enumerate(map(int, reversed(digits))))
    return total % 10 == 0


def _iban(text: str) -> bool:
    s = text.replace(" ", "")
    return int("".join(str(int(c, 36)) for c in s[4:] + s[:4])) % 97 == 1


def _routable(ip: str) -> bool:
    """Not an address that identifies no one (any, loopback, broadcast)."""
    return not (ip == "0.0.0.0" or ip.startswith("127.") or ip == "255.255.255.255")


TEXT_FINDINGS: list[tuple[str, re.Pattern, object]] = [
    ("email address", re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"), None),
    ("phone number", re.compile(r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?\(?\d{3}\)?[ .-]?\d{3}[ .-]\d{4}(?![\w-])"
                                r"|(?<![\w+])\+\d{1,3}[ .-]?\d(?:[ .-]?\d){6,13}(?!\w)"), None),
    ("social security number", re.compile(r"(?<![\d-])\d{3}-\d{2}-\d{4}(?![\d-])"), None),
    ("card number", re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])"),
     lambda m: _luhn(re.sub(r"\D", "", m))),
    ("IBAN", re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b"), _iban),
    ("IP address", re.compile(r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)(?![\d.])"),
     _routable),
    ("API key or token", re.compile(r"\b(?:[sprw]k_(?:live|test)_[0-9A-Za-z]{8,}|gh[pousr]_[0-9A-Za-z]{20,}"
                                    r"|xox[abprs]-[0-9A-Za-z-]{10,}|AIza[0-9A-Za-z_-]{35}"
                                    r"|eyJ[\w-]{8,}\.eyJ[\w-]{8,}\.[\w-]{8,})"), None),
    ("AWS access key", re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), None),
    ("private key", re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----"), None),
    ("credentials in a URL", re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s/:@'\"]+:[^\s/@'\"]+@"), None),
]


def find_in_text(text: str) -> list[str]:
    """What personal data or secrets ``text`` holds, by kind (never the values), in TEXT_FINDINGS order."""
    return [kind for kind, pattern, check in TEXT_FINDINGS
            if any(check is None or check(m.group()) for m in pattern.finditer(text))]
