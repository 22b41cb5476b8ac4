"""The source schema as prodclone needs it: tables, columns, keys, partitions."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

EXCLUDED_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast")
FIRST_USER_OID = 16384  # Postgres's FirstNormalObjectId: every object initdb did not create has an oid from here

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


def column_name(table: str, column: str) -> str:
    """How reports name a column: ``table``'s key, a dot, the column quoted like a key part if it needs it."""
    return f"{table}.{quote_part(column)}"


def split_qualified(name: str) -> tuple[str, str]:
    """(schema, table) of a rules key; raises ValueError if it is not ``schema.table``."""
    m = _QUALIFIED.fullmatch(name) if isinstance(name, str) else None
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
    source_casts: bool = False  # its type, or one it is built from, has a cast running a function the source defined
    typmod: int = -1  # PostgreSQL's type modifier (its domain's, for a domain): varchar(n)'s n + 4, numeric's precision
    delimiter: str = ","  # what separates its array elements in text (pg_type.typdelim; box's is ';')

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
    name: str  # the canonical key from qualified_name(), e.g. public.users
    kind: str  # "table", "partitioned" or "foreign" (reads another server; never exported)
    columns: list[Column]
    primary_key: list[str] = field(default_factory=list)
    foreign_keys: list[ForeignKey] = field(default_factory=list)
    est_rows: int = 0
    foreign_partitions: list[str] = field(default_factory=list)  # of a partitioned table: leaves reading another server

    def column(self, name: str) -> Column | None:
        return next((c for c in self.columns if c.name == name), None)

    @property
    def ident(self) -> sql.Identifier:
        """The table as a psycopg.sql identifier, safe for any name."""
        return sql.Identifier(*split_qualified(self.name))

    @property
    def scan(self) -> sql.Composable:
        """The table as prodclone's queries read it: a partitioned table whole, any other ONLY itself, so an
        inheritance child (perhaps a foreign table) is read as its own table, never through its parent."""
        return self.ident if self.kind == "partitioned" else sql.SQL("ONLY {}").format(self.ident)

    @property
    def reaches_out(self) -> bool:
        """Would reading it read another server (a foreign table, or a partitioned one with a foreign leaf)?"""
        return self.kind == "foreign" or bool(self.foreign_partitions)


_KINDS = {"r": "table", "p": "partitioned", "f": "foreign"}


@dataclass
class Catalog:
    tables: dict[str, Table]
    sequences: list[str]  # canonical keys, like tables

    def table(self, name: str) -> Table | None:
        return self.tables.get(name)


