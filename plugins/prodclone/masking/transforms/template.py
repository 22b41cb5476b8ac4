import string

from prodclone.errors import RulesError
from prodclone.masking.copytext import NULL, decode, encode
from prodclone.masking.transforms.base import Transform, register


@register
class Template(Transform):
    name = "template"
    description = (
        "Build the value from other columns' MASKED values in the same row, "
        "e.g. '{first_name}.{last_name}@example.com'."
    )
    params = {
        "template": {"type": "string"},
        "lower": {"type": "boolean", "description": "Lower-case the result."},
    }
    required = ("template",)
    row_level = True

    def setup(self) -> None:
        self.template = self.spec["template"]
        try:
            self.fields = [f for _, f, _, _ in string.Formatter().parse(self.template) if f]
        except ValueError as exc:
            raise RulesError(f"bad template {self.template!r}: {exc}") from None
        self.lower = self.spec.get("lower", False)
        self.indexes: dict[str, int] = {}

    def bind(self, column_index: dict[str, int]) -> None:
        missing = [f for f in self.fields if f not in column_index]
        if missing:
            raise RulesError(f"template {self.template!r} names unknown column(s) {missing}")
        self.indexes = {f: column_index[f] for f in self.fields}

    def render(self, value: bytes, row: list[bytes]) -> bytes:
        vals = {f: ("" if row[i] == NULL else decode(row[i])) for f, i in self.indexes.items()}
        out = self.template.format(**vals)
        if self.lower:
            out = out.lower()
        if self.unique:
            local, at, domain = out.partition("@")
            out = f"{local}.{self.tag(value)}{at}{domain}"
        return encode(out)
