"""Trust I against a real Postgres, driven by the non-superuser base role (CREATEDB, CREATEROLE, password auth):
a clone user cannot get out of its clone, nothing prodclone does later runs the clone user's objects with more
privilege than the clone role has, nothing the clone user changes stops a teardown, and a process killed at any
step of restore, snapshot, teardown or prune leaves only what the next run or teardown repairs by itself."""

import json
import os
import subprocess
import sys

import psycopg
import pytest

from prodclone.db import with_dbname
from prodclone.drivers.base import MemorySecrets
from support import HOOK, ROOT, assert_refused, rows
from support import clone_env as _env
from support import clone_request as _req
from support import clone_url as _clone_url
from support import restore as _restore
from support import role_flags as _role
from support import server_state as _server

# Planted by the clone user: every privileged run of an UPDATE on users (a hook, a migration run by someone
# else) would make the clone role superuser, directly and via a SECURITY DEFINER function trying RESET ROLE.
# Each attempt records who fired it first; failures are swallowed so the attack never reveals itself.
ATTACK = """
CREATE TABLE attempts (fired_by name, session_user_name name);
GRANT INSERT ON attempts TO PUBLIC;
CREATE FUNCTION escalate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO attempts VALUES (current_user, session_user);
  BEGIN EXECUTE format('ALTER ROLE %I SUPERUSER', '{env}'); EXCEPTION WHEN OTHERS THEN NULL; END;
  RETURN NULL;
END $$;
CREATE FUNCTION escalate_definer() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
  INSERT INTO attempts VALUES (current_user, session_user);
  BEGIN RESET ROLE; EXECUTE format('ALTER ROLE %I SUPERUSER', '{env}'); EXCEPTION WHEN OTHERS THEN NULL; END;
  RETURN NULL;
END $$;
CREATE TRIGGER escalate AFTER INSERT OR UPDATE OR DELETE ON users FOR EACH STATEMENT EXECUTE FUNCTION escalate();
CREATE TRIGGER escalate_definer AFTER UPDATE ON users FOR EACH STATEMENT EXECUTE FUNCTION escalate_definer();
"""


class RecordingSecrets(MemorySecrets):
    """Records, at the moment a URL is stored, whether the hooks had run and whether the role could log in."""

    def __init__(self, pg):
        super().__init__()
        self.pg, self.seen = pg, []

    def put(self, env, url):
        audit = rows(with_dbname(self.pg, env), "SELECT to_regclass('hook_audit') IS NOT NULL")[0][0]
        self.seen.append((env, audit, _role(self.pg, env)[1]))
        super().put(env, url)


def test_a_planted_escalation_trigger_never_runs_with_more_than_the_clone_role(clones, pg):
    clones.secrets = RecordingSecrets(pg)
    clones.snapshot("r1")
    env = _env()
    before = _server(pg)
    clones.begin_restore(_req(env), "run-1")
    # Before finish_restore returns: no credentials anywhere and a role that cannot log in.
    assert env not in clones.secrets.values and _role(pg, env) == (False, False, False, False)
    hooks = (HOOK, "CREATE TABLE hook_audit AS SELECT current_user AS cu, session_user AS su")
    assert clones.finish_restore(env, "run-1", hooks).status == "ready"
    assert rows(with_dbname(pg, env), "SELECT cu, su FROM hook_audit") == [(env, env)]  # hooks ran as the clone role
    assert clones.secrets.seen == [(env, True, True)]  # stored last: after the hooks and the LOGIN
    url = _clone_url(clones, env)
    with psycopg.connect(url, autocommit=True) as c:
        c.execute(ATTACK.format(env=env))
        c.execute("UPDATE users SET email = email WHERE id = (SELECT min(id) FROM users)")  # the trap is live
    fired = rows(url, "SELECT fired_by, session_user_name FROM attempts")
    assert fired and set(fired) == {(env, env)}
    assert _role(pg, env)[0] is False
    # Everything prodclone does afterwards: re-runs, extend, the teardown scan.
    assert clones.finish_restore(env, "run-1", (HOOK,)).status == "ready"
    assert clones.begin_restore(_req(env), "run-2").run_id == "run-1"
    clones.extend(env, 1)
    assert clones.due_for_teardown() == []
    assert sorted(set(rows(url, "SELECT fired_by, session_user_name FROM attempts"))) == [(env, env)]
    assert len(rows(url, "SELECT 1 FROM attempts")) == len(fired)  # none of it fired the trap
    assert _role(pg, env) == (False, True, False, False)
    # A replace re-clones from the snapshot (the trap goes with the old copy); teardown removes everything.
    _restore(clones, env, run="run-3", replace=True)
    assert rows(with_dbname(pg, env), "SELECT to_regclass('attempts')") == [(None,)]
    clones.teardown(env)
    after = _server(pg)
    assert after == before  # no role gained anything, and nothing prodclone made is left


