"""Schema text travels to the base and every clone: comments, defaults, CHECK literals, enum labels, function
bodies, view definitions. Comments stay behind unless the rules keep them; the rest (and kept comments) is
scanned, and a finding stops the export before any data moves, naming the object, never the text, unless the
rules allow it. Source and base are databases of the password-authenticated, non-superuser base role."""

import logging

import psycopg
import pytest
from psycopg import sql

from prodclone.db import dbname_of
from prodclone.errors import CoverageError, RulesError
from prodclone.export import MANIFEST, run_export, verify_and_record
from prodclone.masking.rules import parse_rules
from prodclone.seed import seed
from prodclone.storage import open_storage
from support import rows

KEY = b"k" * 40
PEOPLE = """
CREATE TABLE public.people (id int PRIMARY KEY, email text NOT NULL, note text);
INSERT INTO public.people SELECT i, 'p' || i || '@corp.test', 'n' || i FROM generate_series(1, 5) i;
"""
RULES = "version: 1\ntables:\n  public.people:\n    columns: {id: keep, email: email, note: keep}\n"

# The attacks: production schema text holding personal data or a secret, and how the export must name it.
ATTACKS = {
    "column comment": ("COMMENT ON COLUMN public.people.note IS 'contains ssn 123-45-6789 of Jane Roe'",
                       "table column public.people.note", "comment", "social security number"),
    "default": ("ALTER TABLE public.people ALTER COLUMN email SET DEFAULT 'ceo.jane.doe@corp.io'",
                "default value for public.people.email", "default", "email address"),
    "check": ("ALTER TABLE public.people ADD CONSTRAINT not_the_ceo CHECK (email <> 'ceo.jane.doe@corp.io')",
              "table constraint not_the_ceo on public.people", "constraint", "email address"),
    "enum label": ("CREATE TYPE public.tier AS ENUM ('regular', 'ceo.jane.doe@corp.io')",
                   "type public.tier", "enum label", "email address"),
    "function body": ("CREATE FUNCTION public.charge() RETURNS text LANGUAGE sql "
                      "AS $$ SELECT 'sk_live_4eC39HqLyjWDarjtT1zdp7dc'::text $$",
                      "function public.charge()", "definition", "API key or token"),
    "view": ("CREATE VIEW public.ceo AS SELECT id FROM public.people WHERE email = 'ceo.jane.doe@corp.io'",
             "view public.ceo", "view definition", "email address"),
}
VALUES = ("123-45-6789", "Jane Roe", "jane.doe", "sk_live", "4eC39Hq")


