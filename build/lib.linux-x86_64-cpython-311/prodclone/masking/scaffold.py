"""Write a complete rules file for a schema: likely-PII columns get a masking
rule, everything else ``keep`` with a comment saying why."""

from __future__ import annotations

import functools
import math
import re

import yaml
from psycopg import sql

from prodclone.catalog import Catalog, Column, Table, column_name
from prodclone.masking.detect import element_column, identifies, suggest, suggest_json
from prodclone.masking.evidence import IMAGE_HEAD, TableRole
from prodclone.masking.transforms import trait

HEADER = """\
# prodclone masking rules. Every column of every table needs a rule: a column
# no rule covers stops the export (fail closed). Validate with
#   prodclone rules check --source "$DSN" --rules include/masking/rules.yaml
# yaml-language-server: $schema=rules.schema.json
version: 1
defaults:
  locale: en_US
  pool_size: 1024
tables:
"""


# YAML 1.1 line breaks (NEL and the Unicode separators too), and what a YAML
# comment cannot hold: those and the characters the YAML reader rejects.
_LINE_BREAK = re.compile("[\r\n\x85\u2028\u2029]")
_NOT_IN_COMMENT = re.compile(f"{_LINE_BREAK.pattern}|{yaml.reader.Reader.NON_PRINTABLE.pattern}")


def _sample_text(conn, table: Table, column: str, n: int) -> list[str]:
    col = sql.Identifier(column)
    query = sql.SQL("SELECT {}::text FROM {} WHERE {} IS NOT NULL LIMIT {}").format(
        col, table.scan, col, sql.Literal(int(n)))
    return [r[0] for r in conn.execute(query)]


# Every key path of a json/jsonb column's documents, as json rules write them (a.b, items[*].email): the
# scalars and the empty objects and arrays, walked on the server; and how many documents were read.
_SURVEY = """
WITH RECURSIVE docs(doc) AS (
    SELECT {col}::jsonb FROM {table}{sampled} WHERE {col} IS NOT NULL LIMIT {rows}
), walk(path, value) AS (
    SELECT '', doc FROM docs
  UNION ALL
    SELECT CASE WHEN e.key IS NULL THEN w.path || '[*]' WHEN w.path = '' THEN e.key ELSE w.path || '.' || e.key END,
           e.value
      FROM walk w, LATERAL (
            SELECT key, value FROM jsonb_each(CASE jsonb_typeof(w.value) WHEN 'object' THEN w.value END)
            UNION ALL
            SELECT NULL, value FROM jsonb_array_elements(CASE jsonb_typeof(w.value) WHEN 'array' THEN w.value END)) e
)
SELECT (SELECT count(*) FROM docs),
       ARRAY(SELECT DISTINCT path FROM walk WHERE path <> ''
              AND (jsonb_typeof(value) NOT IN ('object', 'array') OR value = '{{}}'::jsonb OR value = '[]'::jsonb))
"""


def _survey_json(conn, table: Table, col: Column, rows: int) -> tuple[tuple[dict, str] | None, str]:
    """A json rule listing every key path of the column (suggest_json), and what was read: the whole column,
    or, past ``rows`` documents, a sample of about that many (so a path only in other rows stops the export)."""
    if col.source_casts:  # reading it as jsonb could run a cast the source defined: names only
        return None, "not surveyed: its type has a cast the source defined"
    sampled = sql.SQL("")
    if table.est_rows > rows:
        sampled = sql.SQL(" TABLESAMPLE BERNOULLI ({})").format(sql.Literal(min(100.0, 200.0 * rows / table.est_rows)))
    read, paths = conn.execute(sql.SQL(_SURVEY).format(
        col=sql.Identifier(col.name), table=table.scan, sampled=sampled, rows=sql.Literal(int(rows) + 1))).fetchone()
    if table.est_rows > rows or read > rows:  # (one more than asked for: the statistics may be stale)
        note = (f"key paths of a sample of {read} of ~{max(table.est_rows, read)} documents (--json-survey-rows "
                f"{rows}): a path only in other rows stops the export")
    else:
        note = f"key paths of all {read} documents"
    return suggest_json(paths), note


def _sample_elements(conn, table: Table, column: str, n: int) -> list[str]:
    """Non-NULL elements of up to ``n`` arrays, at most ``n`` of them: what scaffold reads of an array
    of text, through the same detectors as a text column."""
    col = sql.Identifier(column)
    query = sql.SQL("SELECT e::text FROM (SELECT {} AS a FROM {} WHERE {} IS NOT NULL LIMIT {}) s, unnest(s.a) e "
                    "WHERE e IS NOT NULL LIMIT {}").format(col, table.scan, col, sql.Literal(int(n)), sql.Literal(int(n)))
    return [r[0] for r in conn.execute(query)]


def _sample_heads(conn, table: Table, column: str, n: int) -> list[bytes]:
    """The first IMAGE_HEAD bytes of up to ``n`` non-NULL bytea values: enough to see an image's magic number."""
    col = sql.Identifier(column)
    query = sql.SQL("SELECT substring({} FROM 1 FOR {}) FROM {} WHERE {} IS NOT NULL LIMIT {}").format(
        col, sql.Literal(IMAGE_HEAD), table.scan, col, sql.Literal(int(n)))
    return [bytes(r[0]) for r in conn.execute(query)]


def _samples(conn, table: Table, col: Column, n: int) -> list | None:
    """What scaffold reads of a column to judge it: text (dates as text too), the elements of a text array,
    the first bytes of a bytea; None for other types or when sampling is off."""
    if not n:
        return None
    if col.category in ("text", "temporal"):
        return _sample_text(conn, table, col.name, n)
    if col.category == "array" and element_column(col).category == "text":
        return _sample_elements(conn, table, col.name, n)
    if (col.base_type or col.type) == "bytea":
        return _sample_heads(conn, table, col.name, n)
    return None


