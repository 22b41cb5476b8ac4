"""Red team of the clone side, against a real Postgres driven by the non-superuser base role (password auth).

Each test is an attack by a clone user (holding a clone's credentials) or by a hostile production schema (its
contents arrive in the base, every snapshot and every clone). Each reproduces the attack, proves it does no
harm and that nothing else on the server changed. Attacks that broke the defences before their fix say so."""

import dataclasses
import uuid

import psycopg
import pytest
import yaml
from psycopg import sql

from prodclone import devpg, faults
from prodclone.db import dbname_of, with_dbname
from prodclone.drivers import postgres
from prodclone.drivers.base import CloneError
from prodclone.export import run_export, verify_and_record
from prodclone.marker import marked_as
from prodclone.masking.rules import load_rules
from prodclone.seed import owner_role, seed
from prodclone.storage import open_storage
from support import (
    KEY,
    RULES,
    assert_refused,
    clone_env,
    clone_request,
    clone_url,
    drop_role,
    restore,
    role_flags,
    rows,
    server_state,
)

# The clone user's stand-in for a built-in the base role's sessions call unqualified: where it may create in a
# schema on their search_path, a better-matching overload wins over pg_catalog's. It records who ran it, tries
# to give its own role CREATEDB/CREATEROLE and every database the caller owns, then answers like the built-in.
HIJACK = """
CREATE TABLE public.hijacked (by name);
GRANT INSERT ON public.hijacked TO PUBLIC;
CREATE FUNCTION public.shobj_description(oid, text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE d name;
BEGIN
  IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN  -- the test's own harness: leave it be
    RETURN pg_catalog.shobj_description($1, $2::name);
  END IF;
  INSERT INTO public.hijacked VALUES (current_user);
  BEGIN
    EXECUTE format('ALTER ROLE %I CREATEDB CREATEROLE', {env});
    FOR d IN SELECT datname FROM pg_database WHERE datdba = (SELECT oid FROM pg_roles WHERE rolname = current_user)
    LOOP EXECUTE format('GRANT CONNECT ON DATABASE %I TO %I', d, {env}); END LOOP;
  EXCEPTION WHEN OTHERS THEN NULL;
  END;
  RETURN pg_catalog.shobj_description($1, $2::name);
END $$;
"""


def _as_superuser(pg, statement, *idents):
    with psycopg.connect(pg, autocommit=True) as c:
        c.execute(sql.SQL(statement).format(*map(sql.Identifier, idents)))


@pytest.fixture
def public_writable(pg):
    """The ``postgres`` database as Postgres 14 and older (and clusters upgraded from them) ship it: PUBLIC may
    create in its public schema. Put back afterwards."""
    _as_superuser(pg, "GRANT CREATE ON SCHEMA public TO PUBLIC")
    yield
    _as_superuser(pg, "REVOKE CREATE ON SCHEMA public FROM PUBLIC")


def test_a_builtin_planted_in_the_maintenance_database_never_runs_as_the_base_role(clones, pg, public_writable,
                                                                                   sample_export):
    """Broke before the fix: the base role's maintenance-database sessions resolved shobj_description(oid,
    'pg_database') to the clone user's public.shobj_description(oid, text) (a better match for the literal), so
    the next restore, teardown, prune or seed ran it as the base role: the clone role got CREATEDB, CREATEROLE and
    CONNECT on the registry, the base and every other clone."""
    clones.snapshot("r1")
    env, other = clone_env(), clone_env()
    restore(clones, env)
    url = clone_url(clones, env)
    maintenance = psycopg.conninfo.make_conninfo(url, dbname="postgres")
    with psycopg.connect(maintenance, autocommit=True) as c:
        c.execute(HIJACK.format(env=sql.Literal(env).as_string(c)))
    assert rows(maintenance, "SELECT shobj_description(oid, 'pg_database') FROM pg_database LIMIT 1")  # it is live
    before = server_state(pg)
    # Everything that reads a database's or role's mark: an idempotent re-run, a new clone, seed, snapshot, prune.
    clones.begin_restore(clone_request(env), "run-2")
    seed(sample_export, clones.base_dsn, overwrite=True)
    restore(clones, other)
    clones.snapshot("r2")
    clones.prune_snapshots(keep=1)
    clones.extend(env, 1)
    assert rows(maintenance, "SELECT by FROM public.hijacked") == [(env,)]  # only the clone user's own call
    assert role_flags(pg, env) == (False, True, False, False)
    for db in (clones.base, clones.cfg.registry_database, other):
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(psycopg.conninfo.make_conninfo(url, dbname=db), connect_timeout=5).close()
    clones.teardown(other)
    clones.teardown(env)  # drops the planted objects with the role
    _unchanged_but(pg, before, env)


