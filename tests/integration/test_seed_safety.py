"""Seed against a real Postgres as a non-superuser base role (password auth): it replaces only the base it
marked under that name, refuses names it cannot work with, and a seed killed at any step leaves only what the
next seed repairs or removes by itself."""

import os
import re
import subprocess
import sys

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from prodclone import seed as seed_module
from prodclone.cli import main
from prodclone.db import dbname_of, with_dbname
from prodclone.drivers.base import RestoreRequest
from prodclone.errors import SeedError
from prodclone.marker import format_marker
from prodclone.seed import owner_role, seed
from support import ROOT, drop_role, rows

COUNTS_SQL = "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM orders)"


def _server_state(pg, *skip):
    """Every database's name, mark and whether it accepts connections, but ``skip``'s: what must not change."""
    return rows(pg, "SELECT datname, shobj_description(oid, 'pg_database'), datallowconn FROM pg_database "
                    "WHERE datname <> ALL(%s) ORDER BY 1", (list(skip),))


def _admin(pg, statement, *names):
    with psycopg.connect(pg, autocommit=True) as c:
        c.execute(sql.SQL(statement).format(*map(sql.Identifier, names)))


def _role(base_role):
    return psycopg.conninfo.conninfo_to_dict(base_role())["user"]


def _work_names(base):
    return base, base + "__staging", base + "__previous"


def _owner_login(pg, base):
    """(can log in, has a password, seconds its password stays valid) of ``base``'s owner role."""
    return rows(pg, "SELECT rolcanlogin, rolpassword IS NOT NULL, extract(epoch FROM rolvaliduntil - now()) "
                    "FROM pg_authid WHERE rolname = %s", (owner_role(base),))[0]


@pytest.fixture
def role_base(base_role, new_db, sample_export):
    """A base seeded by the non-superuser base role; returns (its DSN as that role, its name)."""
    name = dbname_of(new_db("pct_sbase"))
    dsn = base_role(name)
    seed(sample_export, dsn)
    return dsn, name


# -- 5. seed --overwrite replaces only the base ----------------------------------------------------------


def test_overwrite_refuses_the_registry_a_snapshot_and_a_clone(clones, pg, sample_export, capsys):
    snap = clones.snapshot("seed-safety-run")
    env = "preview-seedsafety"
    clones.begin_restore(RestoreRequest(env=env, profile="preview", ttl_hours=1, snapshot="latest",
                                        requested_by="pytest"), "run-1")
    clones.finish_restore(env, "run-1", ())
    registry = clones.cfg.registry_database
    before = _server_state(pg)
    counts = {db: rows(with_dbname(pg, db), "SELECT count(*) FROM pg_class")[0][0] for db in (registry, env)}
    # Even the superuser's seed refuses: the marks decide, not privileges.
    for name, what in ((registry, "prodclone's registry"), (snap.id, f"a snapshot of base {clones.base!r}"),
                       (env, f"the clone of environment {env!r}")):
        with pytest.raises(SeedError, match=f"is {re.escape(what)}.*; seed replaces only the base"):
            seed(sample_export, with_dbname(pg, name), overwrite=True)
    assert main(["seed", "--from", sample_export, "--target", with_dbname(pg, registry), "--overwrite"]) == 1
    assert "prodclone's registry" in capsys.readouterr().err
    assert _server_state(pg) == before  # nothing created, renamed, closed or dropped
    assert {db: rows(with_dbname(pg, db), "SELECT count(*) FROM pg_class")[0][0] for db in (registry, env)} == counts


def test_overwrite_refuses_a_work_database_and_an_unmarked_one(role_base, base_role, pg, sample_export):
    dsn, name = role_base
    other = name + "_other"
    _admin(pg, "CREATE DATABASE {}", other)
    leftover = name + "x__staging"
    _admin(pg, "CREATE DATABASE {}", leftover)
    with psycopg.connect(pg, autocommit=True) as c:
        c.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(
            sql.Identifier(leftover), sql.Literal(format_marker(role="base", base=name + "x"))))
    try:
        before = _server_state(pg)
        with pytest.raises(SeedError, match=f"is a work database of seeding base {name + 'x'!r}"):
            seed(sample_export, base_role(leftover), overwrite=True)
        with pytest.raises(SeedError, match="is a database prodclone did not create"):
            seed(sample_export, base_role(other), overwrite=True)
        assert _server_state(pg) == before
    finally:
        _admin(pg, "DROP DATABASE {}", leftover)
        _admin(pg, "DROP DATABASE {}", other)


