from prodclone.masking.copytext import decode, encode
from prodclone.masking.transforms.base import Transform, register
from prodclone.masking.transforms.outputs import Output, of_values


@register
class Constant(Transform):
    name = "constant"
    description = "Replace every value with the same constant."
    params = {"value": {"type": ["string", "number", "boolean"], "description": "The replacement, as text."}}
    required = ("value",)
    examples = ({"transform": "constant", "value": "redacted"}, {"transform": "constant", "value": 0})
    can_be_unique = False

    def setup(self) -> None:
        v = self.spec["value"]
        self.out = encode(str(v).lower() if isinstance(v, bool) else str(v))

    def native(self) -> tuple:
        return ("const", self.out)

    def __call__(self, value: bytes) -> bytes:
        return self.out

    def output(self, lengths) -> Output:
        return of_values([decode(self.out)])

    def could_emit(self, value: bytes) -> bool:
        return value == self.out
