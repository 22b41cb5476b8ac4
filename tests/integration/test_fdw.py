"""Nothing that reaches another server leaves the source: foreign servers, user
mappings, foreign-data wrappers and subscriptions stay behind; a foreign table
reaches the base and its clones as an empty local table with its columns, and
the manifest says so. (The embedded server has no postgres_fdw: a handwritten
wrapper is enough, since a server or user mapping never connects until used.)"""

import uuid
from pathlib import Path

import psycopg
import pytest

from prodclone import pgtools
from prodclone.catalog import load_catalog
from prodclone.db import with_dbname
from prodclone.drivers.base import RestoreRequest
from prodclone.errors import CoverageError
from prodclone.export import read_manifest, run_export, verify_and_record
from prodclone.masking.coverage import check
from prodclone.masking.rules import parse_rules
from prodclone.storage import open_storage
from support import KEY, drop_role, dsn_as, make_role, rows

SECRET = "hunter2-secret"
SOURCE = f"""
CREATE TYPE tier AS ENUM ('free', 'paid');
CREATE TABLE customers (id int PRIMARY KEY, email text NOT NULL);
INSERT INTO customers SELECT i, 'customer' || i || '@corp.test' FROM generate_series(1, 10) i;
CREATE FOREIGN DATA WRAPPER pct_wrapper;
CREATE SERVER prod_primary FOREIGN DATA WRAPPER pct_wrapper OPTIONS (host 'prod.internal', dbname 'shop');
CREATE USER MAPPING FOR PUBLIC SERVER prod_primary OPTIONS (user 'app', password '{SECRET}');
COMMENT ON SERVER prod_primary IS 'the live primary';
CREATE FOREIGN TABLE remote_accounts (id bigint NOT NULL, email text, plan tier, balance numeric(12,2))
    SERVER prod_primary OPTIONS (table_name 'accounts');
COMMENT ON FOREIGN TABLE remote_accounts IS 'live accounts';
COMMENT ON COLUMN remote_accounts.email IS 'kept: a column comment fits the local table too';
CREATE VIEW account_emails AS SELECT id, email FROM remote_accounts;
CREATE SUBSCRIPTION pct_sub CONNECTION 'host=prod.internal user=repl password={SECRET}'
    PUBLICATION shop WITH (connect = false);
"""
RULES = """version: 1
tables:
  public.customers:
    columns: {id: keep, email: {transform: email, unique: true}}
"""
COVERED = (RULES + "  public.remote_accounts:\n    skip: true\n"
           "schema:\n  keep_comments: [foreign table column public.remote_accounts.email]\n")
COLUMNS = ("SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull FROM pg_attribute a "
           "WHERE a.attrelid = 'public.remote_accounts'::regclass AND a.attnum > 0 ORDER BY a.attnum")
REACHING_OUT = ("SELECT (SELECT count(*) FROM pg_foreign_server), (SELECT count(*) FROM pg_user_mappings), "
                "(SELECT count(*) FROM pg_foreign_data_wrapper), (SELECT count(*) FROM pg_foreign_table), "
                "(SELECT count(*) FROM pg_subscription WHERE subdbid = "
                "(SELECT oid FROM pg_database WHERE datname = current_database()))")


@pytest.fixture
def fdw_source(pg, new_db):
    dsn = new_db("pct_fdw")
    name = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    with psycopg.connect(pg, autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name)))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(SOURCE)
    yield dsn
    with psycopg.connect(dsn, autocommit=True) as conn:  # a database with a subscription cannot be dropped
        conn.execute("ALTER SUBSCRIPTION pct_sub SET (slot_name = NONE)")
        conn.execute("DROP SUBSCRIPTION pct_sub")


@pytest.fixture
def sample_export(fdw_source, tmp_path, masking_key):
    """Overrides conftest's: the `clones` fixture seeds its base from this export instead."""
    url = f"file://{tmp_path}/fdw-export"
    rules = parse_rules(COVERED)
    run_export(fdw_source, rules.bind(masking_key), url)
    verify_and_record(open_storage(url), fdw_source, rules.bind(masking_key))
    return url


