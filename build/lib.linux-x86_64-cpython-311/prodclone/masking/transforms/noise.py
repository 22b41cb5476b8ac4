from decimal import Decimal, InvalidOperation

from prodclone.masking import keys
from prodclone.masking.transforms.base import Transform, register
from prodclone.masking.transforms.outputs import Output

_INT_LIMITS = (2**15 - 1, 2**31 - 1, 2**63 - 1)


@register
class Noise(Transform):
    name = "noise"
    description = "Multiply a number by a deterministic factor in [1-relative, 1+relative]; integers stay integers."
    params = {"relative": {"type": "number", "exclusiveMinimum": 0, "maximum": 10, "description": "Default 0.1 (+/-10%)."}}
    examples = ({"transform": "noise"}, {"transform": "noise", "relative": 0.5})
    categories = frozenset({"number"})
    can_be_unique = False
    may_equal_inputs = True  # a noised number is just another number; rounding may even give its own

    def setup(self) -> None:
        self.rel = Decimal(str(self.spec.get("relative", 0.1)))

    def output(self, lengths) -> Output:
        return Output()  # a number of the input's scale and at most its magnitude class: see _fits_like

    @staticmethod
    def _fits_like(d: Decimal, out: Decimal) -> bool:
        """Whether ``out`` fits every type ``d`` fits: no more integer digits (numeric(p,s)) and not past
        an integer type's limit that ``d`` is within (smallint, integer, bigint)."""
        if out.copy_abs() <= d.copy_abs():
            return True
        if out.copy_abs().adjusted() > d.copy_abs().adjusted():
            return False
        return not any(abs(d) <= limit < abs(out) for limit in _INT_LIMITS)

    def __call__(self, value: bytes) -> bytes:
        try:
            d = Decimal(value.decode())
        except InvalidOperation:  # NaN / Infinity in numeric columns
            return value
        if not d.is_finite():
            return value
        u = Decimal(keys.h64(self.subkey, value) % 2_000_001 - 1_000_000) / 1_000_000
        exp = d.as_tuple().exponent
        out = self._scaled(d, u, exp)
        if not self._fits_like(d, out):  # would overflow a bounded type near its limit: shrink instead
            out = self._scaled(d, -abs(u), exp)
        return str(out).encode()

    def _scaled(self, d: Decimal, u: Decimal, exp) -> Decimal:
        out = d * (1 + u * self.rel)
        return out.quantize(Decimal(1).scaleb(exp)) if isinstance(exp, int) else out
