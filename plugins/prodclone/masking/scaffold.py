"""Write a complete rules file for a schema: likely-PII columns get a masking
rule, everything else ``keep`` with a comment saying why."""

from __future__ import annotations

import json

from prodclone.catalog import Catalog
from prodclone.db import quote_ident
from prodclone.masking.detect import suggest, suggest_json

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


def _sample_text(conn, qualified: str, column: str, n: int) -> list[str]:
    col = quote_ident(column)
    return [r[0] for r in conn.execute(f"SELECT {col}::text FROM {qualified} WHERE {col} IS NOT NULL LIMIT {int(n)}")]


def scaffold(conn, catalog: Catalog, sample: int = 200) -> str:
    chosen: dict[tuple[str, str], tuple[dict, str]] = {}
    for name, table in catalog.tables.items():
        if table.kind == "foreign":  # never sampled: reading it would reach the other server
            continue
        keys = set(table.primary_key) | {c for fk in table.foreign_keys for c in fk.columns}
        for col in table.columns:
            samples = _sample_text(conn, table.qualified, col.name, sample) if col.category in ("text", "json") and sample else None
            rule, why = suggest(col, samples if col.category == "text" else None, is_key=col.name in keys)
            if col.category == "json" and samples:
                found = suggest_json(col, [json.loads(s) for s in samples])
                rule, why = found or (rule, why)
            chosen[(name, col.name)] = (rule, why)
    # A foreign key column masks exactly like the column it references, so joins hold.
    for name, table in catalog.tables.items():
        for fk in table.foreign_keys:
            for c, rc in zip(fk.columns, fk.ref_columns, strict=True):
                ref = chosen.get((fk.ref_table, rc))
                if ref and ref[0]["transform"] != "keep":
                    chosen[(name, c)] = (ref[0], f"references {fk.ref_table}.{rc}: same rule keeps the join")
    out = [HEADER]
    for name, table in catalog.tables.items():
        if table.kind == "foreign":
            out.append(f"  {name}:\n    skip: true  # foreign table: clones get it empty and local, without its server\n")
            continue
        out.append(f"  {name}:\n    columns:\n")
        for col in table.columns:
            rule, why = chosen[(name, col.name)]
            text = rule["transform"] if list(rule) == ["transform"] else _flow(rule)
            out.append(f"      {_yaml_key(col.name)}: {text}  # {col.type}: {why}\n")
    return "".join(out)


def _flow(v) -> str:
    """A value as one-line YAML flow style."""
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_yaml_key(str(k))}: {_flow(x)}" for k, x in v.items()) + "}"
    if isinstance(v, str) and v.replace("_", "").isalnum():
        return v
    return json.dumps(v)


def _yaml_key(name: str) -> str:
    return name if name.replace("_", "").isalnum() else json.dumps(name)
