"""The export side attacked by a hostile production schema (and a careless rules author).

The source database is owned by a password-authenticated, non-superuser role: the
schema's author, who may create types, casts, functions, policies and settings in
it. The export reads it as another password-authenticated role with
pg_read_all_data, as the product runs. Planted code never writes (the export's
transaction is read-only); outside the owner's setup it raises "pwned as <role>", so a
test sees whether it ran, and as whom.
"""

import json

import psycopg
import pytest
from psycopg import sql

from prodclone.catalog import load_catalog
from prodclone.db import dbname_of
from prodclone.errors import CoverageError, RulesError
from prodclone.export import run_export
from prodclone.masking.rules import parse_rules
from prodclone.masking.scaffold import scaffold
from prodclone.seed import seed
from support import KEY, drop_role, dsn_as, make_role, rows

SPY = """
SET pct.setup = on;  -- the owner's own setup (e.g. checking a foreign key) may run it
CREATE FUNCTION public.spy() RETURNS boolean LANGUAGE plpgsql AS $$BEGIN
  IF current_setting('pct.setup', true) IS DISTINCT FROM 'on' THEN RAISE EXCEPTION 'pwned as %', current_user; END IF;
  RETURN true; END$$;
"""


@pytest.fixture
def hostile(pg, password_auth, new_db):
    """``hostile(schema_sql, admin_sql)`` -> (owner DSN, reader DSN): a database where a superuser ran
    ``admin_sql`` and its non-superuser owner ``schema_sql`` (with SPY), and a pg_read_all_data role to export it with."""
    made = []

    def make(schema_sql: str, admin_sql: str = "") -> tuple[str, str]:
        owner, owner_pw = make_role(pg, "pct_owner", "LOGIN")
        reader, reader_pw = make_role(pg, "pct_reader", "LOGIN", "IN ROLE pg_read_all_data")
        made.extend([owner, reader])
        dsn = new_db("pct_hostile")
        with psycopg.connect(pg, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(dbname_of(dsn)),
                                                                      sql.Identifier(owner)))
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("ALTER SCHEMA public OWNER TO {}").format(sql.Identifier(owner)))
            if admin_sql:
                conn.execute(admin_sql)
        as_owner = dsn_as(dsn, owner, owner_pw)
        with psycopg.connect(as_owner, autocommit=True) as conn:
            conn.execute(SPY + schema_sql)
        return as_owner, dsn_as(dsn, reader, reader_pw)

    yield make
    for name in made:
        drop_role(pg, name)


def _export(dsn, rules_yaml, tmp_path, **kw):
    url = f"file://{tmp_path}/exp"
    return run_export(dsn, parse_rules(rules_yaml).bind(KEY.encode()), url, overwrite=True, **kw), url


PEOPLE = """
CREATE TABLE people (id int PRIMARY KEY, email text);
INSERT INTO people SELECT i, 'p' || i || '@corp.test' FROM generate_series(1, 5) i;
"""
PEOPLE_RULES = """version: 1
tables:
  public.people:
    columns: {id: keep, email: {transform: email, unique: true}}
"""


@pytest.mark.parametrize("policy", ["public.spy()", "id <= 2"])
def test_row_level_security_neither_runs_policy_code_nor_drops_rows(hostile, tmp_path, policy):
    """A policy would run the schema's code as the exporter, or silently export a subset."""
    _, reader = hostile(PEOPLE + f"ALTER TABLE people ENABLE ROW LEVEL SECURITY; CREATE POLICY p ON people USING ({policy});")
    with pytest.raises(Exception) as err:
        _export(reader, PEOPLE_RULES, tmp_path)
    assert "pwned" not in str(err.value) and "row-level security" in str(err.value)


CAST = """
CREATE TYPE status AS ENUM ('active', 'gone');
CREATE FUNCTION public.status_text(status) RETURNS text LANGUAGE plpgsql AS
  $$BEGIN PERFORM public.spy(); RETURN 'active'; END$$;
CREATE CAST (status AS text) WITH FUNCTION public.status_text(status) AS IMPLICIT;
CREATE DOMAIN email_d AS text CHECK (VALUE IS NULL OR public.spy());
CREATE TABLE accounts (id int PRIMARY KEY, st status, email email_d);
INSERT INTO accounts VALUES (1, 'active', NULL), (2, 'gone', NULL);
"""
CAST_RULES = """version: 1
tables:
  public.accounts:
    columns: {{id: keep, st: keep, email: keep}}
    where: "{where}"
"""


