"""Subsetting with foreign-key closure: a table's rows are exported only if the
rows they reference are exported too, so the seed never violates a foreign key.

A table's effective filter is its own ``where`` AND, for every foreign key to a
filtered (or skipped) table, "the referenced row passes its own effective
filter". FKs whose columns are masked to NULL are ignored (no reference left).
"""

from __future__ import annotations

from psycopg import sql

from prodclone.catalog import Catalog
from prodclone.errors import RulesError
from prodclone.masking import where as where_clause
from prodclone.masking.rules import Rules
from prodclone.masking.transforms import trait


class Subsetter:
    def __init__(self, catalog: Catalog, rules: Rules):
        self.catalog = catalog
        self.rules = rules
        self._filtered: dict[str, bool] = {}

    def _own(self, table: str) -> str | None:
        """The table's own filter: always pglast's re-deparsed text of a checked ``where``
        (checked again here, so a rule built in code cannot bypass the check), never the author's."""
        rule = self.rules.tables.get(table)
        if rule is None:
            return None
        if rule.skip:
            return "false"
        if not rule.where:
            return None
        try:
            return f"({where_clause.normalize(rule.where)})"
        except RulesError as exc:
            raise RulesError(f"{table}: where {exc}") from None

    def _live_fks(self, table: str):
        rule = self.rules.tables[table]
        for fk in self.catalog.tables[table].foreign_keys:
            if fk.ref_table not in self.catalog.tables:
                continue
            if any(trait(rule.columns.get(c), "null_output") == "always" for c in fk.columns):
                continue
            yield fk

    def _casts(self, table: str, columns: list[str]) -> bool:
        """Could comparing these columns run a cast the source schema defined (catalog Column.source_casts)?"""
        return any(self.catalog.tables[table].column(c).source_casts for c in columns)

    def is_filtered(self, table: str, stack: tuple = ()) -> bool:
        """Does anything reachable through FKs drop rows?"""
        if table in self._filtered:
            return self._filtered[table]
        if table in stack:
            return False
        result = self._own(table) is not None or any(
            self.is_filtered(fk.ref_table, (*stack, table)) for fk in self._live_fks(table)
        )
        self._filtered[table] = result
        return result

    def filter_sql(self, table: str, alias: str = "t0", stack: tuple = ()) -> sql.Composable | None:
        """A WHERE clause for ``table`` (aliased ``alias``), or None for all rows."""
        conds = []
        own = self._own(table)
        if own:
            conds.append(sql.SQL(own))
        depth = len(stack) + 1
        for n, fk in enumerate(self._live_fks(table)):
            if not self.is_filtered(fk.ref_table):
                continue
            if fk.ref_table in (*stack, table):
                raise RulesError(
                    f"{table}: foreign key ({', '.join(fk.columns)}) -> {fk.ref_table} closes a cycle through a "
                    f"filtered table; subsetting cannot follow it. Mask the FK column with `null` or drop the `where`."
                )
            ref = self.catalog.tables[fk.ref_table]
            if self._casts(table, fk.columns) or self._casts(fk.ref_table, fk.ref_columns):
                raise RulesError(
                    f"{table}: foreign key ({', '.join(fk.columns)}) -> {fk.ref_table} compares columns through a cast "
                    f"running a function the source schema defined; subsetting cannot follow it without running the "
                    f"source's code. Mask the FK column with `null` or drop the `where`."
                )
            p = f"t{depth}_{n}"
            join = sql.SQL(" AND ").join(
                sql.SQL("{} = {}").format(sql.Identifier(p, rc), sql.Identifier(alias, c))
                for c, rc in zip(fk.columns, fk.ref_columns, strict=True)
            )
            inner = self.filter_sql(fk.ref_table, p, (*stack, table))
            if inner is not None:
                join = sql.SQL("{} AND {}").format(join, inner)
            nulls = sql.SQL(" OR ").join(sql.SQL("{} IS NULL").format(sql.Identifier(alias, c)) for c in fk.columns)
            conds.append(sql.SQL("({} OR EXISTS (SELECT 1 FROM {} {} WHERE {}))").format(
                nulls, ref.scan, sql.Identifier(p), join))
        return sql.SQL(" AND ").join(conds) if conds else None