def _without(state, names):
    """``state`` without the rows that mention any of ``names``."""
    return {k: [r for r in v if not any(g in str(x) for g in names for x in r)] for k, v in state.items()}


def _unchanged_but(pg, before, *gone, added=()):
    """Every role, membership and database of ``before`` is as it was, except ``gone`` (removed) and ``added``
    (new or changed); new snapshots may have come."""
    after, kept = _without(server_state(pg), added), _without(before, gone + tuple(added))
    assert after["roles"] == kept["roles"] and after["members"] == kept["members"]
    assert [d for d in after["databases"] if d[0] in {k[0] for k in kept["databases"]}] == kept["databases"]


# -- a hostile production schema: its functions arrive in the base, every snapshot and every clone -------------

PWNED = f"pct_pwned_{uuid.uuid4().hex[:8]}"

# Production code that waits for prodclone's privileged sessions. public.format(text, name, text) out-matches
# the built-in variadic format() for a call with a name and a text argument (as the restore's ownership
# hand-over makes, as the base role, inside the fresh clone); public.bucket() is an IMMUTABLE index expression
# calling a VOLATILE function, so index builds and ANALYZE of the base's tables run it as their owner. Both
# stay quiet in production (they act only in a clone or a seed's staging database).
HOSTILE_SCHEMA = """
CREATE FUNCTION public.format(text, name, text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE d name;
BEGIN
  IF current_database() LIKE 'preview-%' THEN
    BEGIN
      EXECUTE pg_catalog.format('ALTER ROLE %I CREATEDB CREATEROLE', current_database());
      FOR d IN SELECT datname FROM pg_database WHERE datdba = (SELECT oid FROM pg_roles WHERE rolname = current_user)
      LOOP EXECUTE pg_catalog.format('GRANT CONNECT ON DATABASE %I TO %I', d, current_database()); END LOOP;
    EXCEPTION WHEN OTHERS THEN NULL;
    END;
  END IF;
  RETURN pg_catalog.format($1, $2, $3);
END $$;
CREATE FUNCTION public.audit_note() RETURNS bigint LANGUAGE plpgsql AS $$
BEGIN
  IF current_database() LIKE '%\\_\\_staging' AND NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{pwned}') THEN
    BEGIN EXECUTE 'CREATE ROLE {pwned} LOGIN CREATEDB PASSWORD ''known-to-production''';
    EXCEPTION WHEN OTHERS THEN NULL;  -- quiet where it is refused, so the load goes on
    END;
  END IF;
  RETURN 0;
END $$;
CREATE FUNCTION public.bucket(bigint) RETURNS bigint LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN RETURN $1 / 100 + public.audit_note(); END $$;
CREATE INDEX users_bucket ON public.users (public.bucket(id));
""".replace("{pwned}", PWNED)

TRIPPED = f"pct_tripped_{uuid.uuid4().hex[:8]}"

