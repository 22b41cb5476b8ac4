"""Fail closed: every column of every table has a rule, rules name nothing that
is gone, and each rule fits its column (type, uniqueness, joins)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from prodclone.catalog import Catalog, Column, Table, column_name
from prodclone.errors import CoverageError, RulesError
from prodclone.masking import where as where_clause
from prodclone.masking.detect import element_column, suggest
from prodclone.masking.rules import Masking, build_transform
from prodclone.masking.transforms import Context, Transform, trait
from prodclone.masking.transforms.outputs import TEXT, Output
from prodclone.masking.transforms.template import render_order


@dataclass
class Problem:
    table: str
    column: str | None
    kind: str  # uncovered | unknown-table | unknown-column | invalid | missing-table
    message: str
    suggestion: dict | None = None

    def line(self) -> str:
        where = column_name(self.table, self.column) if self.column else self.table
        s = f"[{self.kind}] {where}: {self.message}"
        if self.suggestion:
            s += f"\n      suggested rule: {json.dumps(self.suggestion)}"
        return s


@dataclass
class Report:
    problems: list[Problem] = field(default_factory=list)
    masked_columns: int = 0
    kept_columns: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def text(self) -> str:
        if self.ok:
            return f"rules OK: {self.masked_columns} columns masked, {self.kept_columns} kept"
        return f"{len(self.problems)} problem(s):\n" + "\n".join("  " + p.line() for p in self.problems)

    def raise_if_failed(self) -> None:
        if not self.ok:
            names = ", ".join(column_name(p.table, p.column) if p.column else p.table for p in self.problems[:10])
            raise CoverageError(f"masking rules do not cover the source: {names}", self.text())


def check(catalog: Catalog, masking: Masking) -> Report:
    """Transforms are built (pools too) with ``masking``'s key: an export's own, so it reuses them."""
    rules, ctx = masking.rules, masking.context()
    report = Report()
    for tname, table in catalog.tables.items():
        rule = rules.tables.get(tname)
        if table.reaches_out:
            report.problems += _foreign_problems(tname, table, rule)
            continue
        if rule is None:
            report.problems.append(Problem(tname, None, "missing-table", "table has no rules (new table?); add it, or `skip: true`"))
            continue
        report.problems += _where_problems(tname, table, rule)
        keys = set(table.primary_key) | {c for fk in table.foreign_keys for c in fk.columns}
        built: dict[str, Transform] = {}
        for col in table.columns:
            spec = rule.columns.get(col.name)
            if spec is None:
                s, why = suggest(col, is_key=col.name in keys)
                report.problems.append(Problem(tname, col.name, "uncovered", f"{col.type}: no rule ({why})", s))
                continue
            t, err = _build(spec, ctx, where=column_name(tname, col.name))
            err = err or _check_rule(t, spec, col)
            if err:
                report.problems.append(Problem(tname, col.name, "invalid", err))
                continue
            built[col.name] = t
            if t.masks:
                report.masked_columns += 1
            else:
                report.kept_columns += 1
        order = []
        if not any(p.table == tname and trait(rule.columns.get(p.column), "row_level")
                   for p in report.problems):  # a malformed template is reported once, above
            try:  # templates must render from masked values only: no self-reference, unknown column or cycle
                order = render_order(tname, rule.columns, {c.name for c in table.columns})
            except RulesError as exc:
                report.problems.append(Problem(tname, None, "invalid", str(exc)))
        report.problems += _fit_problems(tname, table, built, order)
        for cname in rule.columns:
            if table.column(cname) is None:
                report.problems.append(Problem(tname, cname, "unknown-column", "rule names a column that does not exist (renamed or dropped?)"))
        # Masked FK columns must mask exactly like the column they reference, or joins break.
        for fk in table.foreign_keys:
            ref_rule = rules.tables.get(fk.ref_table)
            for c, rc in zip(fk.columns, fk.ref_columns, strict=True):
                mine = rule.columns.get(c)
                theirs = ref_rule.columns.get(rc) if ref_rule else None
                if mine and theirs and trait(mine, "null_output") != "always" and _canon(mine) != _canon(theirs):
                    report.problems.append(
                        Problem(tname, c, "invalid", f"references {column_name(fk.ref_table, rc)} but masks differently "
                                f"({json.dumps(mine)} vs {json.dumps(theirs)}); use the same rule so the foreign key holds")
                    )
    for tname in rules.tables:
        if tname not in catalog.tables:
            report.problems.append(Problem(tname, None, "unknown-table", "rules name a table that does not exist (renamed or dropped?)"))
    return report


def _foreign_problems(tname: str, table, rule) -> list[Problem]:
    """A foreign table, or a partitioned one with a foreign leaf, reads another server: nothing of it is
    exported, and its only rule says so."""
    what = ("foreign table" if table.kind == "foreign"
            else f"partitioned table with foreign partitions ({', '.join(table.foreign_partitions)})")
    if rule is None:
        return [Problem(tname, None, "missing-table", f"{what} has no rule; add {_FOREIGN_RULE}")]
    if not rule.skip or rule.where or rule.columns:
        return [Problem(tname, None, "invalid", f"is a {what}: its only rule is {_FOREIGN_RULE}, "
                        "without where or columns")]
    return []


_FOREIGN_RULE = ("`skip: true` (clones get an empty local table with its columns; the server, its user "
                 "mappings and the data stay behind)")


def _where_problems(tname: str, table, rule) -> list[Problem]:
    """A ``where`` reads only columns of its own table, and none whose type the source gave a cast."""
    if not rule.where:
        return []
    try:
        names = where_clause.columns(rule.where)
    except RulesError as exc:
        return [Problem(tname, None, "invalid", f"where {exc}")]
    problems = []
    for c in sorted(names):
        col = table.column(c)
        if col is None:
            problems.append(Problem(tname, c, "unknown-column", "the where names a column this table does not have"))
        elif col.source_casts:
            problems.append(Problem(tname, c, "invalid", f"the where reads a column of type {col.type}, which has a "
                                    "cast running a function the source schema defined; Postgres may apply it "
                                    "implicitly, running the source's code as the exporter. Filter on another "
                                    "column or drop the where"))
    return problems


def _canon(spec: dict) -> str:
    """A rule as far as its output goes: ``nulls`` aside, and ``unique`` where it changes nothing."""
    drop = {"nulls"} if trait(spec, "unique_changes_output") is not False else {"nulls", "unique"}
    return json.dumps({k: v for k, v in spec.items() if k not in drop}, sort_keys=True)


def _build(spec: dict, ctx: Context, where: str) -> tuple[Transform | None, str | None]:
    """The rule's transform, or why it cannot be built."""
    try:
        return build_transform(spec, ctx, where=where), None
    except RulesError as exc:
        return None, str(exc).removeprefix(where + ": ")


