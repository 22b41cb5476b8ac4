"""The masking rules file: load, validate against its JSON Schema (errors carry
line and column), and build the transforms it names."""

from __future__ import annotations

import difflib
import hashlib
import json
import secrets
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import jsonschema

from prodclone import yamlsource
from prodclone.catalog import QUALIFIED_PATTERN, qualified_name, split_qualified
from prodclone.errors import RulesError
from prodclone.masking import keys
from prodclone.masking import where as where_clause
from prodclone.masking.detect import TEXT_FINDINGS
from prodclone.masking.transforms import REGISTRY, Context, Transform


def json_schema() -> dict:
    """The JSON Schema of rules files, generated from the transform registry."""
    names = sorted(REGISTRY)
    shorthands = [n for n in names if not REGISTRY[n].required]
    dispatch = [
        {"if": {"properties": {"transform": {"const": n}}}, "then": REGISTRY[n].schema()} for n in names
    ]
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://prodclone.dev/schemas/masking-rules.json",
        "title": "prodclone masking rules",
        "type": "object",
        "required": ["version", "tables"],
        "additionalProperties": False,
        "properties": {
            "version": {"const": 1},
            "defaults": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "locale": {"type": "string", "description": "Faker locale, e.g. en_US"},
                    "pool_size": {"type": "integer", "minimum": 16, "maximum": 1000000},
                },
            },
            "schema": {"$ref": "#/$defs/schema"},
            "tables": {
                "type": "object",
                "description": 'Every table of the source, schema-qualified (public.users); quote a part holding '
                               'a dot or a double quote, doubling quotes inside: "my.schema"."my""table".',
                "propertyNames": {"type": "string", "pattern": QUALIFIED_PATTERN},
                "additionalProperties": {"$ref": "#/$defs/table"},
            },
        },
        "$defs": {
            "schema": {
                "type": "object",
                "additionalProperties": False,
                "description": "Schema text (defaults, CHECKs, enum labels, function bodies, view definitions, kept "
                               "comments) is scanned for personal data and secrets; a finding stops the export. "
                               "Objects are named as PostgreSQL's pg_identify_object does (type, then identity), "
                               "as the export's error prints them: 'table column public.users.email', "
                               "'function public.f(integer)', 'default value for public.users.email'.",
                "properties": {
                    "keep_comments": {
                        "type": "array", "uniqueItems": True, "items": {"type": "string", "minLength": 1},
                        "description": "Objects whose comments go to the base and clones (every other comment is "
                                       "dropped); kept comments are scanned too.",
                    },
                    "allow": {
                        "type": "array",
                        "description": "Findings in schema text that may travel, each with the reason.",
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["object", "finds", "reason"],
                            "properties": {
                                "object": {"type": "string", "minLength": 1},
                                "finds": {"type": "array", "minItems": 1, "uniqueItems": True,
                                          "items": {"enum": [kind for kind, _, _ in TEXT_FINDINGS]}},
                                "reason": {"type": "string", "minLength": 1, "pattern": "\\S",
                                           "description": "Why this text identifies no one and holds no secret."},
                            },
                        },
                    },
                },
            },
            "table": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "skip": {"type": "boolean", "description": "Schema only: export no rows."},
                    "where": {"type": "string", "description": "SQL filter for subsetting; referencing rows elsewhere follow."},
                    "columns": {"type": "object", "additionalProperties": {"$ref": "#/$defs/rule"}},
                },
            },
            "rule": {
                "anyOf": [
                    {"enum": shorthands, "description": "A transform without parameters, e.g. keep, null, email"},
                    {
                        "type": "object",
                        "required": ["transform"],
                        "properties": {"transform": {"enum": names}},
                        "allOf": dispatch,
                    },
                ]
            },
        },
    }


@dataclass
class TableRule:
    name: str
    skip: bool = False
    where: str | None = None
    columns: dict[str, dict] = field(default_factory=dict)