def test_a_clone_user_cannot_get_out_and_cannot_stop_teardown(clones, pg):
    clones.snapshot("r1")
    other, env = _env(), _env()
    _restore(clones, other)
    _restore(clones, env)
    before = _server(pg)
    url = _clone_url(clones, env)
    settings = rows(pg, "SELECT datconnlimit, (SELECT setconfig FROM pg_db_role_setting WHERE setdatabase = d.oid), "
                        "shobj_description(oid, 'pg_database') FROM pg_database d WHERE datname = %s", (env,))
    base_user = psycopg.conninfo.conninfo_to_dict(clones.base_dsn)["user"]
    refused = [
        "ALTER DATABASE {env} CONNECTION LIMIT 1000", "ALTER DATABASE {env} SET statement_timeout = 0",
        "ALTER DATABASE {env} RESET ALL", "COMMENT ON DATABASE {env} IS NULL", "COMMENT ON ROLE {env} IS NULL",
        "ALTER DATABASE {env} OWNER TO {env}", 'ALTER DATABASE {env} RENAME TO "preview-x"',
        "ALTER ROLE {env} VALID UNTIL 'infinity'", "ALTER ROLE {env} CREATEDB",
        'CREATE ROLE "pct_evil"', 'CREATE DATABASE "pct_evil"', "SET ROLE {base}", "GRANT {base} TO {env}",
    ]
    with psycopg.connect(url, autocommit=True) as c:
        assert_refused(c, refused, env=env, base=base_user)
        assert c.execute("SELECT pg_has_role(%s, 'MEMBER')", (base_user,)).fetchone()[0] is False
        # What it may do and what could have stopped a teardown: change its own password and settings, leave
        # sessions open here and in another database, with temporary objects and default privileges there.
        c.execute(f"""ALTER ROLE "{env}" SET work_mem = '8MB'""")
        c.execute("CREATE TABLE mine (x int)")  # migrations work
    for db in (clones.base, clones.cfg.registry_database, clones.snapshots()[0].id, other):
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(psycopg.conninfo.make_conninfo(url, dbname=db), connect_timeout=5).close()
    assert rows(pg, "SELECT datconnlimit, (SELECT setconfig FROM pg_db_role_setting WHERE setdatabase = d.oid), "
                    "shobj_description(oid, 'pg_database') FROM pg_database d WHERE datname = %s", (env,)) == settings
    held = psycopg.connect(url, autocommit=True)
    elsewhere = psycopg.connect(psycopg.conninfo.make_conninfo(url, dbname="postgres"), autocommit=True)
    elsewhere.execute("CREATE TEMP TABLE t (x int)")
    elsewhere.execute("ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO PUBLIC")
    held.execute("ALTER ROLE CURRENT_USER PASSWORD 'changed-by-the-user'")
    try:
        removed = clones.teardown(env)
    finally:
        held.close()
        elsewhere.close()
    assert f"role {env}" in removed.objects
    assert not rows(pg, "SELECT 1 FROM pg_database WHERE datname = %s", (env,))
    assert not rows(pg, "SELECT 1 FROM pg_roles WHERE rolname = %s", (env,))
    gone = {k: [r for r in v if not any(env in str(x) for x in r)] for k, v in before.items()}
    assert _server(pg) == gone  # the other clone, the base and every role are as they were


# -- crashes: a step killed (SIGKILL) at each fault point, then the next run, teardown or prune ----------------

STEP = """
import dataclasses, json, sys
from prodclone.config import load_config
from prodclone.drivers.base import MemorySecrets, RestoreRequest
from prodclone.drivers.postgres import PostgresDriver

a = json.loads(sys.argv[1])
d = PostgresDriver(a["base"], dataclasses.replace(load_config(), registry_database=a["registry"]), MemorySecrets())
if a["step"] == "snapshot":
    d.snapshot(a["run"])
elif a["step"] == "restore":
    d.begin_restore(RestoreRequest(env=a["env"], profile="preview", ttl_hours=1, snapshot="latest",
                                   requested_by="crash"), a["run"])
    d.finish_restore(a["env"], a["run"], tuple(a["hooks"]))
elif a["step"] == "teardown":
    d.teardown(a["env"])
elif a["step"] == "prune":
    d.prune_snapshots(1)
"""