def _roles(catalog: Catalog, samples: dict[tuple[str, str], list | None]) -> dict[str, TableRole]:
    """Each table's role: about people if it holds a direct identifier or contact (by name or values), or if a
    foreign key makes each row belong to a table that does; otherwise catalogue."""
    roles = {}
    for name, table in catalog.tables.items():
        found = next(filter(None, (identifies(c, samples.get((name, c.name))) for c in table.columns)), None)
        roles[name] = TableRole(people=f"table holds {found}", direct=True) if found else TableRole()
    for name, table in catalog.tables.items():
        owner = next((fk.ref_table for fk in table.foreign_keys
                      if fk.ref_table != name and roles.get(fk.ref_table, TableRole()).direct), None)
        if owner and not roles[name].people:
            roles[name] = TableRole(people=f"rows refer to {owner}, which {roles[owner].people.removeprefix('table ')}")
    return roles


# An email built from the masked names needs room: the names, the domain, and the uniqueness tag.
TEMPLATE_ROOM = 80


def _coherent_emails(catalog: Catalog, chosen: dict[tuple[str, str], tuple[dict, str]]) -> None:
    """Where a table masks a first name, a last name and an email, the email is built from the masked names
    (unique, lower-case), so a masked row reads as one person. Not for an email that foreign keys reference
    (they would have to repeat the template) or one too short to hold it."""
    referenced = {(fk.ref_table, rc) for t in catalog.tables.values() for fk in t.foreign_keys for rc in fk.ref_columns}
    for name, table in catalog.tables.items():
        by_provider = {}
        for col in table.columns:
            rule = chosen.get((name, col.name), ({}, ""))[0]
            if rule.get("transform") == "faker" and re.fullmatch(r"[A-Za-z_]\w*", col.name):
                by_provider.setdefault(rule["provider"], col.name)
        first, last = by_provider.get("first_name"), by_provider.get("last_name")
        if not (first and last):
            continue
        fks = {c for fk in table.foreign_keys for c in fk.columns}
        for col in table.columns:
            rule, why = chosen.get((name, col.name), ({}, ""))
            roomy = col.typmod < 0 or col.typmod - 4 >= TEMPLATE_ROOM
            if rule.get("transform") == "email" and roomy and col.name not in fks and (name, col.name) not in referenced:
                chosen[(name, col.name)] = (
                    {"transform": "template", "template": f"{{{first}}}.{{{last}}}@example.com", "lower": True,
                     "unique": True},
                    f"{why}; built from the masked {first} and {last} so a masked row stays one person")


def scaffold(conn, catalog: Catalog, sample: int = 200, json_survey_rows: int = 100_000) -> str:
    """The rules file: each column's rule from its name, its sampled values and its table's role, with why."""
    readable = {name: table for name, table in catalog.tables.items() if not table.reaches_out}  # never sampled:
    samples = {(name, col.name): _samples(conn, table, col, sample)  # reading it would reach the other server
               for name, table in readable.items() for col in table.columns}
    roles = _roles(catalog, samples)
    chosen: dict[tuple[str, str], tuple[dict, str]] = {}
    for name, table in readable.items():
        keys = set(table.primary_key) | {c for fk in table.foreign_keys for c in fk.columns}
        for col in table.columns:
            rule, why = suggest(col, samples[(name, col.name)], is_key=col.name in keys, role=roles[name])
            if col.category == "json" and json_survey_rows:
                found, note = _survey_json(conn, table, col, json_survey_rows)
                rule, why = found or (rule, why)
                why = f"{why}; {note}"
            chosen[(name, col.name)] = (rule, why)
    # A foreign key column masks exactly like the column it references, so joins hold.
    for name, table in catalog.tables.items():
        for fk in table.foreign_keys:
            for c, rc in zip(fk.columns, fk.ref_columns, strict=True):
                ref = chosen.get((fk.ref_table, rc))
                if ref and trait(ref[0], "masks"):
                    chosen[(name, c)] = (ref[0], f"references {column_name(fk.ref_table, rc)}: same rule keeps the join")
    _coherent_emails(catalog, chosen)
    out = [HEADER]
    for name, table in catalog.tables.items():
        if table.reaches_out:
            what = "foreign table" if table.kind == "foreign" else "has foreign partitions"
            out.append(f"  {_inline(name)}:\n    skip: true  # {what}: clones get it empty and local, without its server\n")
            continue
        out.append(f"  {_inline(name)}:\n    columns:{'' if table.columns else ' {}'}\n")
        for col in table.columns:
            rule, why = chosen[(name, col.name)]
            text = _inline(rule["transform"] if list(rule) == ["transform"] else rule)
            out.append(f"      {_inline(col.name)}: {text}  # {_comment(f'{col.type}: {why}')}\n")
    return "".join(out)


def _inline(value) -> str:
    """``value`` as YAML flow style on one line, quoted by the YAML library wherever YAML needs it
    (double-quoted with escapes if it would span lines). Valid as a key or a value."""
    dump = functools.partial(yaml.safe_dump, default_flow_style=True, sort_keys=False, allow_unicode=True,
                             width=math.inf)
    text = dump([value])[1:-2]  # inside a flow sequence: never a document marker, always flow-safe
    return dump([value], default_style='"')[1:-2] if _LINE_BREAK.search(text) else text


def _comment(text: str) -> str:
    """Schema text (type names, column names) made safe for a YAML comment."""
    return _NOT_IN_COMMENT.sub(lambda m: m.group().encode("unicode_escape").decode(), text)
