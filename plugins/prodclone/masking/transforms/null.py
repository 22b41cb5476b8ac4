from prodclone.masking.copytext import NULL
from prodclone.masking.transforms.base import Transform, register
from prodclone.masking.transforms.outputs import Output


@register
class Null(Transform):
    name = "null"
    description = "Replace every value with NULL (the column must be nullable)."
    examples = ({"transform": "null"},)
    guarantees_unique = True  # NULLs never collide in a UNIQUE index
    null_output = "always"

    def native(self) -> tuple:
        return ("const", NULL)

    def __call__(self, value: bytes) -> bytes:
        return NULL

    def output(self, lengths) -> Output:
        return Output()  # NULL, which every type takes (NOT NULL is null_output's)