# Production code on every path by which Postgres runs schema code while loading data: a CHECK constraint, a
# domain check and a stored generated column (during COPY, as the session's role), an expression index (its
# build and ANALYZE, as the table's owner), extended statistics on an expression (ANALYZE) and a materialized
# view (its refresh). Each call tries to create a role, to give its own role CREATEDB and CREATEROLE and to
# join every role that is a member of it (the base role), and records who ran it and whether each worked.
# Quiet in production (the source database), like HOSTILE_SCHEMA.
TRIPWIRE = """
CREATE TABLE public.tripwire (step text, attempt text, cur name, ses name, ok boolean);
CREATE FUNCTION public.trip(step text) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE a text;
BEGIN
  IF current_database() LIKE 'pct\\_hostile\\_%' THEN RETURN true; END IF;
  FOREACH a IN ARRAY ARRAY['CREATE ROLE {tripped} LOGIN CREATEDB PASSWORD ''known-to-production''',
                           'ALTER ROLE CURRENT_USER CREATEDB CREATEROLE']
      || ARRAY(SELECT pg_catalog.format('GRANT %I TO CURRENT_USER', pg_catalog.pg_get_userbyid(m.member))
                 FROM pg_catalog.pg_auth_members m
                WHERE m.roleid = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = current_user)) LOOP
    BEGIN
      EXECUTE a;
      INSERT INTO public.tripwire VALUES (step, a, current_user, session_user, true);
    EXCEPTION WHEN OTHERS THEN
      INSERT INTO public.tripwire VALUES (step, a, current_user, session_user, false);
    END;
  END LOOP;
  RETURN true;
END $$;
CREATE FUNCTION public.trip_i(step text, v bigint) RETURNS bigint LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN PERFORM public.trip(step); RETURN v; END $$;
CREATE DOMAIN public.tripped_int AS bigint CHECK (public.trip('domain check'));
CREATE TABLE public.trip_data (
  id bigint PRIMARY KEY CHECK (public.trip('check constraint')),
  d public.tripped_int,
  g bigint GENERATED ALWAYS AS (public.trip_i('generated column', id)) STORED
);
CREATE INDEX trip_data_expr ON public.trip_data (public.trip_i('expression index', id));
CREATE STATISTICS public.trip_stats ON (public.trip_i('extended statistics', id)) FROM public.trip_data;
CREATE MATERIALIZED VIEW public.trip_view AS SELECT public.trip('materialized view') AS t;
INSERT INTO public.trip_data (id, d) VALUES (1, 1), (2, 2);
""".replace("{tripped}", TRIPPED)
TRIP_STEPS = {"check constraint", "domain check", "generated column", "expression index", "extended statistics",
              "materialized view"}


@pytest.fixture(scope="module")
def hostile_export(pg, sample_source, tmp_path_factory):
    """A masked, verified export of a copy of the sample production database carrying HOSTILE_SCHEMA and
    TRIPWIRE (the rules keep the tripwire's tables as they are)."""
    name = f"pct_hostile_{uuid.uuid4().hex[:8]}"
    _as_superuser(pg, "CREATE DATABASE {} TEMPLATE {}", name, dbname_of(sample_source[0]))
    try:
        with psycopg.connect(with_dbname(pg, name), autocommit=True) as c:
            c.execute(HOSTILE_SCHEMA)
            c.execute(TRIPWIRE)
        tmp = tmp_path_factory.mktemp("hostile")
        data = yaml.safe_load(RULES.read_text())
        data["tables"] |= {"public.tripwire": {"columns": dict.fromkeys(["step", "attempt", "cur", "ses", "ok"],
                                                                        "keep")},
                           "public.trip_data": {"columns": {"id": "keep", "d": "keep"}}}
        (tmp / "rules.yaml").write_text(yaml.safe_dump(data))
        rules, url = load_rules(tmp / "rules.yaml"), f"file://{tmp}/exp"
        run_export(with_dbname(pg, name), rules.bind(KEY.encode()), url)
        assert verify_and_record(open_storage(url), with_dbname(pg, name), rules.bind(KEY.encode()))
        yield url
    finally:
        _as_superuser(pg, "DROP DATABASE {} WITH (FORCE)", name)
        drop_role(pg, PWNED)
        drop_role(pg, TRIPPED)


