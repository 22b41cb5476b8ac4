import collections
import datetime as dt
import hashlib
import re

from prodclone.errors import UncoveredValue
from prodclone.masking.transforms.base import Transform, register
from prodclone.masking.transforms.outputs import Output

# PostgreSQL's ISO output: a year of 4+ digits, the time (and zone) if any, " BC" last.
_ISO = re.compile(rb"(\d{4,})-(\d\d)-(\d\d)( \d[^\t]*?)?( BC)?")
_INFINITE = (b"infinity", b"-infinity")
_CYCLE_DAYS = 146097  # the Gregorian calendar repeats every 400 years


def _to_day(year: int, month: int, day: int) -> int:
    """Day number of an astronomical year (0 is 1 BC) beyond Python's 1..9999, via 400-year cycles."""
    k = (year - 1) // 400
    return dt.date(year - 400 * k, month, day).toordinal() + k * _CYCLE_DAYS


def _from_day(n: int) -> tuple[int, int, int]:
    k = (n - 1) // _CYCLE_DAYS
    d = dt.date.fromordinal(n - k * _CYCLE_DAYS)
    return d.year + 400 * k, d.month, d.day


# PostgreSQL's range: from 4714-11-24 BC (Julian day 0) to 5874897-12-31 (date), 294276-12-31 (timestamps).
_FIRST_DAY = _to_day(-4713, 11, 24)
_LAST_DAY = {False: _to_day(5874897, 12, 31), True: _to_day(294276, 12, 31)}


@register
class DateShift(Transform):
    name = "date_shift"
    description = ("Shift a date/timestamp by a deterministic, never-zero number of days within +/- days; time of day "
                   "is kept. Days move as a keyed permutation, so distinct dates stay distinct (and equal ones equal).")
    params = {"days": {"type": "integer", "minimum": 1, "maximum": 36500, "description": "Maximum shift (default 30)."}}
    examples = ({"transform": "date_shift"}, {"transform": "date_shift", "days": 180})
    categories = frozenset({"temporal"})
    can_be_unique = False
    may_equal_inputs = True  # a shifted date is just another date, maybe another row's

    def setup(self) -> None:
        self.days = self.spec.get("days", 30)
        self._cycles: collections.OrderedDict[tuple[int, int], list[int]] = collections.OrderedDict()

    def _cycle(self, block: int, size: int) -> list[int]:
        """A block's days in a keyed order: each day moves to the next one in it (the last to the first). One
        cycle through the whole block, so no day stays; a bijection, so no two days meet. Bounded cache."""
        if (block, size) not in self._cycles:
            if len(self._cycles) >= 4096:
                self._cycles.popitem(last=False)
            rank = [hashlib.blake2b(b"%d:%d" % (block, p), key=self.subkey, digest_size=8, person=b"date-cycle").digest()
                    for p in range(size)]
            order = sorted(range(size), key=rank.__getitem__)
            nxt = [0] * size
            for i, p in enumerate(order):
                nxt[p] = order[(i + 1) % size]
            self._cycles[(block, size)] = nxt
        return self._cycles[(block, size)]

    def output(self, lengths) -> Output:
        return Output()  # a date or timestamp of the input's type, within PostgreSQL's range

    def __call__(self, value: bytes) -> bytes:
        if value in _INFINITE:  # a sentinel shared by many rows: it identifies nobody
            return value
        m = _ISO.fullmatch(value)
        try:
            year, month, day = int(m[1]), int(m[2]), int(m[3])
            n = _to_day(1 - year if m[5] else year, month, day)
        except (TypeError, ValueError):  # no match, or no such day
            raise UncoveredValue("date_shift cannot read a value as an ISO date or timestamp; "
                                 "export with DateStyle ISO") from None
        # Blocks of days + 1 days from the first day PostgreSQL has: a day moves within its block, at most
        # ``days`` either way. A keyed offset per value instead merged ~1/3 of distinct dates (a date column is
        # dense: 20,000 birth dates in 55 years); a permutation keeps every distinct count, timestamps' too.
        width, last = self.days + 1, _LAST_DAY[m[4] is not None]
        block, pos = divmod(n - _FIRST_DAY, width)
        size = min(width, last - _FIRST_DAY - block * width + 1)
        offset = self._cycle(block, size)[pos] - pos if size > 1 else -1  # a last block of one day: back one
        year, month, day = _from_day(n + offset)
        era = b" BC" if year <= 0 else b""
        return b"%04d-%02d-%02d" % (1 - year if era else year, month, day) + (m[4] or b"") + era
