"""Guess which columns hold personal data, by name and by sampled values, and
suggest a rule. Used by `rules scaffold` and in coverage reports."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re

from prodclone.catalog import Column
from prodclone.masking.evidence import BIRTH_AGES, TableRole, image_kinds, in_birth_range, mentions_names, name_kind
from prodclone.masking.transforms import trait
from prodclone.masking.transforms.scrub import identifiers

# Where a name rule applies. ID: a direct identifier or contact of a person, masked anywhere, and it makes its
# table one about people. ANY: masked anywhere (a secret, a card) without saying whose the rows are. PEOPLE:
# only in a table about people; elsewhere the same name is catalogue (a park's city, an airport's latitude, a
# category's picture, a film's description).
ID, ANY, PEOPLE = "identifier", "any", "people"

# (name pattern, rule, why, scope), matched against the column name split into lower-case words (nameFirst,
# "park.name" -> name_first, park_name). First match that fits the column's category wins; order matters.
NAME_RULES: list[tuple[str, dict, str, str]] = [
    (r"(^|_)e?mail(_?address)?$", {"transform": "email"}, "email address", ID),
    (r"(password|passwd|pwd|secret|token|api_?key|salt|otp|mfa)", {"transform": "hash", "length": 40}, "secret or credential", ANY),
    (r"(^|_)((first|given|middle|fore)_?names?|name_(first|given|middle))$", {"transform": "faker", "provider": "first_name"}, "personal name", ID),
    (r"(^|_)((last|family|sur)_?name|name_(last|family))$", {"transform": "faker", "provider": "last_name"}, "personal name", ID),
    (r"(^|_)(full_?name|display_?name|contact_?name|holder_?name|cardholder|person_?name|customer_?name|employee_?name)$", {"transform": "faker", "provider": "name"}, "personal name", ID),
    (r"(^|_)(user_?name|login|handle|nick_?name)$", {"transform": "faker", "provider": "user_name"}, "user name", ID),
    (r"(phone|mobile|fax|msisdn|(^|_)tel(_|$))", {"transform": "faker", "provider": "phone_number"}, "phone number", ID),
    (r"(^|_)(ip|ip_?addr(ess)?|last_?ip|remote_?addr)$", {"transform": "faker", "provider": "ipv4"}, "IP address", ID),
    # glued prefixes too (billingaddress, shippingcity: Chinook's, Northwind's spelling); address2 and line 2
    (r"(street|address|addr_?line|(^|_)line_?\d)(_?\d)?$", {"transform": "faker", "provider": "street_address"}, "street address", ID),
    (r"(birth|dob|(^|_)born|death|deceased|(^|_)died)", {"transform": "date_shift", "days": 180}, "birth or death date", ID),
    (r"(ssn|social_?security|national_?id|passport|tax_?id|iban|account_?number)", {"transform": "hash", "length": 24}, "government or bank identifier", ID),
    (r"(card_?number|(^|_)pan$|cc_?num)", {"transform": "card_number"}, "card number", ANY),
    (r"(zip|postal_?code|postcode)$", {"transform": "faker", "provider": "postcode"}, "postal code", PEOPLE),
    (r"(^|_|billing|shipping|mailing|home|work|birth|death)city$", {"transform": "faker", "provider": "city"}, "city", PEOPLE),
    (r"(^|_)(company|employer|organi[sz]ation)(_?name)?$", {"transform": "faker", "provider": "company"}, "company name", PEOPLE),
    (r"(^|_)name$", {"transform": "faker", "provider": "name"}, "name", PEOPLE),
    (r"(^|_)(body|message|comments?|notes?|description|bio|text|content)$", {"transform": "faker", "provider": "paragraph", "fit_length": True}, "free text may mention people", PEOPLE),
    (r"(^|_)(lat|latitude|lng|lon|longitude)$", {"transform": "noise", "relative": 0.01}, "location", PEOPLE),
    (r"(^|_)(weight|height)$", {"transform": "noise", "relative": 0.1}, "body measurement", PEOPLE),
    (r"(^|_)(salary|wage|income|pay)$", {"transform": "noise", "relative": 0.1}, "a person's pay", PEOPLE),
]

# bytea names: a picture of a person whatever the table, or one that is a person's only in a table about people.
PHOTO_NAME = re.compile(r"(photo|avatar|portrait|selfie|headshot|mugshot|signature|fingerprint)")
IMAGE_NAME = re.compile(r"(picture|image|(^|_)(pic|img|thumbnail)$)")
# Date column names that say the date is an event, never a birth date (hired, created, debut, ...).
EVENT_NAME = re.compile(r"(hire|start|end|join|creat|updat|modif|expir|valid|debut|final|last|first|paid|order|ship"
                        r"|invoice|sent|due|_at$|_on$|time)")

VALUE_RULES: list[tuple[re.Pattern, dict, str]] = [
    (re.compile(r"^[^@\s]+@[^@\s]+\.[a-z]{2,}$", re.I), {"transform": "email"}, "values look like email addresses"),
    # seven digits at least, and not a date (model numbers such as 737-824 are not phones)
    (re.compile(r"^(?!\d{4}-\d\d-\d\d$)(?=(?:\D*\d){7})\+?[\d\s().-]{7,20}$"), {"transform": "faker", "provider": "phone_number"},
     "values look like phone numbers"),
    (re.compile(r"^(\d{1,3}\.){3}\d{1,3}$"), {"transform": "faker", "provider": "ipv4"}, "values look like IP addresses"),
    (re.compile(r"^\$(2[aby]|argon2)"), {"transform": "hash", "length": 40}, "values look like password hashes"),
]

KEEP_WHY = {
    "number": "numeric, not personal by name",
    "bool": "boolean",
    "temporal": "timestamp, not a birth date by name or values",
    "json": "json without personal keys by name: review it",
    "text": "text, not personal by name or sampled values",
    "other": "not personal by type and name",
    "array": "array, not personal by name or sampled elements",
}
WEAK_KINDS = {"phone", "ipv4", "ipv6"}  # identifier kinds that a catalogue's numbers can look like
CATALOGUE = "rows are not about people (no identifiers, no reference to a table of people): catalogue"


def column_words(name: str) -> str:
    """A column name as lower-case words joined by '_', as the name patterns expect: camelCase split and any
    punctuation a separator (nameFirst -> name_first, park.name -> park_name)."""
    return re.sub(r"[^0-9a-z]+", "_", _words(name).lower()).strip("_")


def identifies(column: Column, samples: list[str] | None = None) -> str | None:
    """Why ``column`` holds a direct identifier or contact of a person (so its table is about people): its
    name, or its sampled values (emails, phones, names in Faker's lists); None if it does not."""
    if column.category not in ("text", "other", "temporal", "number"):
        return None
    name = column_words(column.name)
    for pattern, rule, why, scope in NAME_RULES:
        if scope == ID and re.search(pattern, name) and _fits_category(rule, column.category):
            return f"{column.name} ({why})"
    if samples and column.category == "text":
        for pattern, _rule, why in VALUE_RULES[:2]:  # emails and phones identify; IPs and hashes do not
            if _value_hits(pattern, samples):
                return f"{column.name} ({why})"
        found = name_kind(samples)
        if found:
            return f"{column.name} ({found[1]})"
    return None


def suggest(column: Column, samples: list | None = None, is_key: bool = False,
            role: TableRole | None = None) -> tuple[dict, str]:
    """A rule for ``column`` and why, from its name, its sampled values (text; the first bytes of bytea; dates)
    and its table's ``role`` (None: not surveyed, so assumed about people). Keys (ids, FKs) are kept so joins hold."""
    role = role or TableRole.unknown()
    name = column_words(column.name)
    if column.type == "tsvector":
        return ({"transform": "null"}, "search vector derived from other columns: rebuild it in the clone") if not column.not_null \
            else ({"transform": "constant", "value": ""}, "search vector derived from other columns")
    if is_key and column.category in ("number", "other"):
        return {"transform": "keep"}, "key column (ids are not personal)"
    if column.category == "array":
        return _suggest_elements(column, samples, is_key, role)
    if (column.base_type or column.type) == "bytea":
        return _suggest_binary(column, name, samples or [], role)
    catalogue = None  # a name rule that would apply in a table about people, but this one is not
    if column.category in ("text", "other", "json", "temporal", "number"):
        for pattern, rule, why, scope in NAME_RULES:
            if not re.search(pattern, name):
                continue
            if column.category == "number" and scope == ID and rule["transform"] == "date_shift":
                return _birth_number(column, name), f"{why} (as a number)"
            if not _fits_category(rule, column.category):
                continue
            if scope == PEOPLE and not role.people:
                catalogue = f"{why} by name, but {CATALOGUE}"
                break
            if column.category == "json":
                return {"transform": "null"}, f"json that looks like {why}: mask paths with the json transform"
            # a bare `name` in a table that only refers to people (an order line's product) must look like names
            if scope == PEOPLE and rule.get("provider") == "name" and samples and not role.direct and not name_kind(samples):
                catalogue = f"name, but sampled values are not personal names and {role.people}"
                break
            return _uniq(dict(rule), column, samples), why + (f"; {role.people}" if scope == PEOPLE else "")
    if samples and column.category == "text" and not is_key:  # keys: values like "978-..." are ids, not phones
        found = _suggest_from_values(column, samples, role)
        if found:
            return found
    if samples and column.category == "temporal" and role.people and not EVENT_NAME.search(name):
        dates = _dates(samples)
        if in_birth_range(dates):
            return {"transform": "date_shift", "days": 180}, \
                f"birth date: all {len(dates)} sampled dates are ages {BIRTH_AGES[0]}-{BIRTH_AGES[1]}; {role.people}"
    return {"transform": "keep"}, catalogue or KEEP_WHY.get(column.category, "not personal")


def _value_hits(pattern: re.Pattern, samples: list[str]) -> int:
    """How many samples match ``pattern``, if at least a fifth of them do (else 0)."""
    hits = sum(1 for s in samples if pattern.search(s))
    return hits if hits and hits >= max(1, len(samples) // 5) else 0


def _suggest_from_values(column: Column, samples: list[str], role: TableRole) -> tuple[dict, str] | None:
    """A rule from what sampled text values look like: emails, phones, hashes, names in Faker's lists, or free
    text carrying identifiers or naming people; None if they look like none of these."""
    for pattern, rule, why in VALUE_RULES:
        hits = _value_hits(pattern, samples)
        if hits:
            return _uniq(dict(rule), column, samples), f"{why} ({hits} of {len(samples)} sampled)"
    found = name_kind(samples)
    if found:
        return _uniq({"transform": "faker", "provider": found[0]}, column), f"personal name: {found[1]}"
    kinds = sorted({kind for s in samples for kind, _, _ in identifiers(s)})
    hits = sum(1 for s in samples if identifiers(s))
    # one row is enough (scrub leaves text without identifiers as it is), except in a catalogue, where a number
    # that looks like a phone or an IP address in a few rows is a catalogue number (an album's "1994-1999")
    if kinds and (role.people or set(kinds) - WEAK_KINDS or hits >= max(1, len(samples) // 5)):
        return _uniq({"transform": "scrub"}, column), \
            f"free text carrying {', '.join(kinds)} ({hits} of {len(samples)} sampled rows)"
    named = mentions_names(samples) if role.people else 0  # elsewhere names are credits: composers, authors
    if named and named >= max(1, len(samples) // 5):
        return _uniq({"transform": "faker", "provider": "paragraph", "fit_length": True}, column), \
            f"free text naming people ({named} of {len(samples)} sampled rows name a first and last name)"
    return None


def _suggest_binary(column: Column, name: str, heads: list[bytes], role: TableRole) -> tuple[dict, str]:
    """bytea: a photo of a person is removed (NULL, or empty if NOT NULL): by a name that means a person's
    picture, or by image bytes or an image name in a table about people. Other binaries are kept."""
    kinds, hits = image_kinds(heads)
    seen = f"{hits} of {len(heads)} sampled values are {'/'.join(kinds)} images" if hits else ""
    if PHOTO_NAME.search(name):
        why = f"photo of a person by name{f' ({seen})' if seen else ''}"
    elif (hits or IMAGE_NAME.search(name)) and role.people:
        why = f"{seen or 'image by name'}; {role.people}"
    elif hits or IMAGE_NAME.search(name):
        return {"transform": "keep"}, f"{seen or 'image by name'}, but {CATALOGUE}"
    else:
        return {"transform": "keep"}, "binary, not an image by name or sampled bytes"
    return ({"transform": "constant", "value": ""} if column.not_null else {"transform": "null"}), why


def _birth_number(column: Column, name: str) -> dict:
    """A birth or death date stored as numbers (birth_year, birth_month, birth_day): years move by a few
    years; a month or a day is dropped (NULL), or set to 1 where the column is NOT NULL."""
    if "year" in name:
        return {"transform": "noise", "relative": 0.005}
    return {"transform": "constant", "value": 1} if column.not_null else {"transform": "null"}


def _dates(samples: list[str]) -> list[dt.date]:
    """The distinct dates of sampled date/timestamp text (ISO, as the server writes it by default)."""
    out = set()
    for s in samples:
        try:
            out.add(dt.date.fromisoformat(s[:10]))
        except ValueError:
            return []  # another DateStyle: no value evidence
    return sorted(out)


def element_column(column: Column) -> Column:
    """One element of an array column, as a column of its own: the element type with the array's typmod
    (varchar(20)[] holds varchar(20) elements), nullable, and unique only as part of the array."""
    base = (column.base_type or column.type).removesuffix("[]")  # format_type writes any array as 'elem[]'
    return dataclasses.replace(column, name=f"{column.name}[*]", type=base, base_type=base, not_null=False,
                               unique=False)


def _suggest_elements(column: Column, samples: list[str] | None, is_key: bool,
                      role: TableRole) -> tuple[dict, str]:
    """An array is masked element by element, with the rule its name or sampled elements suggest
    for one element; unique arrays need an element rule that keeps elements distinct."""
    element = dataclasses.replace(element_column(column), name=column.name, unique=column.unique)
    rule, why = suggest(element, samples, is_key, role)
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


def _uniq(rule: dict, column: Column, samples: list | None = None) -> dict:
    if column.unique and trait(rule, "unique_changes_output"):
        rule["unique"] = True
    if column.unique and not trait(rule, "can_be_unique") and column.category == "text":
        rule = {"transform": "hash", "length": 24}
    if column.unique and rule.get("fit_length"):  # a uniqueness tag makes it longer than the original
        del rule["fit_length"]
    return _sized(rule, column, samples)


def _sized(rule: dict, column: Column, samples: list | None) -> dict:
    """A hex hash as long as the sampled values (their median length), so the column keeps its width: 60 for
    bcrypt hashes, not 40. At least 20 (80 bits) on a unique column, 8 elsewhere; at most 64."""
    texts = [s for s in samples or () if isinstance(s, str)]
    if rule.get("transform") == "hash" and "length" in rule and "format" not in rule and texts:
        median = sorted(map(len, texts))[len(texts) // 2]
        rule["length"] = max(20 if column.unique else 8, min(64, median))
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
        for pattern, rule, _why, _scope in NAME_RULES:
            # JSON values are text or ISO dates (birth dates are shifted); never numbers-only transforms
            if (_fits_category(rule, "text") or _fits_category(rule, "temporal")) and re.search(pattern, leaf.lower()):
                paths[path] = dict(rule)  # a copy: a shared dict would be written as a YAML anchor and alias,
                break                     # and editing one path's rule would silently change the others
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
