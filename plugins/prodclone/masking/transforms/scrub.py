"""Mask the identifiers embedded in free text and nothing else: emails, phone numbers, card
numbers, IBANs, IP addresses, secrets and tokens, token-carrying URL parameters and passwords in
URLs are each replaced by a keyed, deterministic value of the same shape; every other character
of the text stays byte for byte. The detectors here are also scaffold's and the leak check's."""

from __future__ import annotations

import hashlib
import ipaddress
import math
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from prodclone.masking.copytext import decode, encode
from prodclone.masking.transforms.base import Transform, register
from prodclone.masking.transforms.card import CardNumber, luhn_ok, regroup
from prodclone.masking.transforms.email_address import Email
from prodclone.masking.transforms.outputs import TEXT, Output

_TOKEN_PARAMS = (r"access_token|refresh_token|id_token|auth_token|token|api_?key|apikey|key|sig|signature|secret"
                 r"|password|passwd|auth|code|session_?id|session|x-amz-signature|x-amz-credential|x-amz-security-token")


@dataclass(frozen=True)
class Detector:
    """One kind of identifier: where it may be (group ``v``, or ``aws``, is what gets replaced),
    whether a match really is one (a checksum, a parse), and a cheap test any text holding one
    passes (most text holds none: it skips the costlier pattern)."""

    kind: str
    pattern: re.Pattern
    valid: Callable[[str], bool]
    maybe: Callable[[str], bool] = lambda _text: True


def _card(v: str) -> bool:
    """13-19 digits passing Luhn, in groups split by one kind of separator (or none)."""
    digits = re.sub(r"[ -]", "", v)
    return 13 <= len(digits) <= 19 and len(set(re.findall(r"[ -]", v))) <= 1 and luhn_ok(digits)


