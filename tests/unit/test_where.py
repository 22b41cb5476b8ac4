"""Rules `where:` clauses: one boolean expression over the table's own columns,
parsed by Postgres's grammar (pglast); SQL only ever sees the re-deparsed text.
The attack tests at the end run real exports against a real Postgres."""

import psycopg
import pytest

from prodclone.catalog import Catalog, Column, Table
from prodclone.errors import CoverageError, RulesError
from prodclone.export import run_export
from prodclone.masking import where
from prodclone.masking.coverage import check
from prodclone.masking.rules import parse_rules
from prodclone.storage import open_storage
from support import KEY, rows

DROP_VICTIM = "true)) TO STDOUT; COMMIT; DROP TABLE victim; --"
UNION_EMAILS = "true) UNION ALL SELECT id+1000, 'x@example.com', email FROM people WHERE (true"


@pytest.mark.parametrize("text, deparsed", [
    ("id % 10 = 0", "id % 10 = 0"),
    ("lower(email) LIKE '%@example.com' AND created_at > now() - interval '30 days'",
     "lower(email) LIKE '%@example.com' AND created_at > now() - CAST('30 days' AS interval)"),
    ("coalesce(nick, '') <> '' or nullif(a, 0) is null", "COALESCE(nick, '') <> '' OR NULLIF(a, 0) IS NULL"),
    ("greatest(a, b) between 1 and 9 and least(a, b) in (1, 2)", "GREATEST(a, b) BETWEEN 1 AND 9 AND LEAST(a, b) IN (1, 2)"),
    ("case when a then b else c end", "CASE WHEN a THEN b ELSE c END"),
    ("extract(year from ts) = 2024 and date_trunc('day', ts) < current_date",
     "EXTRACT(YEAR FROM ts) = 2024 AND date_trunc('day', ts) < CURRENT_DATE"),
    ("abs(hashtext(email)) % 4 = 0 and md5(email) like 'a%'", "abs(hashtext(email)) % 4 = 0 AND md5(email) LIKE 'a%'"),
    ("status::text = any(array['a', 'b'])", "CAST(status AS text) = ANY(ARRAY['a', 'b'])"),
    ("$$it's$$ = nick -- a comment", "'it''s' = nick"),
])
def test_allowed_expressions_are_deparsed(text, deparsed):
    assert where.normalize(text) == deparsed
    assert where.normalize(deparsed) == deparsed  # stable: what SQL sees passes the same check


@pytest.mark.parametrize("text, message", [
    (DROP_VICTIM, "not one SQL expression"),
    (UNION_EMAILS, "exactly one boolean expression"),
    ("true; DROP TABLE victim", "not one SQL expression"),
    ("true) --", "not one SQL expression"),  # a comment cannot swallow the closing parenthesis
    ("true) ORDER BY (1", "not more SQL"),
    ("true) LIMIT (1", "not more SQL"),
    ("true) FOR UPDATE --\n", "not one SQL expression"),
    ("id IN (SELECT id FROM people)", "subquery"),
    ("EXISTS (SELECT 1 FROM secrets)", "subquery"),
    ("pg_terminate_backend(1)", "pg_terminate_backend()"),
    ("set_config('a.b', 'c', false) = 'c'", "set_config()"),
    ("lo_export(1, '/tmp/x') = 1", "lo_export()"),
    ("dblink_exec('x', 'y') = ''", "dblink_exec()"),
    ("nextval('s') > 0", "nextval()"),
    ("pg_sleep(10) IS NULL", "pg_sleep()"),
    ("pg_read_file('/etc/passwd') <> ''", "pg_read_file()"),
    ("count(*) > 0", "count()"),
    ("lower(email) = 'a' OR upper(row_number() OVER ()) = 'b'", "row_number()"),
    ("public.lower(email) = 'a'", "schema-qualified function public.lower"),
    ("pg_catalog.pg_sleep(1) IS NULL", "pg_sleep()"),
    ("a OPERATOR(public.=) 1", "schema-qualified operator public.="),
    ("a::public.mood = 'x'", "schema-qualified type public.mood"),
    ("t0.id = 1", "plain name"),
    ("people.* IS NOT NULL", "plain name"),
    ("id = $1", "ParamRef"),
    ("tags[1] = 'x'", "A_Indirection"),
    ("", "not one SQL expression"),
    ("x IS DOCUMENT", "XmlExpr"),
    ("jsonb_path_query_first(j, '$.a') IS NULL", "jsonb_path_query_first()"),
    ("id = " + "1 + " * 3000 + "1", "nested too deeply"),  # a RecursionError, not a traceback
])
def test_anything_else_is_refused(text, message):
    with pytest.raises(RulesError) as err:
        where.normalize(text)
    assert message in str(err.value)


