from prodclone.masking.copytext import NULL
from prodclone.masking.transforms.base import Transform, register


@register
class Null(Transform):
    name = "null"
    description = "Replace every value with NULL (the column must be nullable)."
    examples = ({"transform": "null"},)
    guarantees_unique = True  # NULLs never collide in a UNIQUE index
    null_output = "always"

    def __call__(self, value: bytes) -> bytes:
        return NULL
