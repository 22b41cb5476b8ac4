import datetime as dt
import re

from prodclone.errors import UncoveredValue
from prodclone.masking import keys
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
    description = "Shift a date/timestamp by a deterministic, never-zero number of days within +/- days; time of day is kept."
    params = {"days": {"type": "integer", "minimum": 1, "maximum": 36500, "description": "Maximum shift (default 30)."}}
    examples = ({"transform": "date_shift"}, {"transform": "date_shift", "days": 180})
    categories = frozenset({"temporal"})
    can_be_unique = False
    may_equal_inputs = True  # a shifted date is just another date, maybe another row's

    def setup(self) -> None:
        self.days = self.spec.get("days", 30)

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
        k = keys.h64(self.subkey, value) % (2 * self.days)
        offset = k - self.days if k < self.days else k - self.days + 1  # in [-days, -1] U [1, days]
        if not _FIRST_DAY <= n + offset <= _LAST_DAY[m[4] is not None]:
            offset = -offset  # near either end of the range: the other way, never the original
        year, month, day = _from_day(n + offset)
        era = b" BC" if year <= 0 else b""
        return b"%04d-%02d-%02d" % (1 - year if era else year, month, day) + (m[4] or b"") + era