def _killed_at(driver, point, step, **args):
    """Run ``step`` in a subprocess that SIGKILLs itself at fault point ``point``; assert it got there."""
    payload = json.dumps({"base": driver.base_dsn, "registry": driver.cfg.registry_database, "step": step,
                          "run": "crash-run", "hooks": [HOOK], **args})
    env = {**os.environ, "PRODCLONE_FAULT": point, "PYTHONPATH": str(ROOT / "plugins")}
    proc = subprocess.run([sys.executable, "-c", STEP, payload], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == -9, f"{point} was not reached: {proc.stderr[-2000:]}"


RESTORE_POINTS = ["restore.registered", "restore.role_created", "restore.database_created", "restore.configured",
                  "restore.hooks_done", "restore.login_granted"]


@pytest.mark.parametrize("point", RESTORE_POINTS)
def test_a_restore_killed_at_any_step_is_removed_by_teardown(clones, pg, point):
    clones.snapshot("r1")
    env = _env()
    before = _server(pg)
    _killed_at(clones, point, "restore", env=env)
    assert [e.status for e in clones.environments()] == ["creating"]
    clones.teardown(env, reason="stuck")
    assert clones.environments() == [] and _server(pg) == before


@pytest.mark.parametrize("point", ["restore.role_created", "restore.database_created", "restore.hooks_done"])
def test_a_restore_killed_mid_way_is_redone_by_its_retry(clones, pg, point):
    clones.snapshot("r1")
    env = _env()
    before = _server(pg)
    _killed_at(clones, point, "restore", env=env)
    assert _restore(clones, env, run="crash-run").status == "ready"  # the task's retry
    with psycopg.connect(_clone_url(clones, env)) as c:
        assert c.execute("SELECT count(*) FROM users WHERE password_hash <> '!disabled' AND NOT is_test_account"
                         ).fetchone()[0] == 0
    clones.teardown(env)
    assert _server(pg) == before


@pytest.mark.parametrize("point", ["snapshot.registered", "snapshot.base_closed", "snapshot.database_created"])
def test_a_snapshot_killed_at_any_step_is_repaired_by_prune_and_the_next_snapshot(clones, pg, point):
    kept = clones.snapshot("r1")
    before = _server(pg)
    _killed_at(clones, point, "snapshot")
    crashed = [s.id for s in clones.snapshots() if s.id != kept.id]
    assert clones.prune_snapshots(keep=1) == crashed
    assert [s.id for s in clones.snapshots()] == [kept.id]
    assert _server(pg) == before  # the base is open again (PUBLIC still shut out); the half-made copy is gone
    _killed_at(clones, point, "snapshot")
    crashed = [s.id for s in clones.snapshots() if s.id != kept.id]
    newer = clones.snapshot("r2")  # the next snapshot reopens the base by itself
    assert rows(pg, "SELECT datallowconn FROM pg_database WHERE datname = %s", (clones.base,)) == [(True,)]
    assert sorted(clones.prune_snapshots(keep=1)) == sorted([kept.id, *crashed])
    assert [s.id for s in clones.snapshots()] == [newer.id]


@pytest.mark.parametrize("point", ["teardown.database_dropped", "teardown.role_dropped"])
def test_a_teardown_killed_at_any_step_is_finished_by_the_next(clones, pg, point):
    clones.snapshot("r1")
    before = _server(pg)
    env = _env()
    _restore(clones, env)
    _killed_at(clones, point, "teardown", env=env)
    clones.teardown(env)
    assert clones.environments() == [] and _server(pg) == before


def test_a_prune_killed_after_the_drop_is_finished_by_the_next(clones, pg):
    old = clones.snapshot("r1")
    newer = clones.snapshot("r2")
    _killed_at(clones, "prune.database_dropped", "prune")
    assert not rows(pg, "SELECT 1 FROM pg_database WHERE datname = %s", (old.id,))
    assert clones.prune_snapshots(keep=1) == [old.id]
    assert [s.id for s in clones.snapshots()] == [newer.id]


def test_an_unmarked_database_of_an_env_name_is_ours_only_from_our_own_crash(clones, pg):
    """The crash rule claims nothing else: a database of that name someone else owns, or that carries a comment,
    is refused by teardown and left exactly as it was."""
    clones.snapshot("r1")
    env = _env()
    _killed_at(clones, "restore.database_created", "restore", env=env)
    with psycopg.connect(pg, autocommit=True) as c:
        c.execute(f'COMMENT ON DATABASE "{env}" IS \'a note of the DBA\'')
    with pytest.raises(Exception, match="lacks prodclone's marker"):
        clones.teardown(env)
    assert rows(pg, "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
                (env,)) == [("a note of the DBA",)]
    with psycopg.connect(pg, autocommit=True) as c:
        c.execute(f'COMMENT ON DATABASE "{env}" IS NULL')
        c.execute(f'ALTER DATABASE "{env}" OWNER TO postgres')
    with pytest.raises(Exception, match="lacks prodclone's marker"):
        clones.teardown(env)
    with psycopg.connect(pg, autocommit=True) as c:
        c.execute(f'DROP DATABASE "{env}"')
    clones.teardown(env)  # the rest (role, registry row) is prodclone's
    assert clones.environments() == [] and not rows(pg, "SELECT 1 FROM pg_roles WHERE rolname = %s", (env,))