def test_bases_marked_by_the_previous_format_are_replaced_only_under_their_own_name(base_role, pg, new_db,
                                                                                    sample_export):
    name = dbname_of(new_db("pct_legacy"))
    legacy = "managed-by=prodclone; role=base; export=2025-01-01T00:00:00+00:00; rules=abcdef012345"
    for db in (name, name + "__previous"):
        _admin(pg, "CREATE DATABASE {} OWNER {}", db, _role(base_role))
        with psycopg.connect(pg, autocommit=True) as c:
            c.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(db), sql.Literal(legacy)))
    # A legacy mark cannot tell whose leftover `__previous` is: refused, both untouched.
    before = _server_state(pg)
    with pytest.raises(SeedError, match="__previous' is a base marked by an older prodclone, under another name"):
        seed(sample_export, base_role(name), overwrite=True)
    assert _server_state(pg) == before
    _admin(pg, "DROP DATABASE {}", name + "__previous")
    # Under its own name, a legacy base is replaced, and from then on carries the new mark.
    seed(sample_export, base_role(name), overwrite=True)
    comment = rows(pg, "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s", (name,))[0][0]
    assert f"role=base; base={name};" in comment
    assert rows(base_role(name), "SELECT count(*) FROM users")[0][0] > 0


@pytest.mark.parametrize("name", ["b" * 54, "é" * 27, "b" * 62, "b" * 63])
def test_names_whose_work_names_would_be_truncated_are_refused_before_any_work(base_role, pg, name):
    """63 - len('__previous') = 53 bytes is the longest usable base name; bytes, not characters."""
    exists = len(name.encode()) == 63
    if exists:  # a marked base of that name: an overwrite used to destroy it
        _admin(pg, "CREATE DATABASE {} OWNER {}", name, _role(base_role))
        with psycopg.connect(pg, autocommit=True) as c:
            c.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                sql.Identifier(name), sql.Literal(format_marker(role="base", base=name))))
    try:
        before = _server_state(pg)
        # The export does not even exist: the name is refused before it is read.
        with pytest.raises(SeedError, match="is too long.*at most 53 bytes"):
            seed("file:///nonexistent/export", base_role(name), overwrite=True)
        assert _server_state(pg) == before
    finally:
        if exists:
            _admin(pg, "DROP DATABASE {}", name)


def test_the_longest_usable_name_round_trips(base_role, pg, sample_export, sample_source):
    name = "c" * 53
    try:
        seed(sample_export, base_role(name))
        seed(sample_export, base_role(name), overwrite=True)
        assert rows(base_role(name), COUNTS_SQL)[0] == (sample_source[1]["users"], sample_source[1]["orders"])
        assert [r[0] for r in rows(pg, "SELECT datname FROM pg_database WHERE datname LIKE 'ccc%'")] == [name]
    finally:
        _admin(pg, "DROP DATABASE IF EXISTS {} WITH (FORCE)", name)


# -- 6. crash safety -------------------------------------------------------------------------------------


