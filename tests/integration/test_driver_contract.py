"""One contract, two drivers: the same behaviours against the postgres driver (a real Postgres, the
non-superuser base role with a password, see the `clones` fixture) and the velero driver (tests/fakekube,
see the `kube` fixture). What the DAGs rely on is here; each driver's own mechanics (roles and markers,
PVs and VolumeSnapshotContents) stay in test_postgres_driver.py and test_velero_driver.py."""

import json
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import psycopg.sql
import pytest

from prodclone.drivers.base import CloneError, RestoreRequest, Status, WaitSpec

MERGE = "application/merge-patch+json"
P = "prodclone.io/"


class PostgresHarness:
    """The postgres driver, and what a test needs to reach behind it."""

    def __init__(self, driver, monkeypatch):
        self.driver, self.monkeypatch = driver, monkeypatch

    def fail_next_snapshot(self):
        real = self.driver._copy_database

        def failing(*args, **kwargs):
            self.monkeypatch.setattr(self.driver, "_copy_database", real)
            raise CloneError("injected failure")

        self.monkeypatch.setattr(self.driver, "_copy_database", failing)

    def set_times(self, env, **times):
        with psycopg.connect(self.driver.registry_dsn, autocommit=True) as c:
            for column, at in times.items():
                c.execute(f"UPDATE environments SET {column} = %s WHERE name = %s", (at, env))  # noqa: S608 (fixed names)

    def exists(self, env) -> bool:
        with psycopg.connect(self.driver.admin_dsn) as c:
            return c.execute("SELECT 1 FROM pg_database WHERE datname = %s", (env,)).fetchone() is not None

    def up(self, env, run="run-1", **kw):
        self.driver.begin_restore(_req(env, **kw), run)
        return self.driver.finish_restore(env, run, ())


class VeleroHarness:
    def __init__(self, kube):
        self.kube, self.driver = kube, kube.driver

    def fail_next_snapshot(self):
        self.kube.sim.faults.backup_result = "PartiallyFailed"

    def set_times(self, env, **times):
        names = {"expires_at": "expires-at", "updated_at": "updated-at"}
        self.kube.cluster.patch("namespaces", env, {"metadata": {"annotations": {
            P + names[k]: at.strftime("%Y-%m-%dT%H:%M:%SZ") for k, at in times.items()}}}, MERGE)

    def exists(self, env) -> bool:
        return any(n["metadata"]["name"] == env for n in self.kube.cluster.find("namespaces"))

    def up(self, env, run="run-1", **kw):
        """Every fake clone's datastore is the same real role: a second clone starts from the base's password
        again, as a real one (restored from the same backup) would."""
        with psycopg.connect(self.kube.pg, autocommit=True) as c:
            c.execute(psycopg.sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                psycopg.sql.Identifier(self.kube.role), psycopg.sql.Literal(self.kube.secret["password"])))
        self.driver.begin_restore(_req(env, **kw), run)
        return self.driver.finish_restore(env, run, ())


@pytest.fixture(params=["postgres", "velero"])
def h(request, monkeypatch):
    if request.param == "postgres":
        return PostgresHarness(request.getfixturevalue("clones"), monkeypatch)
    return VeleroHarness(request.getfixturevalue("kube"))


def _env(prefix="preview"):
    return f"{prefix}-c{uuid.uuid4().hex[:8]}"


def _req(env, **kw):
    return RestoreRequest(env=env, profile=env.split("-")[0], ttl_hours=kw.pop("ttl_hours", 24),
                          snapshot=kw.pop("snapshot", "latest"), requested_by="pytest", **kw)


def test_snapshot_begins_then_finishes_and_a_retry_reuses_it(h):
    d = h.driver
    sid = d.begin_snapshot("export-1", export="file:///x", rows=12, rules_sha256="ab" * 32)
    assert d.begin_snapshot("export-1", export="file:///x", rows=12, rules_sha256="ab" * 32) == sid
    snap = d.finish_snapshot("export-1")
    assert (snap.id, snap.status, snap.run_id, snap.rows, snap.export) == (sid, Status.READY, "export-1", 12, "file:///x")
    assert snap.rules_sha256 == "ab" * 32
    assert d.finish_snapshot("export-1").id == sid and d.snapshot("export-1").id == sid  # retried tasks
    assert [s.id for s in d.snapshots()] == [sid]
    with pytest.raises(CloneError, match="run export-2 started no"):
        d.finish_snapshot("export-2")


def test_latest_is_the_newest_ready_snapshot_never_a_failed_one(h):
    d = h.driver
    with pytest.raises(CloneError, match="there is no ready snapshot yet: run prodclone_export first"):
        d.latest_snapshot()
    good = d.snapshot("r1")
    h.fail_next_snapshot()
    with pytest.raises(CloneError):
        d.snapshot("r2")
    bad = d.snapshots()[0]
    assert bad.id != good.id and bad.status == Status.FAILED
    assert d.latest_snapshot().id == good.id == d.resolve_snapshot("latest").id
    assert d.resolve_snapshot(good.id).id == good.id
    with pytest.raises(CloneError, match=f"snapshot '{bad.id}' .*cannot be restored; use 'latest'"):
        d.resolve_snapshot(bad.id)
    with pytest.raises(CloneError, match=f"snapshot 'snap-nope' does not exist; ready snapshots: {good.id} "):
        d.resolve_snapshot("snap-nope")
    assert h.up(_env()).snapshot == good.id