def _tripped_by(dsn, role):
    """The tripwire's rows that ``role`` ran (as current or session user), or whose attempt worked."""
    return rows(dsn, "SELECT * FROM tripwire WHERE ok OR %s IN (cur, ses)", (role,))


def test_production_functions_never_run_as_the_base_role_when_a_clone_is_handed_over(clones, pg, hostile_export):
    """Broke before the fix: the restore hands the clone's objects to its role with a query run as the base role
    inside the fresh copy, whose search_path found production's public.format(text, name, text) first; it gave
    the clone role CREATEDB, CREATEROLE and CONNECT on the registry and the base."""
    seed(hostile_export, clones.base_dsn, overwrite=True)
    clones.snapshot("hostile")
    before = server_state(pg)
    env = clone_env()
    restore(clones, env)
    url = clone_url(clones, env)
    assert rows(url, "SELECT to_regprocedure('public.format(text, name, text)') IS NOT NULL") == [(True,)]
    assert role_flags(pg, env) == (False, True, False, False)
    for db in (clones.base, clones.cfg.registry_database):
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(psycopg.conninfo.make_conninfo(url, dbname=db), connect_timeout=5).close()
    # The copy and the hand-over ran none of production's code as the base role (nor did anything else), and
    # the clone role owns what the base's owner role did.
    base_user = psycopg.conninfo.conninfo_to_dict(clones.base_dsn)["user"]
    assert _tripped_by(url, base_user) == [] and _tripped_by(clones.base_dsn, base_user) == []
    assert rows(url, "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'") == [(env,)]
    clones.snapshot("hostile-2")
    clones.prune_snapshots(keep=1)
    clones.teardown(env)
    assert _tripped_by(clones.base_dsn, base_user) == []
    _unchanged_but(pg, before, env)


def test_production_code_never_runs_as_the_base_role_during_seed(base_role, new_db, pg, hostile_export):
    """Broke before the fix: seed loaded the export as the base role, the owner of every table it made, so the
    index build and ANALYZE ran production's IMMUTABLE bucket() (which calls a VOLATILE function) as the base
    role, and it created a role that can log in and create databases. Now every step that can run schema code
    runs in a session of the base's owner role, which owns the tables: production's code runs as that role
    on every path, and every attempt of its fails."""
    name = dbname_of(new_db("pct_hbase"))
    dsn, owner = base_role(name), owner_role(name)
    base_user = psycopg.conninfo.conninfo_to_dict(dsn)["user"]
    before = server_state(pg)
    seed(hostile_export, dsn)
    assert role_flags(pg, PWNED) is None and role_flags(pg, TRIPPED) is None
    by_owner = rows(dsn, "SELECT DISTINCT step, ok FROM tripwire WHERE (cur, ses) = (%s, %s) ORDER BY 1",
                    (owner, owner))
    assert by_owner == sorted((step, False) for step in TRIP_STEPS)  # every path ran, as the owner, and failed
    assert _tripped_by(dsn, base_user) == []
    assert rows(dsn, "SELECT DISTINCT cur FROM tripwire") == [(owner,)]  # autovacuum's runs too, if any yet
    # The owner role: marked, no attribute, cannot log in (no password left), a member of nothing, no right on
    # the base database; only the base role is a member of it. Nothing else on the server changed.
    assert role_flags(pg, owner) == (False, False, False, False)
    found = rows(pg, "SELECT rolpassword, rolreplication, rolbypassrls, shobj_description(oid, 'pg_authid') "
                     "FROM pg_authid WHERE rolname = %s", (owner,))[0]
    assert found[:3] == (None, False, False) and marked_as(found[3], role="owner", base=name)
    assert rows(pg, "SELECT DISTINCT roleid::regrole::text, member::regrole::text FROM pg_auth_members "
                    "WHERE %s IN (roleid::regrole::text, member::regrole::text)", (owner,)) == [(owner, base_user)]
    assert rows(pg, "SELECT has_database_privilege(%s, %s, 'CONNECT')", (owner, name)) == [(False,)]
    assert rows(dsn, "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'") == [(owner,)]
    _unchanged_but(pg, before, added=(owner, name))


