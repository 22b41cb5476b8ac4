"""Schema text is production text: column defaults, CHECK expressions, enum labels, function bodies, view
definitions and comments travel in ``schema/*.sql`` to the base and every clone, and can hold personal data
and secrets. Before any data moves the export scans all of it with detect.find_in_text; a finding stops the
export, naming the object and the kind of finding, never the text, unless the rules allow exactly that
(``schema.allow``, with a reason). Comments are dropped (pg_dump --no-comments) except those the rules keep
(``schema.keep_comments``), which are scanned like the rest and re-added at the end of post-data.

Objects are named as PostgreSQL names them (pg_identify_object: type, then identity, quoted where needed),
so every name is unambiguous, whatever the schema's names hold.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from psycopg import sql

from prodclone.catalog import FIRST_USER_OID
from prodclone.errors import CoverageError, RulesError
from prodclone.masking.detect import find_in_text
from prodclone.masking.rules import SchemaRules

log = logging.getLogger(__name__)

# Where schema text lives. Each query returns the object holding the text (its catalog, oid, sub-id: what
# pg_identify_object names), the object it belongs to (catalog and oid: an extension's objects are not dumped),
# and the text. Read by the server's own deparsers (pg_get_*): no code of the source runs.
_SOURCES = {
    "default": "SELECT 'pg_attrdef'::regclass, oid, 0, 'pg_class'::regclass, adrelid, pg_get_expr(adbin, adrelid)"
               " FROM pg_attrdef",
    "constraint": "SELECT 'pg_constraint'::regclass, oid, 0, CASE WHEN conrelid <> 0 THEN 'pg_class' ELSE 'pg_type' END"
                  "::regclass, coalesce(nullif(conrelid, 0), contypid), pg_get_constraintdef(oid) FROM pg_constraint",
    "domain default": "SELECT 'pg_type'::regclass, oid, 0, 'pg_type'::regclass, oid, typdefault FROM pg_type",
    "enum label": "SELECT 'pg_type'::regclass, enumtypid, 0, 'pg_type'::regclass, enumtypid, enumlabel::text FROM pg_enum",
    "definition": "SELECT 'pg_proc'::regclass, oid, 0, 'pg_proc'::regclass, oid, pg_get_functiondef(oid) FROM pg_proc"
                  " WHERE prokind <> 'a'",
    "initial state": "SELECT 'pg_proc'::regclass, aggfnoid, 0, 'pg_proc'::regclass, aggfnoid,"
                     " concat_ws(' ', agginitval, aggminitval) FROM pg_aggregate",
    "view definition": "SELECT 'pg_class'::regclass, oid, 0, 'pg_class'::regclass, oid, pg_get_viewdef(oid) FROM pg_class"
                       " WHERE relkind IN ('v', 'm')",
    "trigger": "SELECT 'pg_trigger'::regclass, oid, 0, 'pg_class'::regclass, tgrelid, pg_get_triggerdef(oid)"
               " FROM pg_trigger WHERE NOT tgisinternal",
    "policy": "SELECT 'pg_policy'::regclass, oid, 0, 'pg_class'::regclass, polrelid,"
              " concat_ws(' ', pg_get_expr(polqual, polrelid), pg_get_expr(polwithcheck, polrelid)) FROM pg_policy",
    "rule": "SELECT 'pg_rewrite'::regclass, oid, 0, 'pg_class'::regclass, ev_class, pg_get_ruledef(oid) FROM pg_rewrite"
            " WHERE rulename <> '_RETURN'",
    "index": "SELECT 'pg_class'::regclass, indexrelid, 0, 'pg_class'::regclass, indrelid, pg_get_indexdef(indexrelid)"
             " FROM pg_index",
    "partition bound": "SELECT 'pg_class'::regclass, oid, 0, 'pg_class'::regclass, oid, pg_get_expr(relpartbound, oid)"
                       " FROM pg_class WHERE relpartbound IS NOT NULL",
    "comment": "SELECT classoid, objoid, objsubid, classoid, objoid, description FROM pg_description",
}

# Around each source: only what pg_dump dumps (objects initdb did not create, no extension's, no temporary
# schema's), each named by PostgreSQL.
_NAMED = """
SELECT o.type, o.type || ' ' || o.identity, o.identity, t.text
  FROM ({}) t(classid, objid, subid, owner_class, owner, text)
 CROSS JOIN LATERAL pg_identify_object(t.classid, t.objid, t.subid) o
 WHERE t.objid >= {} AND t.text IS NOT NULL
   AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = t.owner_class AND d.objid = t.owner AND d.deptype = 'e')
   AND NOT EXISTS (SELECT FROM pg_class c WHERE t.owner_class = 'pg_class'::regclass AND c.oid = t.owner
                     AND (pg_is_other_temp_schema(c.relnamespace) OR c.relnamespace = pg_my_temp_schema()))