def _killed_seed(url, dsn, fault, overwrite=True):
    """Run seed in a subprocess SIGKILLed at ``fault`` (no cleanup handler runs)."""
    env = dict(os.environ, PRODCLONE_FAULT=fault, PYTHONPATH=f"{ROOT / 'plugins'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    code = "import sys; from prodclone.seed import seed; seed(sys.argv[1], sys.argv[2], overwrite=sys.argv[3] == '1')"
    proc = subprocess.run([sys.executable, "-c", code, url, dsn, "1" if overwrite else "0"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr  # it really died at that point


FAULTS = ["seed.created_staging", "seed.marked_staging", "seed.owner_login", "seed.filling", "seed.filled",
          "seed.closed_base", "seed.swapping", "seed.swapped"]


@pytest.mark.parametrize("fault", FAULTS)
def test_a_seed_killed_at_any_step_is_repaired_by_the_next(role_base, pg, sample_export, sample_source, fault):
    dsn, name = role_base
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("CREATE TABLE from_the_old_base ()")
    before = _server_state(pg, *_work_names(name))
    _killed_seed(sample_export, dsn, fault)
    left = {r[0] for r in rows(pg, "SELECT datname FROM pg_database WHERE datname LIKE %s", (name + "%",))}
    assert name in left  # whatever the step, the base was never lost
    seed(sample_export, dsn, overwrite=True)
    assert rows(dsn, COUNTS_SQL)[0] == (sample_source[1]["users"], sample_source[1]["orders"])
    assert rows(dsn, "SELECT to_regclass('from_the_old_base')")[0][0] is None  # really the new base
    assert rows(pg, "SELECT datname, datallowconn FROM pg_database WHERE datname LIKE %s", (name + "%",)) == [(name, True)]
    assert _server_state(pg, *_work_names(name)) == before  # nothing else changed
    assert _owner_login(pg, name)[:2] == (False, False)


@pytest.mark.parametrize("fault", ["seed.created_staging", "seed.marked_staging", "seed.owner_login", "seed.filled"])
def test_a_first_seed_killed_is_repaired_by_the_next(base_role, new_db, pg, sample_export, sample_source, fault):
    """No base yet: even the unmarked staging a kill right after CREATE DATABASE leaves is recognised."""
    name = dbname_of(new_db("pct_first"))
    before = _server_state(pg, *_work_names(name))
    _killed_seed(sample_export, base_role(name), fault, overwrite=False)
    assert rows(pg, "SELECT datname FROM pg_database WHERE datname = %s", (name + "__staging",))
    seed(sample_export, base_role(name))
    assert rows(base_role(name), COUNTS_SQL)[0] == (sample_source[1]["users"], sample_source[1]["orders"])
    assert rows(pg, "SELECT datname FROM pg_database WHERE datname LIKE %s", (name + "%",)) == [(name,)]
    assert _server_state(pg, *_work_names(name)) == before


def test_a_first_seed_killed_once_it_made_the_owner_role_reuses_it(base_role, new_db, pg, sample_export):
    """The role is created and marked in one transaction: a kill right after leaves it marked, and the next
    seed uses that very role (same oid), with nothing else left over and its own settings reset."""
    name = dbname_of(new_db("pct_first"))
    _killed_seed(sample_export, base_role(name), "seed.owner_created", overwrite=False)
    made = rows(pg, "SELECT oid, shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = %s",
                (owner_role(name),))
    assert made and made[0][1] == format_marker(role="owner", base=name)
    assert rows(pg, "SELECT datname FROM pg_database WHERE datname LIKE %s", (name + "%",)) == []
    # As code of an earlier load could do to its own role: reset, or the whole load would time out.
    _admin(pg, "ALTER ROLE {} SET default_transaction_read_only = on", owner_role(name))
    seed(sample_export, base_role(name))
    assert rows(pg, "SELECT oid FROM pg_roles WHERE rolname = %s", (owner_role(name),)) == [(made[0][0],)]
    assert rows(base_role(name), "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'") == \
        [(owner_role(name),)]


def test_a_seed_killed_while_the_owner_role_could_log_in_is_shut_by_the_next_even_one_that_refuses(
        role_base, pg, sample_export):
    """Killed between the owner role's one-time LOGIN and the session that ends it: the role is left able to
    log in, with a password only the dead process knew, for minutes at most; the next seed shuts it first."""
    dsn, name = role_base
    _killed_seed(sample_export, dsn, "seed.owner_login")
    can_login, has_password, valid_for = _owner_login(pg, name)
    assert can_login and has_password and 0 < valid_for <= 600
    with pytest.raises(SeedError, match="already exists"):
        seed(sample_export, dsn)
    assert _owner_login(pg, name)[:2] == (False, False)


def test_an_owner_login_pg_hba_refuses_says_what_to_allow_and_leaves_nothing(role_base, pg, sample_export,
                                                                             monkeypatch):
    """What a pg_hba.conf without a password rule for the owner role looks like (here: a password the server
    refuses): a message naming the role and pg_hba.conf, no password in it, the staging database gone, the
    role shut again and the base as it was."""
    dsn, name = role_base
    monkeypatch.setattr(seed_module, "make_conninfo", lambda dsn, **kw: make_conninfo(dsn, **kw | {"password": "x"}))
    before = _server_state(pg)
    with pytest.raises(SeedError, match=f"as the base's owner role {owner_role(name)!r}.*pg_hba.conf must let it "
                                        f"log in with a password") as raised:
        seed(sample_export, dsn, overwrite=True)
    assert "password=" not in str(raised.value).replace("password=***", "")
    assert _server_state(pg) == before and _owner_login(pg, name)[:2] == (False, False)
    assert rows(dsn, COUNTS_SQL)[0][0] > 0


@pytest.mark.parametrize("setup, refusal", [
    ("CREATE ROLE {} NOLOGIN", "exists but is not prodclone's owner role of base"),
    ("COMMENT ON ROLE {} IS 'managed-by=prodclone; role=owner; base=another'", "is not prodclone's owner role"),
    ("ALTER ROLE {} CREATEDB BYPASSRLS", "has CREATEDB, BYPASSRLS; seed runs production's code as that role"),
    ("GRANT pg_read_server_files TO {}", "has membership of 'pg_read_server_files'"),
])
def test_an_owner_role_that_is_not_ours_or_has_any_power_stops_the_seed(role_base, base_role, pg, sample_export,
                                                                         setup, refusal):
    """Production's code runs with the owner role's rights: a role of that name that prodclone did not mark for
    this base, or that has any attribute or membership, is never used (nor changed); nothing else is."""
    dsn, name = role_base
    owner = owner_role(name)
    if setup.startswith("CREATE"):  # someone else's role under that name
        drop_role(pg, owner)
    _admin(pg, setup, owner)
    try:
        before = _server_state(pg)
        with pytest.raises(SeedError, match=re.escape(refusal)):
            seed(sample_export, dsn, overwrite=True)
        assert _server_state(pg) == before
    finally:
        drop_role(pg, owner)


def test_a_closed_base_is_reopened_even_by_a_seed_that_refuses(role_base, pg, sample_export):
    dsn, name = role_base
    _killed_seed(sample_export, dsn, "seed.closed_base")
    with pytest.raises(SeedError, match="already exists"):
        seed(sample_export, dsn)
    assert rows(pg, "SELECT datallowconn FROM pg_database WHERE datname = %s", (name,)) == [(True,)]
    assert rows(dsn, "SELECT count(*) FROM users")[0][0] > 0


def test_a_base_that_survives_only_as_previous_is_put_back_not_dropped(role_base, pg, sample_export):
    dsn, name = role_base
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("CREATE TABLE from_the_old_base ()")
    _admin(pg, "ALTER DATABASE {} RENAME TO {}", name, name + "__previous")
    with pytest.raises(SeedError, match="already exists"):
        seed(sample_export, dsn)
    assert rows(dsn, "SELECT to_regclass('from_the_old_base') IS NOT NULL")[0][0]
    assert rows(pg, "SELECT datname FROM pg_database WHERE datname LIKE %s", (name + "%",)) == [(name,)]


def test_an_unmarked_staging_that_is_not_empty_or_not_ours_is_never_dropped(role_base, base_role, pg, sample_export):
    dsn, name = role_base
    staging = name + "__staging"
    _admin(pg, "CREATE DATABASE {} OWNER {}", staging, _role(base_role))  # the role's, unmarked, but holds data
    with psycopg.connect(base_role(staging), autocommit=True) as c:
        c.execute("CREATE TABLE precious (id int)")
    with pytest.raises(SeedError, match="__staging' is a database prodclone did not create"):
        seed(sample_export, dsn, overwrite=True)
    assert rows(base_role(staging), "SELECT count(*) FROM precious")[0][0] == 0
    _admin(pg, "DROP DATABASE {}", staging)
    _admin(pg, "CREATE DATABASE {}", staging)  # empty, but the superuser's
    with pytest.raises(SeedError, match="__staging' is a database prodclone did not create"):
        seed(sample_export, dsn, overwrite=True)
    assert rows(pg, "SELECT count(*) FROM pg_database WHERE datname = %s", (staging,))[0][0] == 1


# -- 8. schema files are verified before anything runs ---------------------------------------------------


@pytest.mark.parametrize("section", ["pre-data", "post-data"])
def test_a_tampered_schema_file_is_refused_before_anything_runs(base_role, new_db, pg, sample_source, tmp_path,
                                                                rules, masking_key, section):
    from prodclone.export import run_export, verify_and_record
    from prodclone.storage import open_storage

    url = f"file://{tmp_path}/exp"
    run_export(sample_source[0], rules.bind(masking_key), url)
    verify_and_record(open_storage(url), sample_source[0], rules.bind(masking_key))
    name = dbname_of(new_db("pct_tamper"))
    seed(url, base_role(name))
    with psycopg.connect(base_role(name), autocommit=True) as c:
        c.execute("CREATE TABLE from_the_old_base ()")
    path = tmp_path / "exp" / "schema" / f"{section}.sql"
    path.write_text(path.read_text() + "\nCREATE TABLE pwned ();\n")
    before = _server_state(pg)
    with pytest.raises(SeedError, match=f"schema/{section}.sql: checksum mismatch.*Nothing was run"):
        seed(url, base_role(name), overwrite=True)
    assert _server_state(pg) == before  # no staging was even created
    assert rows(base_role(name), "SELECT to_regclass('from_the_old_base') IS NOT NULL")[0][0]


def test_a_second_seed_of_the_same_base_waits_its_turn(role_base, pg, sample_export):
    """Concurrent seeds would each take the other's staging for a leftover."""
    dsn, name = role_base
    with psycopg.connect(with_dbname(dsn, "postgres"), autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(hashtext(%s))", (f"prodclone:seed:{name}",))
        before = _server_state(pg)
        with pytest.raises(SeedError, match=f"another seed of {name!r} is running"):
            seed(sample_export, dsn, overwrite=True)
        assert _server_state(pg) == before
    seed(sample_export, dsn, overwrite=True)
