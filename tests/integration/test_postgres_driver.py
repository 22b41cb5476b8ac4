"""The postgres clone driver against a real Postgres: snapshot, restore,
idempotency, credentials, extend, teardown, pruning and the refusals."""

import threading
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from prodclone.db import with_dbname
from prodclone.drivers.base import CloneBusy, CloneError, RestoreRequest
from support import rows

TABLES = ["users", "addresses", "products", "orders", "order_items", "payments", "support_tickets", "events"]


def _env(prefix="preview"):
    return f"{prefix}-t{uuid.uuid4().hex[:8]}"


def _req(env, **kw):
    return RestoreRequest(env=env, profile=env.split("-")[0], ttl_hours=kw.pop("ttl_hours", 24),
                          snapshot=kw.pop("snapshot", "latest"), requested_by="pytest", **kw)


def _restore(driver, env, run="run-1", hooks=(), **kw):
    driver.begin_restore(_req(env, **kw), run)
    return driver.finish_restore(env, run, hooks)


def _clone_dsn(driver, env):
    return with_dbname(driver.admin_dsn, env)


def test_snapshot_restore_has_every_row_and_its_own_role(clones, sample_source):
    snap = clones.snapshot("export-run-1", export="file:///x", rows=123, rules_sha256="abc")
    assert snap.status == "ready" and snap.id.startswith("snap-")
    assert clones.snapshot("export-run-1").id == snap.id  # a retried run reuses its snapshot
    env = _env()
    made = _restore(clones, env, hooks=("UPDATE users SET password_hash = '!disabled' WHERE NOT is_test_account",))
    assert made.status == "ready" and made.snapshot == snap.id and made.requested_by == "pytest"
    counts = sample_source[1]
    dsn = _clone_dsn(clones, env)
    for t in TABLES:
        assert rows(dsn, f"SELECT count(*) FROM {t}")[0][0] == counts[t]
    assert rows(dsn, "SELECT count(*) FROM users WHERE password_hash <> '!disabled'")[0][0] == \
        rows(dsn, "SELECT count(*) FROM users WHERE is_test_account")[0][0] > 0
    # The clone's objects belong to its own login role: never the base's or production's credentials. The
    # database itself stays the base role's, so its limit, settings and marker are out of the clone's reach.
    owner = rows(dsn, "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()")[0][0]
    assert owner == psycopg.conninfo.conninfo_to_dict(clones.base_dsn)["user"] != env
    assert rows(dsn, "SELECT tablename, tableowner FROM pg_tables WHERE schemaname = 'public' AND tableowner <> %s", (env,)) == []
    role = rows(dsn, "SELECT rolcanlogin, rolsuper, rolcreatedb, rolvaliduntil FROM pg_roles WHERE rolname = %s", (env,))[0]
    assert role[:3] == (True, False, False) and role[3] is not None
    # The password went to the secret store, not to the connection info.
    url = clones.secrets.values[env]
    info = clones.connection(env)
    password = psycopg.conninfo.conninfo_to_dict(url)["password"]
    assert info.user == env and info.database == env and len(password) >= 24
    assert password not in info.text() and password not in repr(info)
    with psycopg.connect(psycopg.conninfo.make_conninfo(url), autocommit=True) as c:
        assert c.execute("SELECT current_user").fetchone()[0] == env
        c.execute("ALTER TABLE users ADD COLUMN pr_feature text")  # migrations work: it owns the tables
        c.execute("SELECT nextval('users_id_seq')")
        assert c.execute("SHOW statement_timeout").fetchone()[0] == "30s"  # the profile's settings
        with pytest.raises(psycopg.Error):  # PUBLIC cannot connect to other prodclone databases
            psycopg.connect(psycopg.conninfo.make_conninfo(url, dbname=clones.base)).close()


