"""Production's schema text is hostile: every legal Postgres name must round-trip
through scaffold -> check -> export -> seed -> clone, and no name may run as SQL.

The source holds names with quotes, `;`, spaces, unicode, dots, capitals, YAML
syntax, a line break and 63-byte multi-byte names, in schemas, tables and
columns, including a split primary key, an FK that subsetting follows, identity
and serial sequences and partitions; two table names are injections that once
dropped `victim` (via `rules scaffold`, and by escaping the export's read-only
transaction with COMMIT; both reproduced against the code before the fix). The source is owned by a password-authenticated,
non-superuser role that could drop `victim` if anything ran its SQL.
"""

import contextlib
import dataclasses
import io
import json
import uuid

import psycopg
import pytest
import yaml
from psycopg import sql

from prodclone.catalog import load_catalog, qualified_name
from prodclone.cli import main
from prodclone.db import dbname_of, with_dbname
from prodclone.errors import RulesError
from prodclone.export import Unit, run_export, verify_and_record
from prodclone.masking.rules import json_schema, load_rules, parse_rules
from prodclone.storage import open_storage
from support import KEY, drop_role, dsn_as, make_role, rows

WEIRD = "Weird Schema;"
DOTTED = "my.schema"
LONG_SCHEMA = "ß" * 31 + "x"  # 63 bytes, 32 characters
LONG_TABLE = "ü" * 31 + "T"
LONG_COLUMN = "é" * 31 + "c"
SCAFFOLD_ATTACK = 'v" WHERE false; DROP TABLE victim; --'
COPY_ATTACK = 'x" t0) TO STDOUT; COMMIT; DROP TABLE victim; --'
TABLE = 'Ta"ble ünï'
PK = 'Ïd "pk";'
PARENT, CHILD, PARENT_KEY = "Parent.Table 100%s", "Child ; Table", 'Key "K" %%'
EVENTS = 'Events "P"'


def _i(*parts: str) -> str:
    """A quoted identifier for the test's own setup SQL (composed the safe way, as the product must)."""
    return sql.Identifier(*parts).as_string(None)


SCHEMA = f"""
CREATE SCHEMA {_i(WEIRD)}; CREATE SCHEMA {_i(DOTTED)}; CREATE SCHEMA {_i(LONG_SCHEMA)};
CREATE TABLE victim (id int PRIMARY KEY, note text);
INSERT INTO victim SELECT i, 'keep me ' || i FROM generate_series(1, 3) i;
-- v and x make the statement before each injected DROP valid, as an attacker would
CREATE TABLE v (id int, note text); CREATE TABLE x (id int, note text);
CREATE TABLE {_i(SCAFFOLD_ATTACK)} (id serial PRIMARY KEY, note text);
INSERT INTO {_i(SCAFFOLD_ATTACK)} (note) SELECT 'note ' || i FROM generate_series(1, 5) i;
CREATE TABLE {_i(COPY_ATTACK)} (id serial PRIMARY KEY, note text);
INSERT INTO {_i(COPY_ATTACK)} (note) SELECT 'note ' || i FROM generate_series(1, 5) i;
CREATE TABLE {_i(WEIRD, TABLE)} (
    {_i(PK)} bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    {_i("e-mail: x #y")} text, {_i("a.b")} text, {_i("Name")} text, {_i("null")} int, {_i("line" + chr(10) + "break")} text);
INSERT INTO {_i(WEIRD, TABLE)} ({_i("e-mail: x #y")}, {_i("a.b")}, {_i("Name")}, {_i("null")}, {_i("line" + chr(10) + "break")})
    SELECT 'person' || i || '@mail.example.org', 'ab ' || i, 'Name ' || i, i, 'x' FROM generate_series(1, 200) i;
CREATE TABLE {_i(DOTTED, PARENT)} ({_i(PARENT_KEY)} serial PRIMARY KEY, {_i("Label %s")} text);
INSERT INTO {_i(DOTTED, PARENT)} ({_i("Label %s")}) SELECT 'label ' || i FROM generate_series(1, 20) i;
CREATE TABLE {_i(DOTTED, CHILD)} (id serial PRIMARY KEY,
    {_i("parent ref")} int NOT NULL REFERENCES {_i(DOTTED, PARENT)} ({_i(PARENT_KEY)}), note text);
INSERT INTO {_i(DOTTED, CHILD)} ({_i("parent ref")}, note) SELECT 1 + i % 20, 'child ' || i FROM generate_series(0, 59) i;
CREATE TABLE {_i(WEIRD, EVENTS)} ({_i("At; t")} int PRIMARY KEY, {_i("What?")} text) PARTITION BY RANGE ({_i("At; t")});
CREATE TABLE {_i(WEIRD, "Events P 1")} PARTITION OF {_i(WEIRD, EVENTS)} FOR VALUES FROM (0) TO (100);
CREATE TABLE {_i(WEIRD, "Events.P.2")} PARTITION OF {_i(WEIRD, EVENTS)} FOR VALUES FROM (100) TO (200);
INSERT INTO {_i(WEIRD, EVENTS)} SELECT i, 'what ' || i FROM generate_series(0, 149) i;
CREATE TABLE {_i(LONG_SCHEMA, LONG_TABLE)} ({_i(LONG_COLUMN)} serial PRIMARY KEY, v text);
INSERT INTO {_i(LONG_SCHEMA, LONG_TABLE)} (v) SELECT 'v' || i FROM generate_series(1, 10) i;
CREATE TABLE {_i("Mixed")} (id int); CREATE TABLE mixed (id int);
INSERT INTO {_i("Mixed")} VALUES (1), (2); INSERT INTO mixed VALUES (1), (2), (3);
CREATE TABLE {_i("a: b #c")} ({_i("- x")} text, {_i("yes")} boolean);
INSERT INTO {_i("a: b #c")} VALUES ('dash', true), ('dash2', false);
ANALYZE;
"""

