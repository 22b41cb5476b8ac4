import datetime as dt

from prodclone.masking import keys
from prodclone.masking.transforms.base import Transform, register


@register
class DateShift(Transform):
    name = "date_shift"
    description = "Shift a date/timestamp by a deterministic, never-zero number of days within +/- days; time of day is kept."
    params = {"days": {"type": "integer", "minimum": 1, "maximum": 36500, "description": "Maximum shift (default 30)."}}
    categories = frozenset({"temporal"})
    can_be_unique = False

    def setup(self) -> None:
        self.days = self.spec.get("days", 30)

    def __call__(self, value: bytes) -> bytes:
        head = value[:10]
        try:
            d = dt.date.fromisoformat(head.decode())
        except ValueError:  # infinity, BC dates and the like carry no identity
            return value
        k = keys.h64(self.subkey, value) % (2 * self.days)
        offset = k - self.days if k < self.days else k - self.days + 1  # in [-days, -1] U [1, days]
        try:
            return (d + dt.timedelta(days=offset)).isoformat().encode() + value[10:]
        except OverflowError:
            return value
