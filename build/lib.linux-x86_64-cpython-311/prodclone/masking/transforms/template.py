import math
import string
from collections.abc import Collection
from graphlib import CycleError, TopologicalSorter

from prodclone.catalog import column_name
from prodclone.errors import RulesError
from prodclone.masking.copytext import NULL, decode, encode
from prodclone.masking.transforms.base import Transform, register
from prodclone.masking.transforms.outputs import TEXT, Output


def template_fields(template: str) -> list[str]:
    """The column names a template references, e.g. ['first', 'last'] for '{first}.{last}'."""
    try:
        return [f for _, f, _, _ in string.Formatter().parse(template) if f]
    except ValueError as exc:
        raise RulesError(f"bad template {template!r}: {exc}") from None


def render_order(table: str, specs: dict[str, dict], columns: Collection[str]) -> list[str]:
    """The table's template columns, each after the template columns it references, so every
    template renders from masked values only. Refuses what would need an original: a template
    naming itself, a column the table lacks, or templates referencing each other in a cycle.
    ``specs``: column -> rule of ``table`` (rules for columns not in ``columns`` are ignored)."""
    refs = {c: template_fields(s["template"]) for c, s in specs.items()
            if c in columns and s["transform"] == "template"}
    for col, fields in refs.items():
        where = f"{column_name(table, col)}: template {specs[col]['template']!r}"
        if col in fields:
            raise RulesError(f"{where} references its own column {{{col}}}; a template only sees masked values, "
                             "so it cannot use its own: reference other columns")
        unknown = [f for f in fields if f not in columns]
        if unknown:
            raise RulesError(f"{where} references {', '.join(f'{{{f}}}' for f in unknown)}, "
                             f"which {table} does not have (renamed or dropped?)")
    try:
        return list(TopologicalSorter({c: [f for f in fields if f in refs] for c, fields in refs.items()}).static_order())
    except CycleError as exc:
        cycle = " -> ".join(f"{{{c}}}" for c in reversed(exc.args[1]))
        raise RulesError(f"{table}: templates reference each other in a cycle ({cycle}); "
                         "break it so one of them references only non-template columns") from None


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
    examples = ({"transform": "template", "template": "{first_name}.{last_name}@example.com", "lower": True},
                {"transform": "template", "template": "{first_name} {last_name}", "unique": True})
    unique_changes_output = True
    row_level = True

    def setup(self) -> None:
        self.template = self.spec["template"]
        self.fields = template_fields(self.template)
        self.lower = self.spec.get("lower", False)
        self.indexes: dict[str, int] = {}

    def output(self, lengths) -> Output:
        """Text as long as its literal parts and the longest masked values it names, plus the tag;
        a format spec or conversion ({x:>99}, {x!r}) could make it any length."""
        parts = list(string.Formatter().parse(self.template))
        if any(spec or conv for _, field, spec, conv in parts if field):
            return Output(frozenset({TEXT}), math.inf)
        longest = sum(len(text) for text, *_ in parts) + sum(lengths.get(f, math.inf) for f in self.fields)
        longest *= 2 if self.lower else 1  # lower() may double a character (İ -> i̇), never more
        return Output(frozenset({TEXT}), longest + (21 if self.unique else 0))  # "." and the tag

    def bind(self, column_index: dict[str, int]) -> None:
        """Where each referenced column sits in a row; render_order has checked they all exist."""
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
