from prodclone.masking.copytext import NULL
from prodclone.masking.transforms.base import Transform, register


@register
class Null(Transform):
    name = "null"
    description = "Replace every value with NULL (the column must be nullable)."
    guarantees_unique = True  # NULLs never collide in a UNIQUE index

    def __call__(self, value: bytes) -> bytes:
        return NULL