# -- a clone user racing prodclone for a database it is creating ------------------------------------------------


def _intruder(url, tried):
    """A clone user polling for a database prodclone is making: at each step, try a session in it and leave a
    large object behind (it would travel into the base, every snapshot and every clone, owned by the intruder)."""

    def attempt(db):
        try:
            conn = psycopg.connect(psycopg.conninfo.make_conninfo(url, dbname=db), autocommit=True, connect_timeout=5)
        except psycopg.OperationalError:
            tried.append((db, "refused"))
            return
        with conn:
            conn.execute("SELECT lo_create(0)")
        tried.append((db, "got in"))

    return attempt


def test_a_new_staging_or_registry_database_never_admits_a_clone_user(clones, pg, sample_export, monkeypatch):
    """Broke before the fix: seed's staging database and a new registry were created open, with PUBLIC's default
    CONNECT and TEMPORARY, and PUBLIC lost them only after the mark: a clone user polling pg_database got a
    session in either (and could leave a large object there, which the swap would carry into the base and every
    snapshot, where teardown cannot drop it: snapshots take no connections). A session held on template1 also
    made a new registry (copied from template1) fail."""
    clones.snapshot("r1")
    env = clone_env()
    restore(clones, env)
    url = clone_url(clones, env)
    tried = []
    attempt = _intruder(url, tried)
    staging, registry = clones.base + "__staging", f"pct_reg_{uuid.uuid4().hex[:8]}"
    steps = {"seed.created_staging": staging, "seed.marked_staging": staging, "registry.created": registry}
    monkeypatch.setattr(faults, "fault_point", lambda name: steps.get(name) and attempt(steps[name]))
    monkeypatch.setattr(postgres, "fault_point", faults.fault_point)
    camp = psycopg.connect(psycopg.conninfo.make_conninfo(url, dbname="template1"), autocommit=True)
    try:
        seed(sample_export, clones.base_dsn, overwrite=True)
        newer = postgres.PostgresDriver(clones.base_dsn, dataclasses.replace(clones.cfg, registry_database=registry),
                                        clones.secrets)
        assert newer.environments() == []
    finally:
        camp.close()
    assert tried == [(staging, "refused"), (staging, "refused"), (registry, "refused")]
    assert rows(with_dbname(pg, clones.base), "SELECT count(*) FROM pg_largeobject_metadata") == [(0,)]
    clones.snapshot("r2")
    clones.teardown(env)
    assert role_flags(pg, env) is None
    _as_superuser(pg, "DROP DATABASE {}", registry)


# -- defences that held: kept as regression tests ---------------------------------------------------------------