@pytest.fixture
def own_db(base_role, new_db):
    """``own_db(ddl)``: a database the base role created, holding PEOPLE and ``ddl``: its DSN."""

    def make(ddl: str = "") -> str:
        name = dbname_of(new_db("pct_schema"))
        with psycopg.connect(base_role(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        with psycopg.connect(base_role(name), autocommit=True) as conn:
            conn.execute(PEOPLE)
            if ddl:
                conn.execute(ddl)
        return base_role(name)

    return make


def _export(src: str, tmp_path, rules_yaml: str = RULES) -> str:
    url = f"file://{tmp_path}/exp"
    rules = parse_rules(rules_yaml)
    run_export(src, rules.bind(KEY), url, overwrite=True)
    verify_and_record(open_storage(url), src, rules.bind(KEY))
    return url


def _schema_files(tmp_path) -> str:
    return "".join((tmp_path / "exp" / "schema" / f"{s}.sql").read_text() for s in ("pre-data", "post-data"))


def _seeded(url: str, base_role, new_db) -> str:
    target = base_role(dbname_of(new_db("pct_schema_base")))
    seed(url, target)
    return target


def _comments(dsn: str) -> list[tuple]:
    return rows(dsn, "SELECT objsubid, description FROM pg_description WHERE objoid = 'public.people'::regclass ORDER BY 1")


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_personal_data_in_schema_text_stops_the_export_before_data_naming_only_the_object(
        attack, own_db, tmp_path, base_role, new_db):
    ddl, name, where, kind = ATTACKS[attack]
    src = own_db(ddl)
    keep = f"schema:\n  keep_comments: [{name!r}]\n" if where == "comment" else ""
    with pytest.raises(CoverageError) as err:
        _export(src, tmp_path, RULES + keep)
    message = str(err.value)
    assert f"{name!r} ({where}): {kind}" in message and "schema: {allow:" in message
    assert not any(v.lower() in message.lower() for v in VALUES)  # names the object, never the text
    assert not (tmp_path / "exp").exists()  # nothing written, no data moved
    # Allowed, with a reason: the export passes and the object reaches the base as it was; nothing else changes.
    allow = f"  allow:\n    - {{object: {name!r}, finds: [{kind}], reason: a test fixture that identifies no one}}\n"
    url = _export(src, tmp_path, RULES + (keep or "schema:\n") + allow)
    base = _seeded(url, base_role, new_db)
    assert rows(base, "SELECT count(*) FROM people WHERE email LIKE '%@corp.test'") == [(0,)]  # still masked
    assert rows(base, "SELECT count(*) FROM people") == [(5,)]
    if attack == "column comment":
        assert _comments(base) == [(3, "contains ssn 123-45-6789 of Jane Roe")]
    if attack == "function body":
        assert rows(base, "SELECT public.charge()")[0][0].startswith("sk_live_")


def test_an_allow_names_the_kind_too(own_db, tmp_path):
    """Allowing an object for one kind of finding does not let another kind through."""
    ddl, name, _, _ = ATTACKS["function body"]
    src = own_db(ddl.replace("::text", " || ' ceo.jane.doe@corp.io'"))
    allow = f"schema:\n  allow:\n    - {{object: {name!r}, finds: [API key or token], reason: test key}}\n"
    with pytest.raises(CoverageError, match=r"'function public.charge\(\)' \(definition\): email address") as err:
        _export(src, tmp_path, RULES + allow)
    assert "API key" not in err.value.report


def test_comments_stay_behind_unless_kept_and_kept_ones_arrive_exactly(own_db, tmp_path, base_role, new_db, caplog):
    tricky = "it's a C:\\path\\to \"the\" file; -- not a comment\n$$ nor $$ a body"
    src = own_db(f"""
        COMMENT ON TABLE public.people IS 'everyone we know';
        COMMENT ON COLUMN public.people.note IS 'contains ssn 123-45-6789 of Jane Roe';
        COMMENT ON COLUMN public.people.email IS {sql.Literal(tricky).as_string()};
        CREATE TYPE public."odd ""t"" type" AS ENUM ('a');
        COMMENT ON TYPE public."odd ""t"" type" IS 'an odd one';
        CREATE FUNCTION public.f(x int) RETURNS int LANGUAGE sql AS 'SELECT x';
        COMMENT ON FUNCTION public.f(int) IS 'a function';
    """)
    url = _export(src, tmp_path)  # no keep_comments: every comment stays behind, the SSN one included
    assert "COMMENT ON" not in _schema_files(tmp_path) and "Jane" not in _schema_files(tmp_path)
    base = _seeded(url, base_role, new_db)
    assert rows(base, "SELECT count(*) FROM pg_description d JOIN pg_namespace n ON n.nspname = 'public' "
                      "WHERE d.objoid >= 16384") == [(0,)]
    keep = ("schema:\n  keep_comments: [table public.people, table column public.people.email, "
            "'type public.\"odd \"\"t\"\" type\"', 'function public.f(integer)', table column public.nobody]\n")
    with caplog.at_level(logging.WARNING, logger="prodclone.masking.schema_text"):
        url = _export(src, tmp_path, RULES + keep)
    assert any("public.nobody" in r.getMessage() for r in caplog.records)  # a keep naming nothing is reported
    base = _seeded(url, base_role, new_db)
    assert _comments(base) == [(0, "everyone we know"), (2, tricky)]  # the SSN comment stayed behind
    assert rows(base, """SELECT obj_description('public."odd ""t"" type"'::regtype),
                                obj_description('public.f(int)'::regprocedure)""") == [("an odd one", "a function")]


def test_comments_on_objects_of_other_kinds_cannot_be_kept(own_db, tmp_path):
    src = own_db("CREATE SCHEMA other; COMMENT ON SCHEMA other IS 'fine'; "
                 "CREATE TEXT SEARCH CONFIGURATION public.cfg (COPY = simple); "
                 "COMMENT ON TEXT SEARCH CONFIGURATION public.cfg IS 'kept?'")
    url = _export(src, tmp_path, RULES + "schema:\n  keep_comments: [schema other]\n")
    assert (tmp_path / "exp" / MANIFEST).exists() and url
    with pytest.raises(RulesError, match="comments on a text search configuration cannot be kept"):
        _export(src, tmp_path, RULES + "schema:\n  keep_comments: [text search configuration public.cfg]\n")


@pytest.mark.parametrize("section, error", [
    ("allow: [{object: 'function public.f()', finds: [API key or token]}]", "'reason' is a required property"),
    ("allow: [{object: 'function public.f()', finds: [API key or token], reason: ' '}]", "does not match"),
    ("allow: [{object: 'function public.f()', finds: [secret sauce], reason: x}]", "is not one of"),
    ("keep: [x]", "Additional properties"),
])
def test_the_schema_section_is_validated(section, error):
    with pytest.raises(RulesError, match=error):
        parse_rules(f"{RULES}schema: {{{section}}}\n")