def load_catalog(conn: psycopg.Connection) -> Catalog:
    """Read the catalog inside ``conn``'s current transaction (snapshot)."""
    tables: dict[str, Table] = {}
    # Not system schemas, not extension members, and no session's temporary
    # schema: another session's temp tables (and their serial sequences) cannot
    # be read at all, and a user cannot create pg_temp_* schemas to hide from this.
    rows = conn.execute(
        """
        SELECT c.oid, n.nspname, c.relname, c.relkind, greatest(c.reltuples, 0)::bigint
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE (c.relkind IN ('r', 'p', 'f') AND NOT c.relispartition OR c.relkind = 'S')
           AND n.nspname <> ALL(%s) AND NOT pg_is_other_temp_schema(n.oid) AND n.oid <> pg_my_temp_schema()
           AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e')
        """,
        (list(EXCLUDED_SCHEMAS),),
    ).fetchall()
    rows.sort(key=lambda r: qualified_name(r[1], r[2]))
    sequences = [qualified_name(schema, rel) for _, schema, rel, relkind, _ in rows if relkind == "S"]
    by_oid = {}
    for oid, schema, rel, relkind, est in rows:
        if relkind == "S":
            continue
        name = qualified_name(schema, rel)
        t = Table(name=name, kind=_KINDS[relkind], columns=[], est_rows=est)
        tables[name] = t
        by_oid[oid] = t
    if not by_oid:
        return Catalog(tables={}, sequences=sequences)
    oids = list(by_oid)
    cast_types = _types_with_source_casts(conn, oids)
    for oid, attname, typ, notnull, base, type_oid, typmod, delimiter in conn.execute(
        """
        SELECT a.attrelid, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
               format_type(coalesce(nullif(t.typbasetype, 0), a.atttypid), NULL), a.atttypid,
               CASE WHEN t.typbasetype <> 0 THEN t.typtypmod ELSE a.atttypmod END, t.typdelim
          FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
         WHERE a.attrelid = ANY(%s) AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
         ORDER BY a.attrelid, a.attnum
        """,
        (oids,),
    ):
        by_oid[oid].columns.append(Column(attname, typ, notnull, base_type=base, source_casts=type_oid in cast_types,
                                          typmod=typmod, delimiter=delimiter))
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
    for oid, cols, ref_schema, ref_rel, ref_cols in conn.execute(
        """
        SELECT con.conrelid,
               (SELECT array_agg(a.attname ORDER BY k.i) FROM unnest(con.conkey) WITH ORDINALITY k(n, i)
                  JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n),
               rn.nspname, rc.relname,
               (SELECT array_agg(a.attname ORDER BY k.i) FROM unnest(con.confkey) WITH ORDINALITY k(n, i)
                  JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.n)
          FROM pg_constraint con
          JOIN pg_class rc ON rc.oid = con.confrelid JOIN pg_namespace rn ON rn.oid = rc.relnamespace
         WHERE con.contype = 'f' AND con.conrelid = ANY(%s) AND con.conparentid = 0
        """,
        (oids,),
    ):
        by_oid[oid].foreign_keys.append(ForeignKey(list(cols), qualified_name(ref_schema, ref_rel), list(ref_cols)))
    # Partitioned parents report reltuples -1/0: sum their leaves instead. Note the foreign leaves.
    for oid, t in by_oid.items():
        if t.kind == "partitioned":
            leaves = conn.execute(
                "SELECT greatest(c.reltuples, 0)::bigint, c.relkind, n.nspname, c.relname "
                "FROM pg_partition_tree(%s::oid::regclass) p JOIN pg_class c ON c.oid = p.relid "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE p.isleaf",
                (oid,),
            ).fetchall()
            t.est_rows = sum(est for est, *_ in leaves)
            t.foreign_partitions = sorted(qualified_name(s, r) for _, kind, s, r in leaves if kind == "f")
    return Catalog(tables=tables, sequences=sequences)


def _types_with_source_casts(conn: psycopg.Connection, rel_oids: list[int]) -> set[int]:
    """The column types of ``rel_oids`` that an expression could convert with a cast whose function
    the source defined: theirs, or that of a type they are built from (domain base, array element,
    range subtype, composite field). Postgres applies such a cast implicitly (``lower(status)``), so
    a ``where`` reading the column could run the source's code as the exporter."""
    return {oid for (oid,) in conn.execute(
        """
        WITH RECURSIVE reach(root, typ) AS (
            SELECT DISTINCT atttypid, atttypid FROM pg_attribute WHERE attrelid = ANY(%(rels)s) AND attnum > 0
          UNION
            SELECT r.root, p.typ FROM reach r JOIN pg_type t ON t.oid = r.typ,
                   LATERAL (SELECT t.typbasetype WHERE t.typbasetype <> 0
                            UNION ALL SELECT t.typelem WHERE t.typelem <> 0
                            UNION ALL SELECT rngsubtype FROM pg_range WHERE rngtypid = t.oid
                            UNION ALL SELECT rngtypid FROM pg_range WHERE rngmultitypid = t.oid
                            UNION ALL SELECT atttypid FROM pg_attribute
                             WHERE attrelid = t.typrelid AND attnum > 0 AND NOT attisdropped) p(typ)
        )
        SELECT DISTINCT r.root FROM reach r JOIN pg_cast c
            ON r.typ = c.castsource OR r.typ = c.casttarget AND r.typ >= %(user)s  -- (text is many casts' target)
         WHERE c.castfunc >= %(user)s
        """,
        {"rels": rel_oids, "user": FIRST_USER_OID},
    )}
