"""Card numbers: keyed, Luhn-valid, of the original's length and grouping, so a masked column keeps its
distinct count and its shape (a redaction keeping the last four digits made 90,000 numbers ~9,000)."""

from __future__ import annotations

import hashlib
import re

from prodclone.masking.copytext import decode, encode
from prodclone.masking.transforms.base import Transform, register
from prodclone.masking.transforms.outputs import TEXT, Output

_CARD = re.compile(r"[0-9]+(?:[ -][0-9]+)*")
_LOWER, _UPPER = "abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_DOUBLED = [2 * d - 9 if d > 4 else 2 * d for d in range(10)]
_MOVE = [[str((d + 1 + b % 9) % 10) for b in range(256)] for d in range(10)]  # digit d, keyed byte b: never d


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, d in enumerate(reversed(digits)):
        n = int(d) * (2 if i % 2 else 1)
        total += n - 9 if n > 9 else n
    return total % 10 == 0


def with_check_digit(digits: str) -> str:
    """``digits`` (all but the last) followed by the Luhn check digit that makes them valid."""
    doubled = sum(_DOUBLED[ord(c) - 48] for c in digits[::-2])  # the check digit's neighbour is doubled
    return digits + str(-(doubled + sum(ord(c) - 48 for c in digits[-2::-2])) % 10)


def regroup(digits: str, like: str) -> str:
    """``digits`` in the grouping of ``like``: its separators where they were."""
    it = iter(digits)
    return "".join(next(it) if c.isdigit() else c for c in like)


def _moved(v: str, stream: bytes) -> str:
    """Every ASCII digit and letter of ``v`` replaced by another of its kind (never itself), from ``stream``."""
    out = []
    for c, b in zip(v, stream, strict=False):  # the stream is longer
        for alphabet in ("0123456789", _LOWER, _UPPER):
            if c in alphabet:
                c = alphabet[(alphabet.index(c) + 1 + b % (len(alphabet) - 1)) % len(alphabet)]
                break
        out.append(c)
    return "".join(out)


@register
class CardNumber(Transform):
    name = "card_number"
    description = ("A card number of the same length and grouping: the first (network) digit kept, the others keyed, "
                   "a valid Luhn check digit; distinct numbers stay distinct. A value that is not 12-19 digits gets "
                   "every digit and letter replaced by another of its kind.")
    examples = ({"transform": "card_number"},)
    can_be_unique = False  # ~46 bits: distinct in practice, not a guarantee

    def output(self, lengths) -> Output:
        return Output(frozenset({TEXT}))  # as many characters as its input, as text

    def __call__(self, value: bytes) -> bytes:
        if value.isdigit() and 12 <= len(value) <= 19:  # (bytes: ASCII digits only) the common case, fast
            return self._number(value.decode()).encode()
        text = decode(value)
        if _CARD.fullmatch(text) and 12 <= sum(c.isdigit() for c in text) <= 19:
            # the same number masks alike however it is grouped
            return regroup(self._number(re.sub(r"[^0-9]", "", text)), text).encode()  # ASCII: nothing to escape
        return encode(_moved(text, self._stream(text)))

    def native(self) -> tuple:
        return ("card", self.subkey)  # numbers in the kernel (_kernel.c, do_card); anything else comes back here

    def _number(self, digits: str) -> str:
        stream = self._stream(digits)
        return with_check_digit(digits[0] + "".join([_MOVE[ord(c) - 48][b] for c, b in zip(digits[1:-1], stream,
                                                                                            strict=False)]))

    def _stream(self, v: str) -> bytes:
        return hashlib.shake_256(self.subkey + b"card\0" + v.encode()).digest(len(v) + 8)  # a byte per character

    def could_emit(self, value: bytes) -> bool:
        """Text without a digit or an ASCII letter comes out as it went in."""
        return not re.search(r"[0-9A-Za-z]", decode(value))