# table key -> rows in the source
COUNTS = {
    "public.victim": 3, "public.v": 0, "public.x": 0, qualified_name("public", SCAFFOLD_ATTACK): 5,
    qualified_name("public", COPY_ATTACK): 5, qualified_name(WEIRD, TABLE): 200, qualified_name(DOTTED, PARENT): 20,
    qualified_name(DOTTED, CHILD): 60, qualified_name(WEIRD, EVENTS): 150, qualified_name(LONG_SCHEMA, LONG_TABLE): 10,
    "public.Mixed": 2, "public.mixed": 3, "public.a: b #c": 2,
}
PARENT_WHERE = f"{_i(PARENT_KEY)} <= 10"  # subsetting: 10 parents, and the 30 children that reference them


def _fingerprint(dsn: str) -> str:
    """Everything a stray statement could change: the catalog (relations, columns, functions, triggers) and
    every table's rows."""
    with psycopg.connect(dsn) as conn:
        parts = [conn.execute("""
            SELECT md5(string_agg(x, ',' ORDER BY x)) FROM (
              SELECT format('%s %s %s %s %s', c.oid, n.nspname, c.relname, c.relkind, c.relfilenode) x
                FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              UNION ALL SELECT format('%s %s %s %s', attrelid, attnum, attname, atttypid) FROM pg_attribute
              UNION ALL SELECT format('%s %s', oid, proname) FROM pg_proc
              UNION ALL SELECT format('%s %s', oid, tgname) FROM pg_trigger) s
            """).fetchone()[0]]
        for table in load_catalog(conn).tables.values():
            parts.append(conn.execute(sql.SQL("SELECT md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) "
                                              "FROM {} t").format(table.ident)).fetchone()[0])
    return ",".join(parts)


@pytest.fixture(scope="module")
def hostile(pg, password_auth, tmp_path_factory):
    """The hostile source (owned by a non-superuser that logs in with a password), its scaffolded and
    checked rules (plus a subsetting `where`), one export of it, and the fingerprint taken before anything ran."""
    owner, password = make_role(pg, "pct_prod", "LOGIN")
    dbname = f"pct_hostile_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg, autocommit=True) as c:
        c.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(dbname), sql.Identifier(owner)))
    src = dsn_as(pg, owner, password, dbname)
    with psycopg.connect(src) as c:
        c.execute(SCHEMA)
    before = _fingerprint(src)
    tmp = tmp_path_factory.mktemp("hostile")
    yield {"src": src, "tmp": tmp, "before": before}
    with psycopg.connect(pg, autocommit=True) as c:
        c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))
    drop_role(pg, owner)