@pytest.mark.parametrize("where", ["st::text = 'active'", "lower(st) = 'active'"])
def test_a_where_never_runs_a_cast_the_schema_defined(hostile, tmp_path, where):
    """An enum with its own cast to text: an explicit or an implicit cast ran the schema's function as the exporter."""
    _, reader = hostile(CAST)
    with pytest.raises(CoverageError, match=r"public\.accounts\.st") as err:
        _export(reader, CAST_RULES.format(where=where), tmp_path)
    assert "cast running a function the source schema defined" in str(err.value)


def test_a_where_over_other_columns_still_runs(hostile, tmp_path):
    """Only columns a cast of the schema's own converts are refused: text (that cast's target) and a domain
    with a check calling the schema's code are fine (no where expression coerces a value to the domain)."""
    _, reader = hostile(CAST)
    manifest, _ = _export(reader, CAST_RULES.format(where="coalesce(email, 'none') <> 'x' AND id = 1"), tmp_path)
    assert manifest["totals"]["rows"] == 1


def test_splitting_a_big_table_never_calls_an_aggregate_the_schema_defined(hostile, tmp_path):
    """min()/max() of a domain-typed key: a public.min(domain) overload matches more exactly than pg_catalog's."""
    _, reader = hostile("""
        CREATE DOMAIN ident AS integer;
        CREATE FUNCTION public.pick(ident, ident) RETURNS ident LANGUAGE plpgsql AS
          $$BEGIN PERFORM public.spy(); RETURN $1; END$$;
        CREATE AGGREGATE public.min(ident) (sfunc = public.pick, stype = ident);
        CREATE AGGREGATE public.max(ident) (sfunc = public.pick, stype = ident);
        CREATE TABLE events (id ident PRIMARY KEY, v text);
        INSERT INTO events SELECT i, 'v' FROM generate_series(1, 100) i;
        ANALYZE events;
    """)
    manifest, _ = _export(reader, "version: 1\ntables:\n  public.events:\n    columns: {id: keep, v: keep}\n",
                          tmp_path, split_rows=30)
    assert manifest["totals"]["rows"] == 100 and len(manifest["tables"][0]["files"]) > 1


def test_subsetting_never_follows_a_key_through_a_cast_the_schema_defined(pg, hostile, tmp_path):
    """An enum key referencing a text key (Postgres before 18 allows it through the enum's implicit cast): the join
    that subsetting adds for a filtered parent would run the cast's function as the exporter."""
    if rows(pg, "SELECT current_setting('server_version_num')::int")[0][0] >= 180000:
        pytest.skip("PostgreSQL 18 refuses such a key ('key columns are not both collatable'); the guard stays "
                    "for older sources")
    _, reader = hostile(CAST + """
        CREATE TABLE orgs (code text PRIMARY KEY);
        INSERT INTO orgs VALUES ('active'), ('gone');
        CREATE TABLE members (id int PRIMARY KEY, org status REFERENCES orgs (code));
        INSERT INTO members VALUES (1, 'active');
    """)
    rules = CAST_RULES.format(where="id > 0") + """  public.orgs:
    columns: {code: keep}
    where: "code <> 'gone'"
  public.members:
    columns: {id: keep, org: keep}
"""
    with pytest.raises(RulesError, match=r"public\.members.*\(org\).*cast") as err:
        _export(reader, rules, tmp_path)
    assert "pwned" not in str(err.value)


# A wrapper without a handler: reading a table through it fails, so a read that would reach the other server shows.
ARCHIVE = """
CREATE FOREIGN DATA WRAPPER pct_wrapper;
CREATE SERVER archive FOREIGN DATA WRAPPER pct_wrapper OPTIONS (host 'archive.internal');
GRANT USAGE ON FOREIGN SERVER archive TO PUBLIC;
CREATE USER MAPPING FOR PUBLIC SERVER archive OPTIONS (password 'hunter2-secret');
"""
REMOTE_PARTS = PEOPLE + """
CREATE TABLE logs (id int, msg text) PARTITION BY RANGE (id);
CREATE TABLE logs_recent PARTITION OF logs FOR VALUES FROM (100) TO (200);
INSERT INTO logs SELECT i, 'm' FROM generate_series(100, 109) i;
CREATE FOREIGN TABLE logs_archive PARTITION OF logs FOR VALUES FROM (0) TO (100) SERVER archive;
CREATE TABLE notes (id int PRIMARY KEY, body text);
INSERT INTO notes SELECT i, 'n' FROM generate_series(1, 50) i;
ANALYZE notes;
CREATE FOREIGN TABLE notes_remote () INHERITS (notes) SERVER archive;
"""
REMOTE_RULES = PEOPLE_RULES + """  public.notes:
    columns: {id: keep, body: keep}
    where: "id > 10"
  public.notes_remote:
    skip: true
"""


