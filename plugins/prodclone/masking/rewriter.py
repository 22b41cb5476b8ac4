"""The COPY-stream rewriter: applies a table's rules to COPY text, row by row,
in bounded memory. Tables whose rules are all ``keep`` pass through untouched."""

from __future__ import annotations

import json
from collections.abc import Callable

from prodclone.catalog import Table, column_name
from prodclone.errors import RulesError, UncoveredValue
from prodclone.masking import kernel
from prodclone.masking.copytext import NULL
from prodclone.masking.rules import Masking, build_transform
from prodclone.masking.transforms import Transform
from prodclone.masking.transforms.template import render_order

# Per table, shared by its cached columns: low-cardinality columns (cities, names,
# statuses) hit it almost always; counting bytes (keys, values and each entry's own
# overhead), not entries, keeps memory flat however large the values are.
CACHE_BYTES = 64 * 1024 * 1024
ENTRY_OVERHEAD = 200  # two bytes objects and a dict slot, roughly


def _cached(fn: Callable[[bytes], bytes], limit: int) -> Callable[[bytes], bytes]:
    """``fn`` remembering its results in at most ``limit`` bytes; when full, it starts over."""
    cache: dict[bytes, bytes] = {}
    size = 0

    def run(v: bytes) -> bytes:
        nonlocal size
        out = cache.get(v)
        if out is None:
            out = fn(v)
            cost = len(v) + len(out) + ENTRY_OVERHEAD
            if size + cost > limit:
                cache.clear()
                size = 0
            if cost <= limit:
                cache[v] = out
                size += cost
        return out

    run.cache = cache  # for tests of the accounting
    return run


class TableMasker:
    _built: dict[tuple, TableMasker] = {}

    @classmethod
    def shared(cls, table: Table, masking: Masking) -> TableMasker:
        """One masker per table, rules and key in a process: the units of a split table (and a worker's next
        unit) reuse its pools, compiled rules and caches instead of building them again."""
        rules = masking.rules
        rule = rules.tables.get(table.name)
        specs = json.dumps(rule.columns if rule else None, sort_keys=True, default=str)  # the rules as they are now
        ident = (table.name, tuple((c.name, c.type) for c in table.columns), specs, rules.locale, rules.pool_size,
                 masking.fingerprint, kernel.enabled())
        if ident not in cls._built:
            if len(cls._built) >= 32:
                cls._built.clear()
            cls._built[ident] = cls(table, masking)
        return cls._built[ident]

    def __init__(self, table: Table, masking: Masking):
        rule = masking.rules.tables.get(table.name)
        if rule is None:
            raise RulesError(f"no rules for table {table.name}")
        self.table = table
        self.columns = [c.name for c in table.columns]
        index = {name: i for i, name in enumerate(self.columns)}
        self.transforms: dict[str, Transform] = {}
        ctx = masking.context()
        for col in table.columns:
            spec = rule.columns.get(col.name)
            if spec is None:
                raise RulesError(f"{table.name}.{col.name} ({col.type}) has no rule")
            self.transforms[col.name] = build_transform(spec, ctx, where=f"{table.name}.{col.name}")
        # Per value, in any order; unique transforms tag every value, so a cache would never hit.
        per_value = {n: t for n, t in self.transforms.items() if t.masks and not t.row_level}
        share = CACHE_BYTES // max(1, sum(not t.unique for t in per_value.values()))
        simple = [(index[n], t if t.unique else _cached(t, share), rule.columns[n].get("nulls") == "mask")
                  for n, t in per_value.items()]
        self.simple = simple
        # Templates last, in dependency order: each sees masked and already rendered values only.
        self.row_level = []
        for name in render_order(table.name, rule.columns, index):
            t = self.transforms[name]
            t.bind(index)
            self.row_level.append((index[name], t.render, rule.columns[name].get("nulls") == "mask"))
        self.passthrough = not simple and not self.row_level
        self.masked_columns = [n for n, t in self.transforms.items() if t.masks]
        self.kernel = kernel.compile_table(self) if kernel.enabled() and not self.passthrough else None

    def mask_line(self, line: bytes) -> bytes:
        f = line.split(b"\t")
        try:
            for i, fn, mask_nulls in self.simple:
                v = f[i]
                if v != NULL:
                    f[i] = fn(v)
                elif mask_nulls:
                    f[i] = fn(b"")
        except UncoveredValue as exc:  # the transform says what; name where, never the value
            raise UncoveredValue(f"{column_name(self.table.name, self.columns[i])}: {exc}") from None
        return self.render_rows(f)

    def render_rows(self, f: list[bytes]) -> bytes:
        """The row's templates rendered from its masked fields, and the row joined."""
        try:
            for i, render, mask_nulls in self.row_level:  # f[i] is still this column's original
                v = f[i]
                if v != NULL or mask_nulls:
                    f[i] = render(v, f)
        except UncoveredValue as exc:
            raise UncoveredValue(f"{column_name(self.table.name, self.columns[i])}: {exc}") from None
        return b"\t".join(f)

    def mask_block(self, block: bytes) -> bytes:
        """COPY text lines, each ending in a newline, masked: by the kernel when it is built."""
        if self.passthrough:
            return block
        if self.kernel is not None:
            return self.kernel.mask_block(block)
        if block and not block.endswith(b"\n"):
            raise ValueError("COPY data does not end with a newline")
        return b"".join([self.mask_line(line) + b"\n" for line in block.split(b"\n")[:-1]])