"""

# What COMMENT ON calls each kind of object a kept comment may be on; its identity is the object's name in it.
_COMMENT_ON = {
    "table": "TABLE", "view": "VIEW", "materialized view": "MATERIALIZED VIEW", "sequence": "SEQUENCE",
    "index": "INDEX", "table column": "COLUMN", "view column": "COLUMN", "materialized view column": "COLUMN",
    "schema": "SCHEMA", "type": "TYPE", "function": "FUNCTION", "procedure": "PROCEDURE",
    "table constraint": "CONSTRAINT", "trigger": "TRIGGER", "policy": "POLICY",
    "foreign table": "TABLE", "foreign table column": "COLUMN",  # (clones get a local table in its place)
}


@dataclass
class Finding:
    name: str  # the object, as pg_identify_object names it
    where: str  # which of its texts (a key of _SOURCES)
    kind: str  # what was found (a kind of detect.TEXT_FINDINGS)


def check_schema_text(conn, rules: SchemaRules) -> str:
    """Scan the schema's text inside ``conn``'s snapshot; raise CoverageError for any finding the rules do not
    allow. Returns the COMMENT statements of the kept comments, for the end of post-data."""
    findings, kept, commented = [], [], set()
    for where, source in _SOURCES.items():
        for typ, name, identity, text in conn.execute(sql.SQL(_NAMED).format(sql.SQL(source), sql.Literal(FIRST_USER_OID))):
            if where == "comment":
                commented.add(name)
                if name not in rules.keep_comments:
                    continue
                kept.append(_comment_sql(typ, name, identity, text))
            findings += [Finding(name, where, kind) for kind in find_in_text(text)]
    _warn_unused(rules, findings, commented)
    refused = [f for f in findings if f.kind not in rules.allow.get(f.name, ())]
    if refused:
        raise CoverageError(
            f"schema text holds personal data or secrets in {len({f.name for f in refused})} object(s); it would "
            "reach the base and every clone. Remove it from the production schema, or, if it identifies no one "
            "and is no secret, allow it in the rules: schema: {allow: [{object: <as named below>, finds: [<kind>], "
            "reason: <why>}]}",
            "\n".join(f"  {f.name!r} ({f.where}): {f.kind}" for f in sorted(refused, key=lambda f: (f.name, f.where, f.kind))))
    for f in findings:
        log.info("schema text: %r (%s) holds a %s, allowed by the rules", f.name, f.where, f.kind)
    return sql.SQL("").join(kept).as_string(conn)


def _comment_sql(typ: str, name: str, identity: str, text: str) -> sql.Composable:
    """COMMENT ON for a kept comment. The identity is PostgreSQL's own quoted name of the object (quote_ident
    on every part), exactly the form COMMENT ON takes."""
    if typ not in _COMMENT_ON:
        raise RulesError(f"schema.keep_comments: {name!r}: comments on a {typ} cannot be kept; keep comments on "
                         f"{', '.join(sorted(_COMMENT_ON))}")
    return sql.SQL("COMMENT ON {} {} IS {};\n").format(sql.SQL(_COMMENT_ON[typ]), sql.SQL(identity), sql.Literal(text))


def _warn_unused(rules: SchemaRules, findings: list[Finding], commented: set[str]) -> None:
    """Rules naming nothing are stale, and would apply to whatever takes that name next: say so."""
    for name in sorted(rules.keep_comments - commented):
        log.warning("schema.keep_comments: %r has no comment in the source (or no such object)", name)
    found = {(f.name, f.kind) for f in findings}
    for name, kinds in sorted(rules.allow.items()):
        for kind in sorted(k for k in kinds if (name, k) not in found):
            log.warning("schema.allow: %r holds no %s any more; remove the entry", name, kind)