@dataclass
class SchemaRules:
    """The ``schema`` section: comments to keep, and findings in schema text allowed to travel."""

    keep_comments: frozenset[str] = frozenset()
    allow: dict[str, frozenset[str]] = field(default_factory=dict)  # object name -> kinds of finding


@dataclass
class Rules:
    tables: dict[str, TableRule]
    locale: str = "en_US"
    pool_size: int = 1024
    digest: str = ""
    source: str = "<rules>"
    schema: SchemaRules = field(default_factory=SchemaRules)

    def bind(self, key: bytes) -> Masking:
        return Masking(self, key)

    def throwaway(self) -> Masking:
        """Bound to a random key, for steps that check but write nothing masked (coverage in a task of its
        own, the frozen plan, `rules check` without a key): they need no secret, and what fits does not
        depend on the key."""
        return Masking(self, secrets.token_bytes(32))


@dataclass(frozen=True, eq=False)
class Masking:
    """The rules bound to the masking key: what masks, checks and verifies an export. The key stays inside
    (never in a repr); transforms derive their sub-keys from it (keys.derive), and only its fingerprint leaves."""

    rules: Rules
    _key: bytes = field(repr=False)

    @cached_property
    def fingerprint(self) -> str:
        return keys.fingerprint(self._key)

    def context(self) -> Context:
        return Context(key=self._key, locale=self.rules.locale, pool_size=self.rules.pool_size)

    def table(self, table):
        """The TableMasker of ``table`` (a catalog Table), shared in this process (TableMasker.shared)."""
        from prodclone.masking.rewriter import TableMasker  # (rewriter imports this module)

        return TableMasker.shared(table, self)


def _normalize_nulls(data) -> None:
    """In YAML a bare `null` is None; as a rule it means the `null` transform."""
    def fix(rule):
        if rule is None:
            return "null"
        if isinstance(rule, dict):
            if "transform" in rule and rule["transform"] is None:
                rule["transform"] = "null"
            for path_rules in [rule.get("paths")] if isinstance(rule.get("paths"), dict) else []:
                for k, v in path_rules.items():
                    path_rules[k] = fix(v)
            if "rule" in rule:  # an element-wise rule's own (elements)
                rule["rule"] = fix(rule["rule"])
        return rule

    for table in (data.get("tables") or {}).values() if isinstance(data, dict) else []:
        cols = table.get("columns") if isinstance(table, dict) else None
        if isinstance(cols, dict):
            for c, r in cols.items():
                cols[c] = fix(r)


def _canonical_keys(tables: dict, marks: dict, source: str) -> dict:
    """Table keys in canonical form (catalog.qualified_name), so `'"public"."users"'` and `public.users` name one table."""
    out = {}
    for key, t in tables.items():
        line, col = marks.get(("tables", key), (1, 1))
        try:
            name = qualified_name(*split_qualified(key))
        except ValueError as exc:
            raise RulesError(f"{source}:{line}:{col}: tables: {exc}") from None
        if name in out:
            raise RulesError(f"{source}:{line}:{col}: tables: {key!r} names {name} again; keep one entry per table")
        out[name] = t
    return out


def parse_rules(text: str, source: str = "<rules>") -> Rules:
    data, marks = yamlsource.parse(text, source, RulesError)
    if data is None:
        raise RulesError(f"{source}: the rules file is empty")
    _normalize_nulls(data)
    errors = yamlsource.schema_errors(json_schema(), data, marks, source, explain=_unknown_transform)
    if errors:
        raise RulesError("invalid masking rules:\n  " + "\n  ".join(errors))
    wheres = _normalized_wheres(data, marks, source)
    defaults = data.get("defaults") or {}
    _check_parameters(data, marks, source, defaults.get("locale", "en_US"))
    tables = {}
    for name, t in _canonical_keys(data.get("tables") or {}, marks, source).items():
        t = t or {}
        cols = {c: ({"transform": r} if isinstance(r, str) else dict(r)) for c, r in (t.get("columns") or {}).items()}
        tables[name] = TableRule(name=name, skip=t.get("skip", False), where=wheres.get(name), columns=cols)
    digest = hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()
    return Rules(
        tables=tables,
        locale=defaults.get("locale", "en_US"),
        pool_size=defaults.get("pool_size", 1024),
        digest=digest,
        source=source,
        schema=_schema_rules(data.get("schema") or {}),
    )