def _check_rule(t: Transform, spec: dict, col: Column) -> str | None:
    if t.categories is not None and col.category not in t.categories:
        return f"transform {t.name!r} does not fit type {col.type}" + _ARRAY_HINT.get(col.category, "")
    element = getattr(t, "element", None)  # an element-wise rule (elements): each element is a value of its own
    if element is not None:
        err = _element_problem(t, element, col)
        if err:
            return err
    if t.masks and col.unique and not t.guarantees_unique:
        if not t.can_be_unique:
            return f"column is UNIQUE but {t.name!r} cannot keep values distinct; use hash (length >= 20), email, or faker with unique: true"
        return "column is UNIQUE: add `unique: true` so masked values never collide"
    if t.null_output != "never" and col.not_null:
        return f"column is NOT NULL; {t.name!r} emits NULL, which would fail the load"
    if spec.get("nulls") == "mask" and t.masks and t.null_output == "never" and col.unique and not col.not_null:
        return ("column is UNIQUE and nullable, and nulls: mask turns every NULL into the same masked value, "
                "so two NULL rows would collide; drop nulls: mask (NULL stays NULL, which UNIQUE allows)")
    return None


_ARRAY_HINT = {"array": "; to mask each element, use {transform: elements, rule: <a rule for one element>}"}