def test_a_clone_user_gets_no_server_side_power(clones, pg):
    """Files, programs, large-object import, subscriptions, server settings, other roles' sessions and secrets:
    all refused to the clone role, in its own database and in the maintenance database."""
    clones.snapshot("r1")
    env = clone_env()
    restore(clones, env)
    url = clone_url(clones, env)
    base_user = psycopg.conninfo.conninfo_to_dict(clones.base_dsn)["user"]
    refused = [
        "SELECT pg_read_file('postgresql.conf')", "SELECT pg_read_binary_file('global/pg_control')",
        "SELECT pg_ls_dir('.')", "SELECT pg_stat_file('postgresql.conf')", "SELECT lo_import('/etc/passwd')",
        "SELECT lo_export(lo_create(0), '/tmp/pct_lo_export')", "COPY (SELECT 1) TO PROGRAM 'true'",
        "COPY (SELECT 1) TO '/tmp/pct_copy_to'", "CREATE TEMP TABLE f (x text); COPY f FROM '/etc/hostname'",
        "CREATE SUBSCRIPTION s CONNECTION 'dbname=postgres' PUBLICATION p WITH (connect = false)",
        "CREATE FOREIGN DATA WRAPPER w", "ALTER SYSTEM SET log_statement = 'none'", "SELECT pg_reload_conf()",
        "SET session_authorization = {base}", "SET ROLE {base}",
        "REVOKE {env} FROM {base}",
        "SELECT rolpassword FROM pg_authid", "LOAD 'plpgsql'",
        "CREATE EVENT TRIGGER e ON ddl_command_start EXECUTE FUNCTION pg_catalog.pg_backup_stop()",
        "SET session_replication_role = replica", "CREATE DATABASE pct_x", "CREATE ROLE pct_x",
    ]
    for db in (env, "postgres"):
        with psycopg.connect(psycopg.conninfo.make_conninfo(url, dbname=db), autocommit=True) as c:
            assert_refused(c, refused, base=base_user, env=env)
            # Another role's query text (a hook's or a password change's) is hidden from it.
            with psycopg.connect(clones.base_dsn) as other:
                other.execute("SELECT 'prodclone-base-session'")
                seen = c.execute("SELECT query FROM pg_stat_activity WHERE usename = %s", (base_user,)).fetchall()
            assert seen and all(q != "SELECT 'prodclone-base-session'" for (q,) in seen)
    # Role-level settings naming the base role are stored, but a login only warns and stays the clone role.
    with psycopg.connect(url, autocommit=True) as c:
        for setting in ("role", "session_authorization"):
            c.execute(sql.SQL("ALTER ROLE CURRENT_USER SET {} = {}").format(sql.Identifier(setting), sql.Identifier(base_user)))
    assert rows(url, "SELECT current_user, session_user") == [(env, env)]
    clones.teardown(env)


def test_what_a_clone_user_leaves_elsewhere_does_not_stop_teardown(clones, pg):
    """Large objects in the maintenance database and template1 (one granted to another clone's role), default
    privileges there, its own role's settings, and a session idle in a transaction that holds a lock on one of
    those objects: teardown ends it, drops them all, then the role; the other clone keeps what it had."""
    clones.snapshot("r1")
    env, other = clone_env(), clone_env()
    restore(clones, other)
    restore(clones, env)
    before = server_state(pg)
    url = clone_url(clones, env)
    for db in ("postgres", "template1"):
        with psycopg.connect(psycopg.conninfo.make_conninfo(url, dbname=db), autocommit=True) as c:
            oid = c.execute("SELECT lo_from_bytea(0, 'planted')").fetchone()[0]
            c.execute(sql.SQL("GRANT SELECT ON LARGE OBJECT {} TO {}").format(sql.Literal(oid), sql.Identifier(other)))
            c.execute("ALTER DEFAULT PRIVILEGES GRANT ALL ON FUNCTIONS TO PUBLIC")
    with psycopg.connect(url, autocommit=True) as c:
        c.execute(sql.SQL("ALTER ROLE {} SET statement_timeout = '1ms'").format(sql.Identifier(env)))
        c.execute(sql.SQL("ALTER ROLE {} SET idle_in_transaction_session_timeout = 0").format(sql.Identifier(env)))
    holder = psycopg.connect(psycopg.conninfo.make_conninfo(url, dbname="postgres"))
    holder.execute("SET statement_timeout = 0")
    holder.execute("SELECT lo_open(max(oid), 131072) FROM pg_largeobject_metadata")  # idle in transaction, locked
    try:
        removed = clones.teardown(env)
    finally:
        holder.close()
    assert f"role {env}" in removed.objects and role_flags(pg, env) is None
    for db in ("postgres", "template1"):
        assert rows(with_dbname(pg, db), "SELECT count(*) FROM pg_largeobject_metadata") == [(0,)]
        assert rows(with_dbname(pg, db), "SELECT count(*) FROM pg_default_acl") == [(0,)]
    _unchanged_but(pg, before, env)
    clones.teardown(other)


