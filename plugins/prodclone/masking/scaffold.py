"""Write a complete rules file for a schema: likely-PII columns get a masking
rule, everything else ``keep`` with a comment saying why."""

from __future__ import annotations

import functools
import math
import re

import yaml
from psycopg import sql

from prodclone.catalog import Catalog, Column, Table, column_name
from prodclone.masking.detect import element_column, suggest, suggest_json
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


def scaffold(conn, catalog: Catalog, sample: int = 200, json_survey_rows: int = 100_000) -> str:
    chosen: dict[tuple[str, str], tuple[dict, str]] = {}
    for name, table in catalog.tables.items():
        if table.reaches_out:  # never sampled: reading it would reach the other server
            continue
        keys = set(table.primary_key) | {c for fk in table.foreign_keys for c in fk.columns}
        for col in table.columns:
            samples = _sample_text(conn, table, col.name, sample) if col.category == "text" and sample else None
            if col.category == "array" and element_column(col).category == "text" and sample:
                samples = _sample_elements(conn, table, col.name, sample)
            rule, why = suggest(col, samples, is_key=col.name in keys)
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
