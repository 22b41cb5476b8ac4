"""Does masking keep the statistics query plans and load tests depend on? Per masked column, the same
sample of source rows is measured before and after masking (masking is a function of the value, so
the masked sample is exactly what the export writes for those rows): distinct values (estimated for
the whole table as ANALYZE does), null fraction, average width, and the most common value's share.
Reports name the column and the figures, never a value."""

from __future__ import annotations

import collections
import logging
from dataclasses import dataclass

from psycopg import sql

from prodclone.catalog import Catalog, Table, column_name, load_catalog
from prodclone.db import connect_source, pin_search_path
from prodclone.masking.copytext import NULL
from prodclone.masking.rewriter import TableMasker
from prodclone.masking.rules import Masking

log = logging.getLogger(__name__)

SAMPLE_ROWS = 30_000  # what ANALYZE reads at the default statistics target
DISTINCT_BOUND = 0.10
WIDTH_BOUND = 0.20
COMMON_BOUND = 0.10  # relative, on a most common value holding at least COMMON_FLOOR of the rows
COMMON_FLOOR = 0.01


@dataclass(frozen=True)
class Shape:
    n_distinct: float  # estimated over the table's non-null rows
    null_frac: float
    avg_width: float  # bytes of COPY text, non-null values
    top_freq: float  # share of all rows holding the most common value
    distinct_in_sample: int
    non_null_in_sample: int


def shape(values: list[bytes], table_rows: float) -> Shape:
    """The statistics of one column's sampled COPY fields; distinct values estimated for ``table_rows``
    with the Haas-Stokes estimator ANALYZE uses."""
    present = [v for v in values if v != NULL]
    counts = collections.Counter(present)
    n, d = len(present), len(counts)
    null_frac = 1 - n / len(values) if values else 0.0
    total = max(table_rows * (1 - null_frac), n)
    singles = sum(1 for c in counts.values() if c == 1)
    if n and singles == n:
        estimate = total
    elif n:
        estimate = min(total, max(d, n * d / (n - singles + singles * n / total)))
    else:
        estimate = 0.0
    return Shape(estimate, null_frac, sum(map(len, present)) / n if n else 0.0,
                 max(counts.values(), default=0) / len(values) if values else 0.0, d, n)


@dataclass(frozen=True)
class ColumnReport:
    column: str
    source: Shape
    masked: Shape
    unique: bool
    problems: tuple[str, ...]

    def figures(self) -> str:
        s, m = self.source, self.masked
        return (f"distinct ~{s.n_distinct:,.0f} -> ~{m.n_distinct:,.0f}, nulls {s.null_frac:.1%} -> "
                f"{m.null_frac:.1%}, width {s.avg_width:.1f} -> {m.avg_width:.1f}, most common value "
                f"{s.top_freq:.1%} -> {m.top_freq:.1%}")

    def line(self, failed: str = "FAIL") -> str:
        return f"{failed if self.problems else 'ok  '} {self.column}: {self.figures()}" + (
            f"  [{'; '.join(self.problems)}]" if self.problems else "")

    def record(self) -> dict:
        """The figures as the verification record keeps them: [source, masked] per statistic."""
        s, m = self.source, self.masked
        return {"distinct": [round(s.n_distinct), round(m.n_distinct)], "null_frac": [round(s.null_frac, 4),
                round(m.null_frac, 4)], "avg_width": [round(s.avg_width, 1), round(m.avg_width, 1)],
                "top_freq": [round(s.top_freq, 4), round(m.top_freq, 4)], "unique": self.unique,
                "non_null_in_sample": s.non_null_in_sample}


def _off(before: float, after: float, bound: float) -> bool:
    return abs(after - before) > bound * before