def test_restore_is_idempotent_and_replace_reclones(clones):
    clones.snapshot("r1")
    env = _env()
    first = _restore(clones, env, run="a")
    with psycopg.connect(_clone_dsn(clones, env), autocommit=True) as c:
        c.execute("CREATE TABLE marker (x int)")
    again = _restore(clones, env, run="b")  # a re-trigger: no failure, no second clone
    assert again.run_id == "a" and again.created_at == first.created_at
    assert rows(_clone_dsn(clones, env), "SELECT count(*) FROM pg_tables WHERE tablename = 'marker'")[0][0] == 1
    newer = clones.snapshot("r2")
    replaced = _restore(clones, env, run="c", replace=True)
    assert replaced.run_id == "c" and replaced.snapshot == newer.id
    assert rows(_clone_dsn(clones, env), "SELECT count(*) FROM pg_tables WHERE tablename = 'marker'")[0][0] == 0


def test_teardown_removes_everything_and_only_what_prodclone_made(clones, pg):
    clones.snapshot("r1")
    env = _env()
    _restore(clones, env)
    held = psycopg.connect(_clone_dsn(clones, env), autocommit=True)  # an open session does not block teardown
    removed = clones.teardown(env, reason="test")
    with pytest.raises(psycopg.OperationalError):
        held.execute("SELECT 1")
    held.close()
    assert f"database {env} (1 session(s) ended)" in removed.objects and f"role {env}" in removed.objects
    assert not rows(pg, "SELECT 1 FROM pg_database WHERE datname = %s", (env,))
    assert not rows(pg, "SELECT 1 FROM pg_roles WHERE rolname = %s", (env,))
    assert env not in clones.secrets.values and clones.environments() == []
    # A database prodclone did not create, even with a matching name, is refused and untouched.
    foreign = _env()
    with psycopg.connect(pg, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{foreign}"')
    try:
        with pytest.raises(CloneError, match="not in prodclone's registry"):
            clones.teardown(foreign)
        with pytest.raises(CloneError, match="prodclone's registry did not create it"):
            clones.begin_restore(_req(foreign), "x")
        assert rows(pg, "SELECT 1 FROM pg_database WHERE datname = %s", (foreign,))
        assert clones.environments() == []  # the refusal registered nothing
    finally:
        with psycopg.connect(pg, autocommit=True) as c:
            c.execute(f'DROP DATABASE "{foreign}"')


@pytest.mark.parametrize("name,why", [
    ("prod-x", "must match"), ("preview-", "must match"), ("preview-UPPER", "must match"),
    ("preview-" + "a" * 60, "limit is 63"), ("preview-a--b", "must not"), ("preview-x; drop", "must match"),
])
def test_bad_env_names_are_refused_before_anything(clones, name, why):
    with pytest.raises(CloneError, match=why):
        clones.begin_restore(_req(name), "x")
    assert not clones._registry_ready  # nothing, not even the registry, was touched


def test_restore_refuses_base_and_protected_names(clones, pg):
    import dataclasses

    clones.cfg = dataclasses.replace(clones.cfg, protected=("preview-shared",))
    with pytest.raises(CloneError, match="protected"):
        clones.begin_restore(_req("preview-shared"), "x")
    clones.base = "preview-base"  # a base whose name happens to fit the env pattern
    with pytest.raises(CloneError, match="names the base"):
        clones.begin_restore(_req("preview-base"), "x")


def test_unknown_and_unfinished_snapshots(clones):
    with pytest.raises(CloneError, match="no ready snapshot"):
        clones.begin_restore(_req(_env()), "x")
    clones.snapshot("r1")
    with pytest.raises(CloneError, match="snap-nope.* does not exist; ready snapshots: snap-"):
        clones.begin_restore(_req(_env(), snapshot="snap-nope"), "x")
    with clones._registry() as reg:  # an export mid-snapshot
        reg.execute("INSERT INTO snapshots (id, base, run_id, status) VALUES ('snap-mid', %s, 'r2', 'creating')",
                    (clones.base,))
    with pytest.raises(CloneBusy, match="still being created by export run r2"):
        clones.begin_restore(_req(_env(), snapshot="snap-mid"), "x")
    env = _env()
    assert _restore(clones, env).snapshot != "snap-mid"  # latest = newest *ready* snapshot
    assert {e.name for e in clones.environments()} == {env}


def test_failed_hook_leaves_no_healthy_env_and_teardown_cleans_up(clones, pg):
    clones.snapshot("r1")
    env = _env()
    clones.begin_restore(_req(env), "run-1")
    with pytest.raises(CloneError, match="post-restore hook #2 failed: .*no_such_table"):
        clones.finish_restore(env, "run-1", ("SELECT 1", "UPDATE no_such_table SET x = 1"))
    assert [e.status for e in clones.environments()] == ["failed"]
    with pytest.raises(CloneError, match="not a ready environment"):
        clones.connection(env)
    assert clones.due_for_teardown() == [(env, "failed")]
    removed = clones.teardown(env, reason="failed")
    assert f"database {env} (0 session(s) ended)" in removed.objects
    assert not rows(pg, "SELECT 1 FROM pg_database WHERE datname = %s", (env,))


def test_crash_mid_clone_is_retried_by_the_same_run(clones, pg):
    """A worker killed after CREATE DATABASE leaves a 'creating' row; the retry starts over cleanly."""
    clones.snapshot("r1")
    env = _env()
    clones.begin_restore(_req(env), "run-1")  # 'creating', hooks never ran
    with psycopg.connect(_clone_dsn(clones, env), autocommit=True) as c:
        c.execute("CREATE TABLE half_done (x int)")
    clones.begin_restore(_req(env), "run-1")  # the task's retry
    assert rows(_clone_dsn(clones, env), "SELECT count(*) FROM pg_tables WHERE tablename = 'half_done'")[0][0] == 0
    # A different run waits for the first, then gives up with a clear message.
    with pytest.raises(CloneBusy, match="run run-1 .creating."):
        clones.begin_restore(_req(env), "run-2")
    assert clones.finish_restore(env, "run-1", ()).status == "ready"


def test_concurrent_restores_of_one_env_clone_once(clones):
    clones.snapshot("r1")
    env, results, errors = _env(), [], []

    def go(run):
        try:
            clones_env = clones.begin_restore(_req(env), run)
            results.append(clones.finish_restore(env, run, ()) if clones_env.run_id == run else clones_env)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(f"run-{i}",)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len({r.run_id for r in results}) == 1  # one clone; the others found it


def test_extend_within_profile_maximum(clones):
    clones.snapshot("r1")
    env = _env()
    made = _restore(clones, env, ttl_hours=24)
    longer = clones.extend(env, 24)
    assert timedelta(hours=23.9) < longer.expires_at - made.expires_at < timedelta(hours=24.1)
    with pytest.raises(CloneError, match="beyond the preview profile's maximum of 72h"):
        clones.extend(env, 48)
    assert clones.environments()[0].expires_at == longer.expires_at


def test_expired_envs_are_due_and_prune_keeps_snapshots_in_use(clones, pg):
    s1 = clones.snapshot("r1")
    env = _env()
    _restore(clones, env)
    s2, s3 = clones.snapshot("r2"), clones.snapshot("r3")
    assert [s.id for s in clones.snapshots()][:3] == [s3.id, s2.id, s1.id]
    assert clones.prune_snapshots(keep=1) == [s2.id]  # s1 is in use by env
    assert rows(pg, "SELECT 1 FROM pg_database WHERE datname = %s", (s1.id,))
    with clones._registry() as reg:
        reg.execute("UPDATE environments SET expires_at = %s WHERE name = %s", (datetime.now(UTC) - timedelta(minutes=1), env))
    assert clones.due_for_teardown() == [(env, "expired")]
    clones.teardown(env, reason="expired")
    assert clones.prune_snapshots(keep=1) == [s1.id]
    assert [s.id for s in clones.snapshots()] == [s3.id]
    assert not rows(pg, "SELECT 1 FROM pg_database WHERE datname IN (%s, %s)", (s1.id, s2.id))


def test_base_server_down_is_a_clear_error(clones):
    from prodclone.drivers.postgres import PostgresDriver
    from prodclone.errors import ConnectionFailed

    down = PostgresDriver("host=127.0.0.1 port=1 dbname=base user=x password=hunter2", clones.cfg, clones.secrets)
    with pytest.raises(ConnectionFailed, match="cannot connect to the base server") as err:
        down.begin_restore(_req(_env()), "x")
    assert "hunter2" not in str(err.value)
