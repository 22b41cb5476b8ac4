from prodclone.masking.copytext import decode
from prodclone.masking.transforms.base import Transform, register
from prodclone.masking.transforms.outputs import Output, of_values
from prodclone.masking.transforms.pools import text_pool, text_variants


@register
class FakerTransform(Transform):
    name = "faker"
    description = (
        "A realistic value from any Faker provider (first_name, phone_number, address, company, paragraph, ...). "
        "A pool of Faker values gives the templates; their digits or longest word are re-drawn by the keyed hash, "
        "so the column keeps its number of distinct values. pool_only: emit the pool's values verbatim (at most "
        "pool_size distinct), for small lookup-like columns."
    )
    params = {
        "provider": {"type": "string", "description": "A Faker provider method, e.g. first_name."},
        "args": {"type": "object", "description": "Keyword arguments for the provider."},
        "locale": {"type": "string"},
        "pool_size": {"type": "integer", "minimum": 16, "maximum": 1000000},
        "pool_only": {"type": "boolean", "description": "Only the pool's Faker values, verbatim (at most pool_size "
                      "distinct): for lookup-like columns such as job titles."},
    }
    required = ("provider",)
    examples = ({"transform": "faker", "provider": "first_name"},
                {"transform": "faker", "provider": "user_name", "unique": True},
                {"transform": "faker", "provider": "phone_number", "locale": "fr_FR", "pool_size": 64},
                {"transform": "faker", "provider": "job", "pool_only": True})
    unique_changes_output = True

    def setup(self) -> None:
        where = (self.spec["provider"], self.spec.get("args", {}), self.spec.get("locale", self.ctx.locale),
                 self.spec.get("pool_size", self.ctx.pool_size), self.subkey)
        self.pool = text_pool(*where)
        self.variants = None if self.spec.get("pool_only") else text_variants(*where)
        self._members = None

    def output(self, lengths) -> Output:
        values = self.variants.longest() if self.variants else map(decode, self.pool)
        return of_values(values, extra_length=21 if self.unique else 0)  # "-" and the tag

    def __call__(self, value: bytes) -> bytes:
        out = self.variants(self.subkey, value) if self.variants else self.pick(self.pool, value)
        if self.unique:  # the pool repeats; a keyed tag makes each distinct input distinct
            return out + b"-" + self.tag(value).encode()
        return out

    def native(self) -> tuple | None:
        if self.variants is None:
            return ("pick", self.subkey, self.unique, self.pool)
        frames = self.variants.native()
        return None if frames is None else ("variants", self.subkey, self.unique, frames)

    def could_emit(self, value: bytes) -> bool:
        if self._members is None:
            self._members = frozenset(self.pool)
        return value in self._members