def compare(source: Shape, masked: Shape, unique: bool) -> tuple[str, ...]:
    """What is out of bounds, in words a data engineer can act on."""
    problems = []
    if unique and masked.distinct_in_sample != masked.non_null_in_sample:
        problems.append("a unique column lost distinct values: give the rule unique: true")
    if _off(source.n_distinct, masked.n_distinct, DISTINCT_BOUND):
        problems.append(f"distinct values {masked.n_distinct / source.n_distinct - 1:+.0%} (bound "
                        f"±{DISTINCT_BOUND:.0%}): the rule maps many values to one (pool_only or a small pool, a "
                        "redaction keeping few characters, a short format such as 5-digit postcodes)")
    if source.null_frac != masked.null_frac:
        problems.append("null fraction changed: the rule turns values into NULL or NULL into values")
    if _off(source.avg_width, masked.avg_width, WIDTH_BOUND):
        problems.append(f"average width {masked.avg_width / source.avg_width - 1:+.0%} (bound ±{WIDTH_BOUND:.0%}): "
                        "choose a provider or args whose values are as long as the column's")
    if source.top_freq >= COMMON_FLOOR and _off(source.top_freq, masked.top_freq, COMMON_BOUND):
        problems.append(f"the most common value's share moved {source.top_freq:.1%} -> {masked.top_freq:.1%}")
    return tuple(problems)


def sample_lines(conn, table: Table, columns: list[str], rows: int = SAMPLE_ROWS) -> list[bytes]:
    """About ``rows`` random rows of ``table`` as COPY lines of ``columns``."""
    pct = min(100.0, max(0.0001, 100.0 * rows / max(table.est_rows, 1)))
    query = sql.SQL("COPY (SELECT {} FROM {} TABLESAMPLE BERNOULLI ({}) LIMIT {}) TO STDOUT").format(
        sql.SQL(", ").join(map(sql.Identifier, columns)), table.scan, sql.Literal(pct), sql.Literal(rows))
    with conn.cursor().copy(query) as copy:
        return [bytes(r)[:-1] for r in copy]


def table_shapes(conn, table: Table, masking: Masking, rows: int = SAMPLE_ROWS) -> list[ColumnReport]:
    """Every masked column of ``table`` (but those a rule empties on purpose): source and masked statistics
    over one sample of rows."""
    masker = TableMasker(table, masking)
    if masker.passthrough or masking.rules.tables[table.name].skip:
        return []
    lines = sample_lines(conn, table, masker.columns, rows)
    if not lines:
        return []
    before = list(zip(*(line.split(b"\t") for line in lines), strict=True))
    after = list(zip(*(masker.mask_line(line).split(b"\t") for line in lines), strict=True))
    total = max(table.est_rows, len(lines))
    out = []
    for i, col in enumerate(table.columns):
        if col.name in masker.masked_columns and masker.transforms[col.name].null_output != "always":
            s, m = shape(list(before[i]), total), shape(list(after[i]), total)
            unique = col.unique and s.distinct_in_sample == s.non_null_in_sample  # of a multi-column key, maybe not alone
            out.append(ColumnReport(column_name(table.name, col.name), s, m, unique, compare(s, m, unique)))
    return out


def check_shapes(conn, catalog: Catalog, masking: Masking, rows: int = SAMPLE_ROWS) -> list[ColumnReport]:
    return [r for name in sorted(catalog.tables) if name in masking.rules.tables
            for r in table_shapes(conn, catalog.tables[name], masking, rows)]


def export_statistics(source_dsn: str, manifest: dict, masking: Masking, rows: int = SAMPLE_ROWS) -> dict:
    """The verify step's comparison, for the tables ``manifest`` exported: per masked column, the figures of
    one source sample before and after masking with the export's own rules and key (so exactly what the export
    wrote for those rows). Columns out of bounds are warnings: logged and recorded, never a failure."""
    exported = {t["name"] for t in manifest["tables"] if not t["skipped"]}
    with connect_source(source_dsn) as conn:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        catalog = load_catalog(conn)
        pin_search_path(conn)
        reports = [r for name in sorted(exported & set(catalog.tables)) if name in masking.rules.tables
                   for r in table_shapes(conn, catalog.tables[name], masking, rows)]
    outside = {r.column: list(r.problems) for r in reports if r.problems}
    for r in reports:
        if r.problems:
            log.warning("statistics: %s", r.line("WARN"))
        else:
            log.info("statistics: %s", r.line())
    log.info("statistics: %d of %d masked columns within bounds (sample of up to %d rows per table)",
             len(reports) - len(outside), len(reports), rows)
    return {"sample_rows": rows, "columns_compared": len(reports), "within_bounds": len(reports) - len(outside),
            "outside_bounds": outside, "columns": {r.column: r.record() for r in reports}}