def _iban_remainder(iban: str) -> int:
    moved = iban[4:] + iban[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97


def _iban(v: str) -> bool:
    compact = v.replace(" ", "")
    return 15 <= len(compact) <= 34 and _iban_remainder(compact) == 1


def _parses(parse) -> Callable[[str], bool]:
    def ok(v: str) -> bool:
        try:
            parse(v)
        except ValueError:
            return False
        return True
    return ok


_DATE_LIKE = re.compile(r"\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{4}")


def _phone(v: str) -> bool:
    """7-15 digits, and not a date. A large number written with separators ('1 250 000') passes too:
    masking it costs realism, missing a phone would leak it."""
    return 7 <= sum(c.isdigit() for c in v) <= 15 and not _DATE_LIKE.fullmatch(v)


def _entropy(v: str) -> float:
    return -sum(n / len(v) * math.log2(n / len(v)) for n in Counter(v).values())


def _high_entropy(v: str) -> bool:
    """Long random-looking strings: hex keys and digests, base64 secrets. Letters and digits both,
    and spread out (a long word, a path of words, or a run of one character is not a secret)."""
    if not (re.search(r"\d", v) and re.search(r"[A-Za-z]", v)):
        return False
    return _entropy(v) >= (3.0 if re.fullmatch(r"[0-9a-fA-F]+", v) else 4.2)


def _always(_v: str) -> bool:
    return True


def _holds(*parts: str) -> Callable[[str], bool]:
    return lambda text: any(p in text for p in parts)


_DIGIT = re.compile(r"\d").search
_SECRET_PREFIXES = ("_live_", "_test_", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "xox", "AKIA", "ASIA")


# In priority order: where two overlap, the earlier wins (a token inside a URL is the URL parameter's).
DETECTORS = (
    Detector("url_token", re.compile(rf"(?i)(?<=[?&;])(?:{_TOKEN_PARAMS})=(?P<v>[^&#;\s\"'<>]+)"), _always, _holds("=")),
    Detector("url_password", re.compile(r"(?i)\b[a-z][a-z0-9+.-]*://[^\s/:@\"'<>]*:(?P<v>[^\s/@\"'<>]+)@"), _always,
             _holds("://")),
    Detector("jwt", re.compile(r"(?<![\w-])eyJ(?P<v>[\w-]{8,}\.eyJ[\w-]{8,}\.[\w-]{8,})"), _always, _holds("eyJ")),
    Detector("bearer", re.compile(r"(?i)\bbearer\s+(?P<v>[\w.~+/-]{16,}=*)"), _always, lambda text: "bearer" in text.lower()),
    Detector("secret", re.compile(r"\b(?:(?:sk|rk|pk)_(?:live|test)_|gh[pousr]_|github_pat_|xox[abposr]-)(?P<v>[\w-]{10,})"
                                  r"|\b(?:AKIA|ASIA)(?P<aws>[0-9A-Z]{16})\b"), _always, _holds(*_SECRET_PREFIXES)),
    Detector("email", re.compile(r"(?<![\w.%+'-])(?P<v>[\w.%+'-]+@[\w-]+(?:\.[\w-]+)*\.[^\W\d_]{2,})(?![\w-])"), _always, _holds("@")),
    Detector("iban", re.compile(r"(?<![A-Z0-9])(?P<v>[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?)(?![A-Z0-9])"),
             _iban, _DIGIT),
    Detector("card", re.compile(r"(?<![\d-])(?P<v>\d(?:[ -]?\d){12,18})(?![\d])"), _card, _DIGIT),
    Detector("ipv6", re.compile(r"(?<![\w:.])(?P<v>(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4})(?![\w:.])"),
             lambda v: any(c not in ":" for c in v) and _parses(ipaddress.IPv6Address)(v),
             re.compile(r":[0-9A-Fa-f]{0,4}:").search),
    Detector("ipv4", re.compile(r"(?<![\d.])(?P<v>(?:\d{1,3}\.){3}\d{1,3})(?!\.?\d)"), _parses(ipaddress.IPv4Address),
             re.compile(r"\d\.\d").search),
    Detector("phone", re.compile(r"(?<![\w+-])(?P<v>\+\d{7,15}|(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,5}\)[ .-]?)?\d{1,8}(?:[ .-]\d{1,8}){1,5})"
                                 r"(?![\w:-])"), _phone, _DIGIT),
    Detector("token", re.compile(r"(?<![\w+/=-])(?P<v>[\w+/-]{32,}={0,2})(?![\w+/=-])"), _high_entropy, _DIGIT),
)


def identifiers(text: str) -> list[tuple[str, int, int]]:
    """The identifiers in ``text``: (kind, start, end), in text order, never overlapping."""
    taken: list[tuple[str, int, int]] = []
    for d in DETECTORS:
        for m in d.pattern.finditer(text) if d.maybe(text) else ():
            group = "v" if m["v"] is not None else "aws"
            start, end = m.span(group)
            if d.valid(m[group]) and not any(s < end and start < e for _, s, e in taken):
                taken.append((d.kind, start, end))
    return sorted(taken, key=lambda t: t[1])


_HEX = "0123456789abcdef"
_CHAR_CLASSES = re.compile(r"(%[0-9A-Fa-f]{2})|([0-9])|([a-z])|([A-Z])")


def _reshape(v: str, stream: bytes, hex_only: bool = False) -> str:
    """``v`` with every ASCII digit and letter replaced from ``stream`` by one of its kind (digit, lower,
    upper; a hex digit if ``hex_only``); punctuation and URL %-escapes kept: the same shape and length."""
    draws = iter(stream * (len(v) // len(stream) + 1))

    def swap(m: re.Match) -> str:
        b = next(draws)
        if m[1] or (hex_only and m[0] in "abcdefABCDEF"):
            return m[0] if m[1] else _HEX[b % 16]
        if m[2]:
            return _HEX[b % 16] if hex_only else str(b % 10)
        return chr((97 if m[3] else 65) + b % 26)
    return _CHAR_CLASSES.sub(swap, v)


@register
class Scrub(Transform):
    name = "scrub"
    description = ("Free text: rewrite only the identifiers inside it (emails, phones, card numbers, IBANs, IP "
                   "addresses, secrets and tokens, token URL parameters, passwords in URLs), each to a keyed value of "
                   "the same shape; the rest of the text stays byte for byte. An email becomes what the email rule makes of it.")
    examples = ({"transform": "scrub"},)
    categories = frozenset({"text"})
    can_be_unique = False  # text around two different identifiers may become equal
    may_equal_inputs = True  # text without identifiers comes out as it went in
    embeds = True

    def setup(self) -> None:
        self.email = Email({"transform": "email"}, self.ctx)  # the same sub-key: an address masks as in an email column
        self.card = CardNumber({"transform": "card_number"}, self.ctx)  # and a card as in a card_number column
        # How each kind is replaced; any other (secrets, tokens, URL parameters) is reshaped character by character.
        self._replace = {"email": self._email, "card": self._card, "iban": self._iban, "ipv4": self._ipv4,
                         "ipv6": self._ipv6, "phone": self._phone, "jwt": self._jwt}

    def output(self, lengths) -> Output:
        return Output(frozenset({TEXT}), math.inf)  # a masked email may be longer than the original

    @property
    def leak_checked(self) -> bool:
        return True

    def embedded(self, value: bytes) -> list[bytes]:
        text = decode(value)
        return [encode(text[s:e]) for _, s, e in identifiers(text)]

    def __call__(self, value: bytes) -> bytes:
        text = decode(value)
        found = identifiers(text)
        if not found:
            return value
        out, pos = [], 0
        for kind, start, end in found:
            v = text[start:end]
            replace = self._replace.get(kind)
            out += [text[pos:start], replace(v) if replace else
                    _reshape(v, self._stream(kind, v), hex_only=bool(re.fullmatch(r"[0-9a-fA-F]+", v)))]
            pos = end
        out.append(text[pos:])
        return encode("".join(out))

    def _stream(self, kind: str, v: str) -> bytes:
        """Keyed bytes for one identifier, as many as its characters: the same identifier, the same bytes."""
        return hashlib.shake_256(self.subkey + kind.encode() + b"\0" + v.encode()).digest(len(v) + 8)

    def _email(self, v: str) -> str:
        return decode(self.email(encode(v)))

    def _card(self, v: str) -> str:
        return decode(self.card(encode(v)))

    def _iban(self, v: str) -> str:
        """The same country and spacing, the account part keyed, check digits that validate."""
        compact = v.replace(" ", "")
        bban = _reshape(compact[4:], self._stream("iban", compact))
        check = 98 - _iban_remainder(compact[:2] + "00" + bban)
        it = iter(f"{compact[:2]}{check:02d}{bban}")
        return "".join(next(it) if c != " " else c for c in v)

    def _jwt(self, v: str) -> str:
        """Segments reshaped; a segment that began as encoded JSON ('eyJ') still does."""
        masked = _reshape(v, self._stream("jwt", v)).split(".")
        return ".".join("eyJ" + m[3:] if o.startswith("eyJ") else m for o, m in zip(v.split("."), masked, strict=True))

    def _ipv6(self, v: str) -> str:
        return _reshape(v, self._stream("ipv6", v.lower()), hex_only=True)

    def _ipv4(self, v: str) -> str:
        s = self._stream("ipv4", v)
        return f"{1 + s[0] % 223}.{s[1]}.{s[2]}.{1 + s[3] % 254}"

    def _phone(self, v: str) -> str:
        """The same punctuation and digit count; a leading 0 (trunk prefix) stays, another first digit stays non-zero."""
        digits = re.sub(r"\D", "", v)
        new = _reshape(digits, self._stream("phone", digits))
        first = digits[0] if digits[0] == "0" else str(1 + int(new[0]) % 9)
        return regroup(first + new[1:], v)
