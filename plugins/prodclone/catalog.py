"""The source schema as prodclone needs it: tables, columns, keys, partitions."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

EXCLUDED_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast")

# How rules and reports name a table: ``schema.table``, each part written as it
# is, except that a part containing a dot or a double quote, or empty, or with
# leading/trailing spaces, is double-quoted with quotes doubled ("a.b"."x""y").
# So every legal Postgres name can be named, and ordinary names read naturally.
_PART = r'"(?:[^"]|"")*"|[^."]+'
QUALIFIED_PATTERN = rf"^(?:{_PART})\.(?:{_PART})$"
_QUALIFIED = re.compile(rf"^({_PART})\.({_PART})$")
_NEEDS_QUOTES = re.compile(r'[."]|^\s|\s$|^$')


def quote_part(part: str) -> str:
    return '"' + part.replace('"', '""') + '"' if _NEEDS_QUOTES.search(part) else part


def qualified_name(schema: str, rel: str) -> str:
    """The canonical rules key of ``schema``.``rel``."""
    return f"{quote_part(schema)}.{quote_part(rel)}"


def split_qualified(name: str) -> tuple[str, str]:
    """(schema, table) of a rules key; raises ValueError if it is not ``schema.table``."""
    m = _QUALIFIED.match(name)
    if not m:
        raise ValueError(f"{name!r} is not a schema-qualified table name (schema.table; quote parts holding "
                         f'a dot or a quote: "my.schema"."my""table")')
    return tuple(p[1:-1].replace('""', '"') if p.startswith('"') else p for p in m.groups())


_CATEGORIES = {
    "text": ("text", "character varying", "character", "citext", "name", "bpchar", "varchar"),
    "number": ("smallint", "integer", "bigint", "numeric", "real", "double precision", "money"),
    "temporal": ("date", "timestamp without time zone", "timestamp with time zone"),
    "json": ("json", "jsonb"),
    "bool": ("boolean",),
}


def type_category(type_name: str) -> str:
    base = type_name.split("(")[0].strip()
    if base.endswith("[]"):
        return "array"
    for cat, names in _CATEGORIES.items():
        if base in names:
            return cat
    return "other"


@dataclass
class Column:
    name: str
    type: str
    not_null: bool
    unique: bool = False  # part of a PK, UNIQUE constraint or unique index
    base_type: str = ""  # the underlying type of a domain

    @property
    def category(self) -> str:
        return type_category(self.base_type or self.type)


@dataclass
class ForeignKey:
    columns: list[str]
    ref_table: str
    ref_columns: list[str]


@dataclass
class Table:
    name: str  # schema-qualified, e.g. public.users
    kind: str  # "table" or "partitioned"
    columns: list[Column]
    primary_key: list[str] = field(default_factory=list)
    foreign_keys: list[ForeignKey] = field(default_factory=list)
    est_rows: int = 0

    def column(self, name: str) -> Column | None:
        return next((c for c in self.columns if c.name == name), None)

    @property
    def qualified(self) -> str:
        schema, _, rel = self.name.partition(".")
        return f'"{schema}"."{rel}"'

    @property
    def ident(self) -> sql.Identifier:
        """The table as a psycopg.sql identifier, safe for any name."""
        return sql.Identifier(*split_qualified(self.name))


@dataclass
class Catalog:
    tables: dict[str, Table]
    sequences: list[str]

    def table(self, name: str) -> Table | None:
        return self.tables.get(name)


def load_catalog(conn: psycopg.Connection) -> Catalog:
    """Read the catalog inside ``conn``'s current transaction (snapshot)."""
    tables: dict[str, Table] = {}
    rows = conn.execute(
        """
        SELECT c.oid, n.nspname || '.' || c.relname, c.relkind, greatest(c.reltuples, 0)::bigint
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
           AND n.nspname <> ALL(%s) AND n.nspname NOT LIKE 'pg_temp%%'
           AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e')
         ORDER BY 2
        """,
        (list(EXCLUDED_SCHEMAS),),
    ).fetchall()
    by_oid = {}
    for oid, name, relkind, est in rows:
        t = Table(name=name, kind="partitioned" if relkind == "p" else "table", columns=[], est_rows=est)
        tables[name] = t
        by_oid[oid] = t
    if not by_oid:
        return Catalog(tables={}, sequences=[])
    oids = list(by_oid)
    for oid, attname, typ, notnull, base in conn.execute(
        """
        SELECT a.attrelid, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
               format_type(coalesce(nullif(t.typbasetype, 0), a.atttypid), NULL)
          FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
         WHERE a.attrelid = ANY(%s) AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
         ORDER BY a.attrelid, a.attnum
        """,
        (oids,),
    ):
        by_oid[oid].columns.append(Column(attname, typ, notnull, base_type=base))
    # Unique columns: any column of a PK, UNIQUE constraint or unique index.
    for oid, cols, is_pk in conn.execute(
        """
        SELECT i.indrelid, array_agg(a.attname ORDER BY a.attnum), bool_or(i.indisprimary)
          FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
         WHERE i.indrelid = ANY(%s) AND i.indisunique
         GROUP BY i.indexrelid, i.indrelid
        """,
        (oids,),
    ):
        t = by_oid[oid]
        for c in t.columns:
            if c.name in cols:
                c.unique = True
        if is_pk:
            t.primary_key = list(cols)
    for oid, cols, ref_name, ref_cols in conn.execute(
        """
        SELECT con.conrelid,
               (SELECT array_agg(a.attname ORDER BY k.i) FROM unnest(con.conkey) WITH ORDINALITY k(n, i)
                  JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n),
               rn.nspname || '.' || rc.relname,
               (SELECT array_agg(a.attname ORDER BY k.i) FROM unnest(con.confkey) WITH ORDINALITY k(n, i)
                  JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.n)
          FROM pg_constraint con
          JOIN pg_class rc ON rc.oid = con.confrelid JOIN pg_namespace rn ON rn.oid = rc.relnamespace
         WHERE con.contype = 'f' AND con.conrelid = ANY(%s) AND con.conparentid = 0
        """,
        (oids,),
    ):
        by_oid[oid].foreign_keys.append(ForeignKey(list(cols), ref_name, list(ref_cols)))
    # Partitioned parents report reltuples -1/0: sum their leaves instead.
    for t in tables.values():
        if t.kind == "partitioned":
            t.est_rows = conn.execute(
                "SELECT coalesce(sum(greatest(c.reltuples, 0)), 0)::bigint FROM pg_partition_tree(%s::regclass) p "
                "JOIN pg_class c ON c.oid = p.relid WHERE p.isleaf",
                (t.qualified,),
            ).fetchone()[0]
    sequences = [
        r[0]
        for r in conn.execute(
            """
            SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname)
              FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind = 'S' AND n.nspname <> ALL(%s)
               AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e')
             ORDER BY 1
            """,
            (list(EXCLUDED_SCHEMAS),),
        )
    ]
    return Catalog(tables=tables, sequences=sequences)