def _unknown_transform(err: jsonschema.ValidationError) -> tuple[tuple, str] | None:
    """A misspelt transform name, said as such (jsonschema would say it is "not of type 'object'")."""
    rule = err.instance
    if err.validator != "anyOf" or not isinstance(rule, str | dict):
        return None
    name = rule if isinstance(rule, str) else rule.get("transform")
    if not isinstance(name, str) or name in REGISTRY:
        return None
    close = difflib.get_close_matches(name, REGISTRY, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else f"; known: {', '.join(sorted(REGISTRY))}"
    at = tuple(err.absolute_path) + (() if isinstance(rule, str) else ("transform",))
    return at, f"unknown transform {name!r}{hint}"


def _check_parameters(data: dict, marks: dict, source: str, locale: str) -> None:
    """Parameters JSON Schema cannot check (a Faker provider, a template's braces), at the rule's line:
    each rule is built once with a throwaway key, as the export will build it with the real one."""
    ctx = Context(key=bytes(32), locale=locale, pool_size=16)
    problems = []
    for table, t in (data.get("tables") or {}).items():
        for column, rule in ((t or {}).get("columns") or {}).items():
            spec = {"transform": rule} if isinstance(rule, str) else dict(rule)
            try:
                REGISTRY[spec["transform"]](spec, ctx)  # the schema has checked the name
            except RulesError as exc:
                line, col = marks.get(("tables", table, "columns", column), (1, 1))
                problems.append(f"{source}:{line}:{col}: tables.{table}.columns.{column}: {exc}")
    if problems:
        raise RulesError("invalid masking rules:\n  " + "\n  ".join(problems))


def _schema_rules(section: dict) -> SchemaRules:
    allow: dict[str, frozenset[str]] = {}
    for entry in section.get("allow") or []:
        allow[entry["object"]] = allow.get(entry["object"], frozenset()) | frozenset(entry["finds"])
    return SchemaRules(keep_comments=frozenset(section.get("keep_comments") or ()), allow=allow)


def _normalized_wheres(data: dict, marks: dict, source: str) -> dict[str, str]:
    """Each table's ``where`` as SQL may see it (re-deparsed); refuses every one that is not
    exactly one allowed expression, at the ``where`` key's line and column."""
    wheres, problems = {}, []
    for name, t in (data.get("tables") or {}).items():
        if (t or {}).get("where") is None:
            continue
        try:
            wheres[name] = where_clause.normalize(t["where"])
        except RulesError as exc:
            line, col = marks.get(("tables", name, "where"), (1, 1))
            problems.append(f"{source}:{line}:{col}: tables.{name}.where: {exc}")
    if problems:
        raise RulesError("invalid masking rules:\n  " + "\n  ".join(problems))
    return wheres


def load_rules(path: str | Path) -> Rules:
    p = Path(path)
    if not p.exists():
        raise RulesError(f"rules file {p} does not exist (generate one with `prodclone rules scaffold`)")
    return parse_rules(p.read_text(), source=str(p))


def build_transform(spec: dict, ctx: Context, where: str) -> Transform:
    cls = REGISTRY.get(spec["transform"])
    if cls is None:
        raise RulesError(f"{where}: unknown transform {spec['transform']!r}; known: {', '.join(sorted(REGISTRY))}")
    try:
        return cls(spec, ctx)
    except RulesError as exc:
        raise RulesError(f"{where}: {exc}") from None
