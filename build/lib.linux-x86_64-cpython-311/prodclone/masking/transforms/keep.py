from prodclone.masking.transforms.base import Transform, register
from prodclone.masking.transforms.outputs import Output


@register
class Keep(Transform):
    name = "keep"
    description = "Copy the value unchanged. Use only for columns that hold no personal data."
    examples = ({"transform": "keep"},)
    masks = False
    may_equal_inputs = True

    def __call__(self, value: bytes) -> bytes:
        return value

    def output(self, lengths) -> Output:
        return Output()