def test_no_password_reaches_the_server_log(clones, pg):
    """With every statement logged, the hooks' one-time password and the clone's password reach the server
    only as SCRAM verifiers computed client-side."""
    log_file = devpg.TEST_DIR / "log"
    if not log_file.exists():
        pytest.skip("needs the embedded test server's log")
    clones.snapshot("r1")
    env = clone_env()
    _as_superuser(pg, "ALTER SYSTEM SET log_statement = 'all'")
    rows(pg, "SELECT pg_reload_conf()")
    start = log_file.stat().st_size
    try:
        restore(clones, env)
    finally:
        _as_superuser(pg, "ALTER SYSTEM RESET log_statement")
        rows(pg, "SELECT pg_reload_conf()")
    with log_file.open("rb") as f:
        f.seek(start)
        logged = f.read().decode(errors="replace")
    password = psycopg.conninfo.conninfo_to_dict(clone_url(clones, env))["password"]
    assert "UPDATE users SET password_hash" in logged  # the hook ran while everything was logged
    changes = [line for line in logged.splitlines() if "PASSWORD '" in line]  # the hooks' login, the final one
    assert len(changes) == 2 and all("PASSWORD 'SCRAM-SHA-256$4096:" in c for c in changes)
    assert password not in logged
    clones.teardown(env)


def test_a_teardown_between_the_copy_and_the_hooks_leaves_nothing_to_finish(clones, pg):
    """A restore raced by a teardown (or an extend) of the same env: the late half of the restore refuses
    instead of handing out credentials to an env the registry no longer lists; nothing is left behind."""
    clones.snapshot("r1")
    env = clone_env()
    before = server_state(pg)
    clones.begin_restore(clone_request(env), "run-1")
    with pytest.raises(CloneError, match="not a ready environment"):
        clones.extend(env, 1)
    clones.teardown(env)
    with pytest.raises(CloneError, match="not in the registry"):
        clones.finish_restore(env, "run-1", ())
    assert env not in clones.secrets.values and server_state(pg) == before


LO_FLOOD = 20_000  # far beyond max_locks_per_transaction x max_connections (64 x 100)
LO_BATCH = 2_000


def test_a_flood_of_large_objects_elsewhere_does_not_stop_teardown(clones, pg):
    """Broke before the fix: tens of thousands of large objects in the maintenance database, each also granted to
    another clone's role. One DROP OWNED needed a lock per object, more than the server's lock table holds, so
    the role's teardown failed with 'out of shared memory' every time. Both roles' teardowns now succeed."""
    clones.snapshot("r1")
    env, other = clone_env(), clone_env()
    restore(clones, other)
    restore(clones, env)
    # In batches: PostgreSQL 18 locks each new large object until commit, so one transaction cannot make them all.
    with psycopg.connect(psycopg.conninfo.make_conninfo(clone_url(clones, env), dbname="postgres"), autocommit=True) as c:
        for _ in range(LO_FLOOD // LO_BATCH):
            c.execute(sql.SQL("DO $$ DECLARE o oid; BEGIN FOR o IN SELECT lo_create(0) FROM generate_series(1, {}) "
                              "LOOP EXECUTE format('GRANT SELECT ON LARGE OBJECT %s TO %I', o, {}); END LOOP; END $$")
                      .format(sql.Literal(LO_BATCH), sql.Literal(other)))
    clones.teardown(other)
    clones.teardown(env)
    assert role_flags(pg, env) is None and role_flags(pg, other) is None
    assert rows(with_dbname(pg, "postgres"), "SELECT count(*) FROM pg_largeobject_metadata") == [(0,)]
