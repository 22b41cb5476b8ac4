from decimal import Decimal, InvalidOperation

from prodclone.masking import keys
from prodclone.masking.transforms.base import Transform, register
from prodclone.masking.transforms.outputs import Output


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
        return Output()  # a number of the input's scale (a value near a bounded type's limit may overflow it)

    def __call__(self, value: bytes) -> bytes:
        try:
            d = Decimal(value.decode())
        except InvalidOperation:  # NaN / Infinity in numeric columns
            return value
        if not d.is_finite():
            return value
        u = Decimal(keys.h64(self.subkey, value) % 2_000_001 - 1_000_000) / 1_000_000
        out = d * (1 + u * self.rel)
        exp = d.as_tuple().exponent
        out = out.quantize(Decimal(1).scaleb(exp)) if isinstance(exp, int) else out
        return str(out).encode()