def test_restore_is_idempotent_and_environment_finds_it_by_name(h):
    d = h.driver
    d.snapshot("r1")
    env = _env()
    made = h.up(env, run="run-1")
    assert made.status == Status.READY and made.made_by("run-1")
    again = d.begin_restore(_req(env), "run-2")  # a re-trigger: the healthy env is left as it is
    assert again.run_id == "run-1" and not again.made_by("run-2") and again.status == Status.READY
    assert d.finish_restore(env, "run-1", ()).status == Status.READY
    found = d.environment(env)
    assert (found.name, found.profile, found.snapshot, found.requested_by) == (env, "preview", made.snapshot, "pytest")
    assert [e.name for e in d.environments()] == [env]
    assert d.environment("preview-never-made") is None
    with pytest.raises(CloneError, match=r"preview-never-made does not exist \(it is not in prodclone's registry: "
                                         r".*\); nothing to extend"):
        d.extend("preview-never-made", 1)


def test_extend_is_capped_by_the_envs_own_profile_with_one_message(h):
    d = h.driver
    d.snapshot("r1")
    env = _env()
    h.up(env, ttl_hours=24)
    longer = d.extend(env, 24)  # preview: max_ttl_hours 72
    assert timedelta(hours=47) < longer.expires_at - datetime.now(UTC) <= timedelta(hours=48)
    assert d.environment(env).expires_at == longer.expires_at
    with pytest.raises(CloneError, match=rf"{env} would expire .* UTC, beyond the preview profile's maximum of 72h "
                                         r"from now; extend by at most 24h"):
        d.extend(env, 48)
    with pytest.raises(CloneError, match="extend by at least 1 hour"):
        d.extend(env, 0)
    assert d.environment(env).expires_at == longer.expires_at  # refusals change nothing
    loadtest = _env("loadtest")
    h.up(loadtest, ttl_hours=24)
    assert d.extend(loadtest, 100).expires_at > longer.expires_at  # loadtest's own cap: 168h


def test_a_failing_step_marks_the_env_failed_and_teardown_sweeps_it(h):
    d = h.driver
    d.snapshot("r1")
    env = _env()
    d.begin_restore(_req(env), "run-1")
    with pytest.raises(CloneError, match="post-restore hook #2 failed"):
        d.finish_restore(env, "run-1", ("SELECT 1", "UPDATE no_such_table SET x = 1"))
    assert d.environment(env).status == Status.FAILED
    with pytest.raises(CloneError, match="not a ready environment"):
        d.connection(env)
    assert d.due_for_teardown() == [(env, "failed")]
    removed = d.teardown(env, reason="failed")
    assert removed.env == env and removed.reason == "failed" and removed.objects
    assert removed.text().startswith(f"{env} (failed): removed ")
    assert d.environment(env) is None and not h.exists(env) and d.due_for_teardown() == []


def test_due_for_teardown_expired_and_stale_soonest_first(h):
    d = h.driver
    d.snapshot("r1")
    now = datetime.now(UTC)
    expired, later, half = _env(), _env(), _env()
    h.up(expired)
    h.up(later)
    d.begin_restore(_req(half), "run-h")  # creating, and its run is alive: not due
    assert d.due_for_teardown() == []
    h.set_times(expired, expires_at=now - timedelta(hours=1))
    h.set_times(later, expires_at=now - timedelta(minutes=5))
    assert d.due_for_teardown() == [(expired, "expired"), (later, "expired")]
    h.set_times(half, updated_at=now - timedelta(minutes=d.cfg.stale_minutes + 5))
    assert d.stale(d.environment(half)) and not d.stale(d.environment(later))
    assert (half, "stuck creating") in d.due_for_teardown()
    for env, reason in d.due_for_teardown():
        d.teardown(env, reason=reason)
    assert d.environments() == [] and not any(h.exists(e) for e in (expired, later, half))


def test_status_is_an_enum_that_travels_as_its_string(h):
    d = h.driver
    snap = d.snapshot("r1")
    env = h.up(_env())
    for thing in (snap, env, d.snapshots()[0], d.environments()[0], d.environment(env.name)):
        assert isinstance(thing.status, Status) and thing.status == "ready"
        wire = json.loads(json.dumps(thing.as_dict()))
        assert wire["status"] == "ready" and type(thing.as_dict()["status"]) is str
    assert type(env).from_dict(env.as_dict()) == env
    assert {s.value for s in Status} == {"creating", "ready", "failed", "deleting"}


def test_wait_spec_is_typed_and_none_when_nothing_to_wait_for(h):
    d = h.driver
    sid = d.begin_snapshot("r1")
    spec = d.wait_spec("snapshot", sid)
    d.finish_snapshot("r1")
    env = _env()
    d.begin_restore(_req(env), "run-1")
    restore = d.wait_spec("restore", env)
    if isinstance(h, PostgresHarness):  # its copies finish inside begin_*: nothing to defer
        assert spec is None and restore is None
    else:
        assert spec == WaitSpec("backups", "velero", sid, d.v.wait_minutes * 60)
        assert restore.resource == "restores" and restore.name.startswith(env)
        assert d.wait_spec("restore", "preview-never-made") is None
    d.finish_restore(env, "run-1", ())