@pytest.fixture(scope="module")
def exported(hostile):
    """scaffold -> check -> (add a where) -> export with split key ranges and two workers -> verify."""
    src, tmp = hostile["src"], hostile["tmp"]
    rules_path = tmp / "rules.yaml"
    with contextlib.redirect_stdout(io.StringIO()) as out:  # capsys is per test; this fixture is per module
        assert main(["rules", "scaffold", "--source", src]) == 0
    rules_path.write_text(out.getvalue())
    with contextlib.redirect_stdout(io.StringIO()) as report:
        code = main(["rules", "check", "--source", src, "--rules", str(rules_path)])
    assert code == 0, report.getvalue()
    data = yaml.safe_load(rules_path.read_text())
    data["tables"][qualified_name(DOTTED, PARENT)]["where"] = PARENT_WHERE
    rules_path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False))
    url = f"file://{tmp}/exp"
    rules = load_rules(rules_path)
    manifest = run_export(src, rules.bind(KEY.encode()), url, jobs=2, split_rows=50)
    report = verify_and_record(open_storage(url), src, rules.bind(KEY.encode()))
    return {**hostile, "rules_path": rules_path, "url": url, "manifest": manifest, "verify": report}


def test_scaffold_writes_valid_yaml_that_names_every_table_and_column(exported):
    text = exported["rules_path"].read_text()
    rules = load_rules(exported["rules_path"])
    assert {k: None for k in rules.tables} == dict.fromkeys(COUNTS)
    cols = rules.tables[qualified_name(WEIRD, TABLE)].columns
    assert set(cols) == {PK, "e-mail: x #y", "a.b", "Name", "null", "line\nbreak"}
    assert set(rules.tables[qualified_name(LONG_SCHEMA, LONG_TABLE)].columns) == {LONG_COLUMN, "v"}
    assert set(rules.tables["public.a: b #c"].columns) == {"- x", "yes"}
    assert "DROP TABLE victim" in text  # the name is there, as data


def test_export_runs_no_name_as_sql_and_changes_nothing(exported):
    src = exported["src"]
    assert rows(src, "SELECT count(*) FROM victim") == [(3,)]
    assert _fingerprint(src) == exported["before"]
    m = exported["manifest"]
    got = {t["name"]: t["rows"] for t in m["tables"]}
    assert got == {**COUNTS, qualified_name(DOTTED, PARENT): 10, qualified_name(DOTTED, CHILD): 30}
    split = next(t for t in m["tables"] if t["name"] == qualified_name(WEIRD, TABLE))
    assert len(split["files"]) >= 3  # the identity PK with a hostile name drove key-range splitting
    seqs = {s["name"] for s in m["sequences"]}
    assert len(seqs) == 6 and all(rows(src, "SELECT %s::regclass::text", (s,)) for s in seqs)
    assert exported["verify"]["files"] == sum(len(t["files"]) for t in m["tables"])


def test_data_file_names_are_safe_distinct_and_short(exported):
    paths = [f["path"] for t in exported["manifest"]["tables"] for f in t["files"]]
    assert len({p.lower() for p in paths}) == len(paths)  # distinct even on case-insensitive storage
    for p in paths:
        name = p.removeprefix("data/")
        assert "/" not in name and ".." not in name.split(".") and len(name.encode()) <= 255, p
    assert Unit("public.users").path == "data/public.users.0000.copy"  # ordinary names keep their paths
    for evil in ('public."../../etc"', 'public."a/b"', "public.%2F", "x.y"):
        assert Unit(evil).path.count("/") == 1
    assert len({Unit(n).path for n in ("public.%2F", 'public."/"', "public.%252F")}) == 3
    long_a, long_b = qualified_name(LONG_SCHEMA, LONG_TABLE), qualified_name(LONG_SCHEMA, LONG_TABLE[:-1] + "U")
    assert Unit(long_a).path != Unit(long_b).path


def test_preview_accepts_quoted_and_canonical_table_names(exported, capsys):
    src, rules = exported["src"], str(exported["rules_path"])
    for name in (f'"{WEIRD}"."{TABLE.replace(chr(34), 2 * chr(34))}"', qualified_name(WEIRD, TABLE)):
        assert main(["rules", "preview", "--source", src, "--rules", rules, "--table", name, "--limit", "2"]) == 0
        assert "(2 rows of" in capsys.readouterr().out
    assert main(["rules", "preview", "--source", src, "--rules", rules, "--table", "no_schema"]) == 1
    assert "not a schema-qualified table name" in capsys.readouterr().err