def test_rules_refuse_a_bad_where_at_its_line_and_column():
    text = ("version: 1\ntables:\n  public.people:\n    where: \"" + DROP_VICTIM + "\"\n    columns: {id: keep}\n"
            "  public.victim:\n    where: >-\n      " + UNION_EMAILS + "\n")
    with pytest.raises(RulesError) as err:
        parse_rules(text, source="rules.yaml")
    msg = str(err.value)
    assert "rules.yaml:4:5: tables.public.people.where: is not one SQL expression" in msg
    assert "rules.yaml:7:5: tables.public.victim.where: must be exactly one boolean expression" in msg


def test_rules_keep_only_the_deparsed_where():
    r = parse_rules("version: 1\ntables:\n  public.people:\n    where: \"id%2=0 -- even\"\n")
    assert r.tables["public.people"].where == "id % 2 = 0"


def _people():
    return Catalog(tables={"public.people": Table("public.people", "table", [Column("id", "integer", True, True),
                                                                          Column("email", "text", False)])},
                   sequences=[])


def test_coverage_refuses_a_where_naming_another_column():
    r = parse_rules("version: 1\ntables:\n  public.people:\n    where: \"lower(email) = 'a' and secret > 0\"\n"
                    "    columns: {id: keep, email: email}\n")
    report = check(_people(), r.bind(KEY.encode()))
    assert [(p.table, p.column, p.kind) for p in report.problems] == [("public.people", "secret", "unknown-column")]
    r.tables["public.people"].where = "lower(email) = 'a'"
    assert check(_people(), r.bind(KEY.encode())).ok


# --- Real exports: the attacks do no harm, and the subset stays what it says.

SOURCE = """
CREATE TYPE mood AS ENUM ('calm', 'angry');
CREATE TABLE people (id int PRIMARY KEY, email varchar(100) NOT NULL, feeling mood);
CREATE TABLE victim (id int PRIMARY KEY);
INSERT INTO people SELECT i, 'Person' || i || '@corp.test', 'calm' FROM generate_series(1, 40) i;
INSERT INTO victim VALUES (1);
-- A production schema shadowing a built-in for varchar (an exact match beats pg_catalog.lower(text)).
CREATE FUNCTION public.lower(varchar) RETURNS text LANGUAGE sql AS $$ SELECT 'hit' $$;
"""
RULES = """version: 1
tables:
  public.people:
    columns: {id: keep, email: {transform: email, unique: true}, feeling: keep}
  public.victim:
    columns: {id: keep}
"""


@pytest.fixture
def attack_source(new_db):
    dsn = new_db("pct_where")
    admin = psycopg.conninfo.make_conninfo(dsn, dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(
            psycopg.sql.Identifier(psycopg.conninfo.conninfo_to_dict(dsn)["dbname"])))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(SOURCE)
    return dsn


def _exported_bytes(url: str) -> bytes:
    storage = open_storage(url)
    return b"".join(storage.read_bytes(n) for n in storage.list() if n.startswith("data/"))


@pytest.mark.parametrize("attack", [DROP_VICTIM, UNION_EMAILS])
def test_an_attack_slipped_past_the_loader_moves_nothing(attack_source, tmp_path, masking_key, attack):
    rules = parse_rules(RULES)
    rules.tables["public.people"].where = attack  # as if set in code, bypassing the rules file check
    url = f"file://{tmp_path}/exp"
    with pytest.raises(CoverageError) as err:  # coverage re-checks every where before anything moves
        run_export(attack_source, rules.bind(masking_key), url)
    assert "[invalid] public.people: where " in str(err.value)
    assert rows(attack_source, "SELECT count(*) FROM victim") == [(1,)]
    assert not open_storage(url).exists("manifest.json") and _exported_bytes(url) == b""


def test_subset_reads_built_ins_only_and_exports_masked_rows(attack_source, tmp_path, masking_key):
    rules = parse_rules(RULES)
    url = f"file://{tmp_path}/even"
    rules.tables["public.people"].where = "id % 2 = 0"
    by = {t["name"]: t for t in run_export(attack_source, rules.bind(masking_key), url)["tables"]}
    assert by["public.people"]["rows"] == 20 and by["public.people"]["where"] == "id % 2 = 0"
    data = _exported_bytes(url)
    assert b"@corp.test" not in data and b"\tcalm\n" in data  # masked; the enum column copies fine
    # public.lower(varchar) would say 'hit' for every row; the export resolves lower() in pg_catalog.
    rules.tables["public.people"].where = "lower(email) = 'hit'"
    manifest = run_export(attack_source, rules.bind(masking_key), f"file://{tmp_path}/shadow")
    assert {t["name"]: t["rows"] for t in manifest["tables"]} == {"public.people": 0, "public.victim": 1}
    assert rows(attack_source, "SELECT count(*) FROM people WHERE lower(email) = 'hit'") == [(40,)]  # the shadow is real
