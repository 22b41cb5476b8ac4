"""The COPY-stream rewriter: applies a table's rules to COPY text, row by row,
in bounded memory. Tables whose rules are all ``keep`` pass through untouched."""

from __future__ import annotations

from collections.abc import Callable

from prodclone.catalog import Table, column_name
from prodclone.errors import RulesError, UncoveredValue
from prodclone.masking.copytext import NULL
from prodclone.masking.rules import Rules, build_transform
from prodclone.masking.transforms import Transform
from prodclone.masking.transforms.template import render_order

# Per column: low-cardinality columns (cities, names, statuses) hit it almost
# always; the cap keeps memory flat however many rows stream through.
CACHE_LIMIT = 8192


def _cached(fn: Callable[[bytes], bytes]) -> Callable[[bytes], bytes]:
    cache: dict[bytes, bytes] = {}

    def run(v: bytes) -> bytes:
        out = cache.get(v)
        if out is None:
            out = fn(v)
            if len(cache) >= CACHE_LIMIT:
                cache.clear()
            cache[v] = out
        return out

    return run


class TableMasker:
    def __init__(self, table: Table, rules: Rules, key: bytes):
        rule = rules.tables.get(table.name)
        if rule is None:
            raise RulesError(f"no rules for table {table.name}")
        self.table = table
        self.columns = [c.name for c in table.columns]
        index = {name: i for i, name in enumerate(self.columns)}
        self.transforms: dict[str, Transform] = {}
        simple = []
        for col in table.columns:
            spec = rule.columns.get(col.name)
            if spec is None:
                raise RulesError(f"{table.name}.{col.name} ({col.type}) has no rule")
            t = build_transform(spec, rules.context(key), where=f"{table.name}.{col.name}")
            self.transforms[col.name] = t
            if t.masks and not t.row_level:
                fn = t if t.unique else _cached(t)
                simple.append((index[col.name], fn, spec.get("nulls") == "mask"))
        self.simple = simple
        # Templates last, in dependency order: each sees masked and already rendered values only.
        self.row_level = []
        for name in render_order(table.name, rule.columns, index):
            t = self.transforms[name]
            t.bind(index)
            self.row_level.append((index[name], t.render, rule.columns[name].get("nulls") == "mask"))
        self.passthrough = not simple and not self.row_level
        self.masked_columns = [n for n, t in self.transforms.items() if t.masks]

    def mask_line(self, line: bytes) -> bytes:
        f = line.split(b"\t")
        try:
            for i, fn, mask_nulls in self.simple:
                v = f[i]
                if v != NULL:
                    f[i] = fn(v)
                elif mask_nulls:
                    f[i] = fn(b"")
            for i, render, mask_nulls in self.row_level:  # f[i] is still this column's original
                v = f[i]
                if v != NULL or mask_nulls:
                    f[i] = render(v, f)
        except UncoveredValue as exc:  # the transform says what; name where, never the value
            raise UncoveredValue(f"{column_name(self.table.name, self.columns[i])}: {exc}") from None
        return b"\t".join(f)