def _element_problem(t: Transform, element: Transform, col: Column) -> str | None:
    """An element rule must fit the element type (with the array's typmod: varchar(20)[] holds 20
    characters an element), and split elements where the type does."""
    if t.delimiter != col.delimiter:
        return (f"elements of {col.type} are separated by {col.delimiter!r}, not {t.delimiter!r}: "
                f"add delimiter: {json.dumps(col.delimiter)} to the rule")
    elem = element_column(col)
    err = _check_rule(element, element.spec, elem) or _misfit(element, element.output({}), elem, _limit(elem))
    return f"element rule: {err}" if err else None


def _fit_problems(tname: str, table: Table, built: dict[str, Transform], order: list[str]) -> list[Problem]:
    """Masked values must load into their columns: the type, and the length its typmod allows. Templates
    come last, in render order, sized by the longest masked values they use."""
    lengths: dict[str, float] = {}
    problems = []
    for c in [c for c, t in built.items() if not t.row_level] + [c for c in order if c in built]:
        t, col = built[c], table.column(c)
        out = t.output(lengths)
        limit = _limit(col)
        lengths[c] = out.max_length if out.max_length is not None else _TEXT_WIDTH.get(_base(col), limit)
        err = _misfit(t, out, col, limit)
        if err:
            problems.append(Problem(tname, c, "invalid", err))
    return problems


def _base(col: Column) -> str:
    """The column's type without modifiers, as format_type names it (a domain's base type)."""
    return col.base_type or col.type.split("(")[0]


# The longest text of a value of these types, for templates using a kept column of one.
_TEXT_WIDTH = {"smallint": 6, "integer": 11, "bigint": 20, "uuid": 36, "boolean": 5, "date": 16,
               "timestamp without time zone": 31, "timestamp with time zone": 37}
_CHARS = {"character varying", "character", "varchar", "bpchar"}  # types whose typmod is a length + 4


def _limit(col: Column) -> float:
    """How long a value the column takes: characters for varchar(n)/char(n), the digits before the point
    for numeric(p,s); math.inf if unbounded."""
    if col.typmod < 4:
        return math.inf
    if _base(col) in _CHARS:
        return col.typmod - 4
    if _base(col) == "numeric":
        precision, scale = (col.typmod - 4) >> 16, ((col.typmod - 4) & 0x7FF ^ 0x400) - 0x400  # scale may be < 0
        return precision - scale
    return math.inf


def _misfit(t: Transform, out: Output, col: Column, limit: float) -> str | None:
    if out.types is None:  # the input's own type, no longer than it: fits where the input did
        return None
    if (TEXT if col.category == "text" else _base(col)) not in out.types:
        return (f"{t.name!r} emits {_kinds(out.types)}, which a {col.type} column cannot load; use a rule whose "
                f"output is a {col.type} (keep or null if it holds no personal data)"
                + _ARRAY_HINT.get(col.category, ""))
    if out.max_length is not None and out.max_length > limit:
        size = "values of any length" if out.max_length == math.inf else f"values up to {out.max_length:g} characters"
        return (f"{t.name!r} emits {size}, but {col.type} holds {limit:g}; use a shorter output (e.g. hash "
                f"with length <= {limit:g}) or widen the column in the source")
    return None


def _kinds(types: frozenset[str]) -> str:
    """What an output is, for messages: its types, text first."""
    rest = sorted(types - {TEXT})
    return "text" + (f" ({', '.join(rest)} too)" if rest else " only")


def ensure_covered(catalog: Catalog, masking: Masking) -> Report:
    report = check(catalog, masking)
    report.raise_if_failed()
    return report