def test_a_foreign_partition_is_never_read_through_its_parent(hostile, tmp_path, base_role, new_db):
    """A partitioned table with a foreign leaf reads the other server: it is refused until `skip: true`,
    like a foreign table; a foreign inheritance child is never read through its parent (not even to
    split the parent into key ranges)."""
    _, reader = hostile(REMOTE_PARTS, ARCHIVE)
    logs = "  public.logs:\n    columns: {id: keep, msg: keep}\n"
    with pytest.raises(CoverageError, match=r"public\.logs") as err:
        _export(reader, REMOTE_RULES + logs, tmp_path)
    assert "foreign partitions (public.logs_archive)" in str(err.value) and "skip: true" in str(err.value)
    with psycopg.connect(reader) as conn:  # scaffold neither samples it nor gives it more than `skip: true`
        scaffolded = parse_rules(scaffold(conn, load_catalog(conn))).tables["public.logs"]
    assert scaffolded.skip and not scaffolded.columns
    manifest, url = _export(reader, REMOTE_RULES + "  public.logs:\n    skip: true\n", tmp_path, split_rows=10)
    by = {t["name"]: t for t in manifest["tables"]}
    assert by["public.notes"]["rows"] == 40 and len(by["public.notes"]["files"]) > 1
    assert by["public.logs"]["skipped"] and not by["public.logs"]["files"]
    assert manifest["left_behind"]["foreign_tables_made_local"] == ["public.notes_remote", "public.logs_archive"]
    exported = b"".join(p.read_bytes() for p in (tmp_path / "exp").rglob("*") if p.is_file())
    assert b"hunter2-secret" not in exported and b"archive.internal" not in exported
    target = base_role(dbname_of(new_db("pct_remote")))
    seed(url, target, force_unverified=True)  # (what is left behind is the point here, not verification)
    assert rows(target, "SELECT c.relname, c.relkind, c.relispartition FROM pg_inherits i "
                        "JOIN pg_class c ON c.oid = i.inhrelid ORDER BY 1") == [
        ("logs_archive", "r", True), ("logs_recent", "r", True)]  # (a stand-in does not inherit: notes_remote)
    assert rows(target, "SELECT (SELECT count(*) FROM logs), (SELECT count(*) FROM pg_foreign_server)") == [(0, 0)]


def test_event_triggers_stay_behind(hostile, tmp_path, base_role, new_db):
    """An event trigger would fire for every later DDL in the base and its clones, whoever runs it (an admin's
    post-restore SQL included); a non-superuser seed could not even create it, so the seed failed."""
    _, reader = hostile(PEOPLE, """
        CREATE FUNCTION public.on_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $$BEGIN PERFORM public.spy(); END$$;
        CREATE EVENT TRIGGER watch ON ddl_command_end EXECUTE FUNCTION public.on_ddl();
        COMMENT ON EVENT TRIGGER watch IS 'watching';
    """)
    manifest, url = _export(reader, PEOPLE_RULES, tmp_path)
    assert manifest["left_behind"]["event_triggers"] == 1
    assert b"watch" not in (tmp_path / "exp" / "schema" / "post-data.sql").read_bytes()
    target = base_role(dbname_of(new_db("pct_evt")))
    seed(url, target, force_unverified=True)  # (what is left behind is the point here, not verification)
    assert rows(target, "SELECT (SELECT count(*) FROM pg_event_trigger), (SELECT count(*) FROM people)") == [(0, 5)]


def test_a_where_means_what_pglast_parsed_whatever_the_database_defaults(hostile, tmp_path):
    """With standard_conforming_strings off (a database default its owner may set), the re-deparsed
    'a\\' OR id = 2 ...' would read as an unterminated string holding the rest: the where's meaning would be
    the schema's to change. Placeholders and format braces in a literal stay text."""
    owner, reader = hostile(PEOPLE + "INSERT INTO people VALUES (6, 'a\\'), (7, '%s{}}@x');")
    with psycopg.connect(owner, autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} SET standard_conforming_strings = off").format(
            sql.Identifier(dbname_of(owner))))
    where = "(email = 'a\\' OR id = 2 OR email LIKE '%s{}}%') AND email NOT LIKE '%%s{}'"
    manifest, _ = _export(reader, PEOPLE_RULES + f"    where: {json.dumps(where)}\n", tmp_path)
    assert manifest["tables"][0]["rows"] == 3