def test_coverage_refuses_a_foreign_table_until_skipped(fdw_source, tmp_path, masking_key):
    with psycopg.connect(fdw_source) as conn:
        catalog = load_catalog(conn)
    assert catalog.tables["public.remote_accounts"].kind == "foreign"
    problems = check(catalog, parse_rules(RULES).bind(KEY.encode())).problems
    assert [(p.table, p.kind) for p in problems] == [("public.remote_accounts", "missing-table")]
    assert "skip: true" in problems[0].message
    for other in ("    skip: true\n    where: \"id > 0\"\n", "    columns: {id: keep, email: email}\n"):
        problems = check(catalog, parse_rules(RULES + "  public.remote_accounts:\n" + other).bind(KEY.encode())).problems
        assert [(p.table, p.kind) for p in problems] == [("public.remote_accounts", "invalid")]
    assert check(catalog, parse_rules(COVERED).bind(KEY.encode())).ok
    url = f"file://{tmp_path}/refused"
    with pytest.raises(CoverageError, match=r"public\.remote_accounts"):
        run_export(fdw_source, parse_rules(RULES).bind(masking_key), url)
    assert not list(Path(tmp_path).rglob("*.sql"))  # refused before any schema was written


def test_nothing_reaching_out_leaves_the_source(fdw_source, sample_export, clones):
    manifest = read_manifest(open_storage(sample_export))
    assert manifest["left_behind"] == {"foreign_tables_made_local": ["public.remote_accounts"], "servers": 1,
                                       "user_mappings": 1, "foreign_data_wrappers": 1, "subscriptions": 1,
                                       "event_triggers": 0}
    by = {t["name"]: t for t in manifest["tables"]}
    assert by["public.remote_accounts"]["skipped"] and not by["public.remote_accounts"]["files"]
    files = [p for p in Path(sample_export.removeprefix("file://")).rglob("*") if p.is_file()]
    for needle in (SECRET, "prod.internal", "prod_primary", "pct_wrapper", "the live primary", "live accounts"):
        assert not [p.name for p in files if needle.encode() in p.read_bytes()], needle
    source_columns = rows(fdw_source, COLUMNS)
    # The base (seeded by `clones`) and a clone of it: nothing reaches out, the table is local and empty.
    clones.snapshot("r1")
    env = f"preview-t{uuid.uuid4().hex[:8]}"
    clones.begin_restore(RestoreRequest(env=env, profile="preview", ttl_hours=1, snapshot="latest",
                                        requested_by="pytest"), "r1")
    clones.finish_restore(env, "r1", ())
    for dsn in (clones.base_dsn, with_dbname(clones.admin_dsn, env)):
        assert rows(dsn, REACHING_OUT) == [(0, 0, 0, 0, 0)]
        assert rows(dsn, "SELECT relkind FROM pg_class WHERE oid = 'public.remote_accounts'::regclass") == [("r",)]
        assert rows(dsn, COLUMNS) == source_columns
        assert rows(dsn, "SELECT count(*) FROM account_emails") == [(0,)]  # the view still compiles and runs
        assert rows(dsn, "SELECT col_description('public.remote_accounts'::regclass, 2)") == \
            [("kept: a column comment fits the local table too",)]
        assert rows(dsn, "SELECT count(*) FROM customers") == [(10,)]


def test_pg_dump_gets_the_password_through_its_environment(pg, password_auth, fdw_source, monkeypatch):
    name, password = make_role(pg, "pct_dumper", "LOGIN", "IN ROLE pg_read_all_data")
    calls = []
    real_run = pgtools.subprocess.run

    def spy(cmd, **kw):
        calls.append((cmd, kw.get("env")))
        return real_run(cmd, **kw)

    monkeypatch.setattr(pgtools.subprocess, "run", spy)
    try:
        dsn = dsn_as(fdw_source, name, password)
        with psycopg.connect(dsn) as conn:
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            version = conn.info.server_version
            dump = pgtools.dump_schema(dsn, "pre-data", None, version, pgtools.stand_ins(conn))
    finally:
        drop_role(pg, name)
    assert 'CREATE TABLE "public"."remote_accounts"' in dump.sql and SECRET not in dump.sql
    dumps = [(cmd, env) for cmd, env in calls if "--schema-only" in cmd]
    assert dumps and all(password not in " ".join(cmd) for cmd, _ in calls)
    assert all(env["PGPASSWORD"] == password for _, env in dumps)


def test_scaffold_skips_foreign_tables_without_reading_them(fdw_source):
    from prodclone.masking.scaffold import scaffold

    with psycopg.connect(fdw_source) as conn:  # reading the foreign table would fail: its wrapper has no handler
        catalog = load_catalog(conn)
        rules = parse_rules(scaffold(conn, catalog))
    assert rules.tables["public.remote_accounts"].skip and not rules.tables["public.remote_accounts"].columns
    assert check(catalog, rules.bind(KEY.encode())).ok