def test_a_concurrent_sessions_temp_table_does_not_stop_the_export(exported):
    """Production noise: another session holds a temp table with a serial (and a TOAST-able column)."""
    with psycopg.connect(exported["src"], autocommit=True) as other:
        other.execute("CREATE TEMP TABLE t (id serial, body text)")
        other.execute("INSERT INTO t (body) VALUES ('x')")
        manifest = run_export(exported["src"], load_rules(exported["rules_path"]).bind(KEY.encode()),
                              f"file://{exported['tmp']}/exp-noise")
        assert other.execute("SELECT count(*) FROM t").fetchone() == (1,)  # still there, still its own
    assert {t["name"] for t in manifest["tables"]} == set(COUNTS)
    assert not any("pg_temp" in s["name"] for s in manifest["sequences"])
    assert len(manifest["sequences"]) == len(exported["manifest"]["sequences"])


def _clone_driver(base_dsn: str):
    from prodclone.config import load_config
    from prodclone.drivers.base import MemorySecrets
    from prodclone.drivers.postgres import PostgresDriver

    cfg = dataclasses.replace(load_config(), registry_database=f"pct_reg_{uuid.uuid4().hex[:8]}")
    return PostgresDriver(base_dsn, cfg, MemorySecrets(), busy_wait=5)


def _drop_driver_leftovers(pg, driver) -> None:
    if driver._registry_ready:
        for env in driver.environments():
            driver.teardown(env.name)
    with psycopg.connect(pg, autocommit=True) as c:
        for s in driver.snapshots() if driver._registry_ready else []:
            c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(s.id)))
        c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(driver.cfg.registry_database)))


def test_seed_and_clone_keep_every_row_of_every_hostile_table(exported, pg, base_role, new_db):
    from prodclone.drivers.base import RestoreRequest
    from prodclone.seed import seed

    base = base_role(dbname_of(new_db("pct_hbase")))
    driver = _clone_driver(base)
    try:
        seed(exported["url"], base)
        expected = {t["name"]: t["rows"] for t in exported["manifest"]["tables"]}
        driver.snapshot("hostile-run", export=exported["url"])
        env = f"preview-h{uuid.uuid4().hex[:8]}"
        driver.begin_restore(RestoreRequest(env=env, profile="preview", ttl_hours=1, snapshot="latest",
                                            requested_by="pytest"), "run-1")
        driver.finish_restore(env, "run-1", ())
        for dsn in (with_dbname(pg, dbname_of(base)), with_dbname(pg, env)):
            with psycopg.connect(dsn) as conn:
                got = {name: conn.execute(sql.SQL("SELECT count(*) FROM {}").format(t.ident)).fetchone()[0]
                       for name, t in load_catalog(conn).tables.items()}
                assert got == expected
                # identity and serial sequences continue past the data
                assert conn.execute(sql.SQL("INSERT INTO {} ({}) VALUES ('n') RETURNING {}").format(
                    sql.Identifier(WEIRD, TABLE), sql.Identifier("Name"), sql.Identifier(PK))).fetchone()[0] == 201
                assert conn.execute(sql.SQL("SELECT nextval(pg_get_serial_sequence({}, {}))").format(
                    sql.Literal(_i(LONG_SCHEMA, LONG_TABLE)), sql.Literal(LONG_COLUMN))).fetchone()[0] == 11
                conn.rollback()
    finally:
        _drop_driver_leftovers(pg, driver)


def test_rules_keys_are_normalised_and_checked_against_the_pattern():
    r = parse_rules('version: 1\ntables:\n  \'"public"."users"\': {}\n  \'"my.schema"."a""b"\': {}\n  x."y": {}\n')
    assert set(r.tables) == {"public.users", '"my.schema"."a""b"', "x.y"}
    assert r.tables["public.users"].name == "public.users"
    with pytest.raises(RulesError, match=r"r.yaml:4:3: tables: 'public.users' names public.users again"):
        parse_rules("version: 1\ntables:\n  '\"public\".users': {}\n  public.users: {}\n", source="r.yaml")
    for bad in ("users", "a.b.c", "'\"a.b'", "1.5", r'"public.\"x\"\n"'):  # YAML keys
        with pytest.raises(RulesError, match="tables"):
            parse_rules(f"version: 1\ntables:\n  {bad}: {{}}\n")
    assert json.dumps(json_schema()["properties"]["tables"]["propertyNames"])  # serialisable for editors
