"""The ``postgres`` clone driver, the embedded default.

snapshot: ``CREATE DATABASE <snap> TEMPLATE <base>``; restore:
``CREATE DATABASE <env> TEMPLATE <snap>``. Postgres copies a template only
while nobody is connected to it, so snapshots never accept connections and
the base is closed to new sessions for the moment it is copied.

The driver's registry (a database on the base server, default
``prodclone_registry``) is its record of every snapshot and environment, with
owner, profile, created and expires-at. Teardown drops only databases and
roles the registry lists *and* whose comment carries prodclone's marker.

Who runs what (clone users are not trusted; see the README's Security model):

- The base connection's role needs CREATEDB and CREATEROLE, not superuser.
  It owns every database it creates, clones included; a clone's role owns the
  schemas and objects inside (so migrations run) and holds only CONNECT,
  TEMPORARY and CREATE on its database. Connection limit, settings and the
  marker teardown relies on stay out of its reach. The base role is granted
  membership *of* the clone role (to hand objects over and end its sessions);
  the clone role is a member of nothing.
- Inside the base (so in every snapshot) the objects belong to the base's
  owner role, the role seed loads as (see prodclone.seed), never to the base
  role. The base role is a member of both, so the restore hands every object
  from one to the other. Nothing here runs the schema's code: copying a
  template copies files, ``ALTER ... OWNER TO`` runs no table code (and the
  hand-over's session resolves names in ``pg_catalog`` only), and
  ``DROP DATABASE`` runs nothing inside.
- The clone role is created NOLOGIN. Every database is created closed to
  connections and opened only after PUBLIC's rights are revoked.
- The profile's post_restore_sql runs as the clone's own role, never as the
  base role: the copy holds functions and triggers from the production
  schema, and a hook run with more rights would run them with those rights.
  For the hooks the role logs in with a one-time password that never leaves
  this process and expires within minutes; afterwards it is NOLOGIN again.
  (``SET ROLE`` would not do: a trigger can ``RESET ROLE``.) Only then, as the
  last database step, does the role get LOGIN, its password and its expiry,
  and only after that does the URL reach the secret store.
- After that nothing prodclone does runs inside the clone: extend and
  teardown act on the role and the database from the maintenance database.

Crashes: Postgres finishes ``CREATE DATABASE`` even when its client dies, so
a copy can exist before the comment that marks it. The registry row, written
before the copy, records the intent; see ``_crash_leftover`` for when such an
unmarked copy is recognised as ours and dropped.

Concurrency: advisory locks on the registry connection. ``env:<name>`` lets
one run at a time act on an environment; ``base:<db>`` serialises snapshots;
a restore holds ``snap:<id>`` shared while it copies, and pruning takes it
exclusively (skipping a busy snapshot), so a snapshot is never dropped
under a restore.
"""

from __future__ import annotations

import logging
import secrets as pysecrets
import time
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from hashlib import sha256

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from prodclone import roles, thinclone
from prodclone.config import Config
from prodclone.db import catalog_only, connect, dbname_of, drop_database, password_verifier, with_dbname
from prodclone.drivers.base import (
    CloneBusy,
    CloneDriver,
    CloneError,
    Connection,
    Environment,
    Removed,
    RestoreRequest,
    SecretStore,
    Snapshot,
    Status,
    connection_url,
    run_post_restore_sql,
    validate_env_name,
)
from prodclone.faults import fault_point
from prodclone.marker import ADMIN_DB, SYSTEM_DBS, format_marker, marked_as, parse_marker
from prodclone.poll import Poll, WaitTimeout

log = logging.getLogger(__name__)

REGISTRY_SCHEMA = """
CREATE TABLE IF NOT EXISTS snapshots (
    id text PRIMARY KEY,
    base text NOT NULL,
    run_id text NOT NULL UNIQUE,
    status text NOT NULL CHECK (status IN ('creating', 'ready', 'failed')),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    export text NOT NULL DEFAULT '',
    rows bigint NOT NULL DEFAULT 0,
    rules_sha256 text NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS environments (
    name text PRIMARY KEY,
    profile text NOT NULL,
    snapshot_id text NOT NULL,
    status text NOT NULL CHECK (status IN ('creating', 'ready', 'failed', 'deleting')),
    requested_by text NOT NULL,
    pr integer,
    run_id text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    clone_seconds double precision
);
ALTER TABLE snapshots ADD COLUMN IF NOT EXISTS copy_method text NOT NULL DEFAULT '';
ALTER TABLE environments ADD COLUMN IF NOT EXISTS copy_method text NOT NULL DEFAULT '';
"""

# Everything in the clone's own schemas changes owner to the clone's role, so
# the app (and its migrations) can use it. Objects that follow their table
# (indexes, owned/identity sequences, row types, array types) and extension
# members are left to follow; partitions (an 'a' dependency) are not.
OWNED_OBJECTS = """
WITH own AS (
  SELECT classid, objid FROM pg_depend WHERE deptype IN ('a', 'i', 'e')
)
SELECT format('ALTER SCHEMA %%I OWNER TO %%I', n.nspname, %(role)s::text)
  FROM pg_namespace n
 WHERE n.nspname NOT LIKE 'pg\\_%%' AND n.nspname <> 'information_schema'
   AND NOT EXISTS (SELECT 1 FROM own WHERE classid = 'pg_namespace'::regclass AND objid = n.oid)
UNION ALL
SELECT format('ALTER %%s %%s OWNER TO %%I',
              CASE c.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                             WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END, c.oid::regclass, %(role)s::text)
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
   AND n.nspname NOT LIKE 'pg\\_%%' AND n.nspname <> 'information_schema'
   AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                      AND (d.deptype = 'e' OR (c.relkind = 'S' AND d.deptype IN ('a', 'i'))))
UNION ALL
SELECT format('ALTER TYPE %%s OWNER TO %%I', t.oid::regtype, %(role)s::text)
  FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
 WHERE (t.typtype IN ('e', 'd', 'r', 'm') OR (t.typtype = 'c' AND (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c'))
   AND n.nspname NOT LIKE 'pg\\_%%' AND n.nspname <> 'information_schema'
   AND NOT EXISTS (SELECT 1 FROM own WHERE classid = 'pg_type'::regclass AND objid = t.oid)
UNION ALL
SELECT format('ALTER ROUTINE %%s OWNER TO %%I', p.oid::regprocedure, %(role)s::text)
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname NOT LIKE 'pg\\_%%' AND n.nspname <> 'information_schema'
   AND NOT EXISTS (SELECT 1 FROM own WHERE classid = 'pg_proc'::regclass AND objid = p.oid)
"""


# A clone user can make any number of large objects in a database it may connect to (``postgres``, template1).
LARGE_OBJECT_BATCH = 1000
UNLINK_LARGE_OBJECTS = """SELECT count(lo_unlink(oid)) FROM (SELECT oid FROM pg_largeobject_metadata
                           WHERE lomowner = (SELECT oid FROM pg_roles WHERE rolname = %s) LIMIT %s) AS batch"""


def _now() -> datetime:
    return datetime.now(UTC)


def _ident(name: str) -> sql.Identifier:
    return sql.Identifier(name)


def snapshot_id(run_id: str, at: datetime) -> str:
    """Readable, sortable and unique per run: snap-20261121-0200-3f2a9c."""
    return f"snap-{at:%Y%m%d-%H%M}-{sha256(run_id.encode()).hexdigest()[:6]}"


class PostgresDriver(CloneDriver):
    def __init__(self, base_dsn: str, cfg: Config, secrets: SecretStore, *, busy_wait: float = 600.0):
        self.cfg = cfg
        self.secrets = secrets
        self.base = dbname_of(base_dsn)
        self.base_dsn = base_dsn
        self.admin_dsn = with_dbname(base_dsn, ADMIN_DB)
        self.registry_dsn = with_dbname(base_dsn, cfg.registry_database)
        self.busy_wait = busy_wait
        self._registry_ready = False
        self._method: thinclone.CopyMethod | None = None  # probed at the first copy

    # -- plumbing -----------------------------------------------------------

    @contextmanager
    def _admin(self):
        conn = connect(catalog_only(self.admin_dsn), role="base server", autocommit=True)
        try:
            yield conn
        finally:
            conn.close()

    @contextmanager
    def _registry(self):
        if not self._registry_ready:
            self._ensure_registry()
        conn = connect(self.registry_dsn, role="registry", autocommit=True, row_factory=dict_row)
        try:
            conn.execute("SET lock_timeout = '60s'")
            yield conn
        finally:
            conn.close()

    def _ensure_registry(self) -> None:
        name = self.cfg.registry_database
        with self._admin() as admin:
            marked = self._marked(admin, name, role="registry")
            if marked is False:
                raise CloneError(f"database {name!r} exists but prodclone did not create it; "
                                 f"set clones.registry_database to another name")
            if marked is None:  # closed until PUBLIC is out; from template0, which no clone user can hold open
                with suppress(psycopg.errors.DuplicateDatabase):  # a concurrent task made it first
                    admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0 ALLOW_CONNECTIONS false").format(
                        _ident(name)))
                    fault_point("registry.created")
                    self._mark(admin, name, role="registry")
            self._open(admin, name)  # also reopens one a killed run left closed
        with connect(self.registry_dsn, role="registry", autocommit=True) as conn:
            conn.execute("SELECT pg_advisory_lock(hashtext('prodclone:registry-schema'))")
            conn.execute(REGISTRY_SCHEMA)
        self._registry_ready = True

    @contextmanager
    def _lock(self, reg, key: str, *, shared: bool = False):
        fn = "pg_advisory_lock_shared" if shared else "pg_advisory_lock"
        try:
            reg.execute(f"SELECT {fn}(hashtext(%s))", (f"prodclone:{key}",))
        except psycopg.errors.LockNotAvailable:
            raise CloneBusy(f"{key} is locked by another prodclone run; retry when it finishes") from None
        try:
            yield
        finally:
            with suppress(psycopg.Error):
                reg.execute(f"SELECT {fn.replace('lock', 'unlock')}(hashtext(%s))", (f"prodclone:{key}",))

    @contextmanager
    def _try_lock(self, reg, key: str):
        got = reg.execute("SELECT pg_try_advisory_lock(hashtext(%s)) AS ok", (f"prodclone:{key}",)).fetchone()["ok"]
        try:
            yield got
        finally:
            if got:
                with suppress(psycopg.Error):
                    reg.execute("SELECT pg_advisory_unlock(hashtext(%s))", (f"prodclone:{key}",))

    @staticmethod
    def _database(admin, db: str) -> dict | None:
        """None: no such database; else its comment, whether the connected role owns it, and whether it is open."""
        row = admin.execute("SELECT shobj_description(oid, 'pg_database'), datdba = (SELECT oid FROM pg_roles "
                            "WHERE rolname = current_user), datallowconn FROM pg_database WHERE datname = %s",
                            (db,)).fetchone()
        return None if row is None else {"comment": row[0], "mine": row[1], "open": row[2]}

    def _marked(self, admin, db: str, **tags: str) -> bool | None:
        """None: no such database; else whether its comment is prodclone's mark carrying exactly ``tags``."""
        found = self._database(admin, db)
        return None if found is None else marked_as(found["comment"], **tags)

    def _crash_leftover(self, admin, db: str, row: dict | None) -> bool:
        """Whether unmarked ``db`` is a copy a crashed prodclone run left between CREATE DATABASE and its COMMENT.

        All must hold: the registry ``row`` recorded the intent to create exactly this name before the copy
        started and the step never completed (not ``ready``); the database carries no comment at all (neither
        someone's note nor another mark); and the base role itself owns it. Only that role, or a superuser acting
        for it, can create a database it owns, so neither a clone user nor another tenant of the server can plant
        one that passes; an operator's database of that name fails the ownership or the comment test.
        """
        found = self._database(admin, db)
        return (found is not None and row is not None and row["status"] != Status.READY and found["comment"] is None
                and found["mine"])

    @staticmethod
    def _mark(admin, db: str, **tags: str) -> None:
        admin.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(_ident(db), sql.Literal(format_marker(**tags))))

    @staticmethod
    def _open(admin, db: str) -> None:
        """PUBLIC loses every right first, then the database accepts connections (prodclone creates them closed)."""
        admin.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(_ident(db)))
        admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(_ident(db)))

    @staticmethod
    def _role_marked(admin, role: str) -> bool | None:
        row = admin.execute("SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = %s",
                            (role,)).fetchone()
        return None if row is None else marked_as(row[0], env=role)

    def _host(self) -> tuple[str, int]:
        p = psycopg.conninfo.conninfo_to_dict(self.base_dsn)
        return p.get("host") or "localhost", int(p.get("port") or 5432)

    # -- snapshots ----------------------------------------------------------

    def begin_snapshot(self, run_id: str, export: str = "", rows: int = 0, rules_sha256: str = "") -> str:
        """The whole copy happens here (it takes seconds to minutes, never long enough to defer)."""
        with self._registry() as reg, self._lock(reg, f"base:{self.base}"):
            row = reg.execute("SELECT * FROM snapshots WHERE run_id = %s", (run_id,)).fetchone()
            sid = row["id"] if row else snapshot_id(run_id, _now())
            with self._lock(reg, f"snap:{sid}"), self._admin() as admin:  # prune skips it meanwhile
                if row and row["status"] == Status.READY and self._marked(admin, sid, role="snapshot"):
                    return sid  # a retry after success
                self._recover_snapshots(reg, admin)
                if not self._is_base(admin):
                    raise CloneError(f"base database {self.base!r} does not exist or was not seeded by prodclone; "
                                     f"run prodclone_export (seed_base) first")
                reg.execute("""INSERT INTO snapshots (id, base, run_id, status, export, rows, rules_sha256)
                               VALUES (%s, %s, %s, 'creating', %s, %s, %s)
                               ON CONFLICT (id) DO UPDATE SET status = 'creating', updated_at = now()""",
                            (sid, self.base, run_id, export, rows, rules_sha256))
                fault_point("snapshot.registered")
                with self._failing(f"snapshot {sid}", lambda: reg.execute(
                        "UPDATE snapshots SET status = 'failed', updated_at = now() WHERE id = %s", (sid,))):
                    leftover = self._marked(admin, sid, role="snapshot")
                    if leftover is False and not self._crash_leftover(admin, sid, row):
                        raise CloneError(f"database {sid!r} exists but prodclone did not create it; refusing to touch it")
                    if leftover is not None:  # a failed or killed attempt of this same run
                        drop_database(admin, sid)
                    # Created closed, and it stays closed: restores never wait on sessions.
                    self._copy_database(admin, self.base, sid, close_template=True)
                    fault_point("snapshot.database_created")
                    reg.execute("UPDATE snapshots SET copy_method = %s WHERE id = %s", (self.copy_method(admin), sid))
                    self._mark(admin, sid, role="snapshot", base=self.base, run=run_id)
                    admin.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(_ident(sid)))
            reg.execute("UPDATE snapshots SET status = 'ready', updated_at = now() WHERE id = %s", (sid,))
            return sid

    def finish_snapshot(self, run_id: str) -> Snapshot:
        with self._registry() as reg:
            row = reg.execute("SELECT * FROM snapshots WHERE run_id = %s", (run_id,)).fetchone()
        if row is None:
            raise self._not_started(run_id)
        if row["status"] != Status.READY:
            raise CloneError(f"snapshot {row['id']} of run {run_id} is {row['status']}; retry the snapshot task")
        return self._snap(row)

    def _is_base(self, admin) -> bool:
        """The base is marked by seed as the base of exactly this name (older marks carry no name: the role suffices)."""
        found = self._database(admin, self.base)
        tags = parse_marker(found["comment"]) if found else None
        return bool(tags) and tags.get("role") == "base" and tags.get("base", self.base) == self.base

    def _recover_snapshots(self, reg, admin) -> None:
        """Repair what a killed snapshot left. Call with the ``base:`` lock held: no snapshot of this base is being
        made, so a ``creating`` row is a dead run's (failed: prune drops its copy, marked or not) and a base
        closed to connections was closed by it (reopened, PUBLIC still shut out)."""
        dead = reg.execute("UPDATE snapshots SET status = 'failed', updated_at = now() WHERE base = %s "
                           "AND status = 'creating' RETURNING id", (self.base,)).fetchall()
        for r in dead:
            log.warning("snapshot %s was left half-made by a killed run; marked failed for pruning", r["id"])
        found = self._database(admin, self.base)
        if found and not found["open"] and self._is_base(admin):
            log.warning("base %s was left closed to connections by a killed snapshot; reopening it", self.base)
            self._open(admin, self.base)

    def _copy_database(self, admin, template: str, target: str, *, close_template: bool) -> None:
        """CREATE DATABASE target TEMPLATE template, closed to connections (the caller opens it once it is marked
        and PUBLIC is shut out); Postgres refuses while anyone is connected to the template."""
        strategy = sql.SQL(" STRATEGY {}").format(sql.SQL(self.cfg.clone_strategy.upper()))
        if admin.info.server_version < 150000:
            strategy = sql.SQL("")
        if self.copy_method(admin) != "wal_log":
            thinclone.use(admin, self._method)
        create = (sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(_ident(target), _ident(template)) + strategy
                  + sql.SQL(" ALLOW_CONNECTIONS false"))
        if not close_template:
            admin.execute(create)
            return
        admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(_ident(template)))
        fault_point("snapshot.base_closed")
        try:
            # Autovacuum workers are not ours to end (only a superuser may); CREATE DATABASE cancels them itself.
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                          "AND backend_type <> 'autovacuum worker'", (template,))
            # Terminated backends take a moment to go.
            copying = Poll(f"copying database {template!r}", timeout=5, every=0.25,
                           transient=lambda exc: isinstance(exc, psycopg.errors.ObjectInUse))
            try:
                copying.run(lambda: admin.execute(create))
            except WaitTimeout:
                raise CloneError(f"database {template!r} still has sessions; cannot copy it") from None
        finally:
            self._open(admin, template)

    def copy_method(self, admin) -> str:
        """How this driver copies databases on the base server: ``clone`` where PostgreSQL 18 can clone files on
        its filesystem (probed once per process on a throwaway database), else ``copy``; ``wal_log`` when
        clones.strategy says so (WAL_LOG copies through the buffers, never file by file)."""
        if self.cfg.clone_strategy.lower() == "wal_log" and admin.info.server_version >= 150000:
            return "wal_log"
        if self._method is None:
            self._method = thinclone.probe(admin)
            log.info("base server copies databases by %s: %s", self._method.method, self._method.reason)
        return self._method.method

    def _snap(self, row: dict, used_by: list[str] | None = None) -> Snapshot:
        return Snapshot(id=row["id"], status=row["status"], created_at=row["created_at"], run_id=row["run_id"],
                        export=row["export"], rows=row["rows"], rules_sha256=row["rules_sha256"], used_by=used_by or [],
                        copy_method=row["copy_method"])

    def snapshots(self) -> list[Snapshot]:
        with self._registry() as reg:
            rows = reg.execute("""SELECT s.*, coalesce(array_agg(e.name ORDER BY e.name) FILTER (WHERE e.name IS NOT NULL),
                                                       '{}') AS used_by
                                    FROM snapshots s LEFT JOIN environments e ON e.snapshot_id = s.id
                                   GROUP BY s.id ORDER BY s.created_at DESC, s.id DESC""").fetchall()
        return [self._snap(r, list(r["used_by"])) for r in rows]

    def prune_snapshots(self, keep: int) -> list[str]:
        keep = max(1, keep)  # the newest ready snapshot is what restores use: never pruned
        pruned = []
        with self._registry() as reg:
            with self._try_lock(reg, f"base:{self.base}") as idle, self._admin() as admin:
                if idle:  # no snapshot is being made: what one left half-made is a crash's
                    self._recover_snapshots(reg, admin)
            ready = [r["id"] for r in reg.execute("SELECT id FROM snapshots WHERE status = 'ready' "
                                                   "ORDER BY created_at DESC, id DESC")]
            failed = [r["id"] for r in reg.execute("SELECT id FROM snapshots WHERE status = 'failed'")]
            for sid in ready[keep:] + failed:
                with self._try_lock(reg, f"snap:{sid}") as mine:
                    if not mine:
                        continue  # a restore is copying it, or a retried snapshot is making it, right now
                    if reg.execute("SELECT 1 FROM environments WHERE snapshot_id = %s", (sid,)).fetchone():
                        continue  # a live environment still uses it
                    row = reg.execute("SELECT * FROM snapshots WHERE id = %s", (sid,)).fetchone()
                    with self._admin() as admin:
                        marked = self._marked(admin, sid, role="snapshot")
                        if marked is False and not self._crash_leftover(admin, sid, row):
                            log.warning("snapshot %s: the database lacks prodclone's marker; left alone", sid)
                            continue
                        if marked is not None:
                            drop_database(admin, sid)
                    fault_point("prune.database_dropped")
                    reg.execute("DELETE FROM snapshots WHERE id = %s", (sid,))
                    pruned.append(sid)
        return pruned

    # -- environments ---------------------------------------------------------

    def _env(self, row: dict) -> Environment:
        return Environment(name=row["name"], profile=row["profile"], snapshot=row["snapshot_id"], status=row["status"],
                           requested_by=row["requested_by"], pr=row["pr"], created_at=row["created_at"],
                           expires_at=row["expires_at"], run_id=row["run_id"], updated_at=row["updated_at"],
                           clone_seconds=row["clone_seconds"], copy_method=row["copy_method"])

    def _refuse_foreign_name(self, env: str) -> None:
        reserved = {self.base, f"{self.base}__staging", f"{self.base}__previous", self.cfg.registry_database,
                    *SYSTEM_DBS, *self.cfg.protected}
        if env in reserved:
            raise CloneError(f"{env!r} names the base, the registry or a protected database; choose another name")

    def environments(self) -> list[Environment]:
        with self._registry() as reg:
            return [self._env(r) for r in reg.execute("SELECT * FROM environments ORDER BY created_at DESC")]

    def environment(self, name: str) -> Environment | None:
        with self._registry() as reg:
            row = reg.execute("SELECT * FROM environments WHERE name = %s", (name,)).fetchone()
        return self._env(row) if row else None

    def begin_restore(self, req: RestoreRequest, run_id: str) -> Environment:
        env = validate_env_name(req.env)
        self._refuse_foreign_name(env)
        holder = ["another prodclone run"]

        def attempt() -> Environment | None:
            with self._registry() as reg, self._try_lock(reg, f"env:{env}") as mine:
                row = reg.execute("SELECT * FROM environments WHERE name = %s", (env,)).fetchone()
                if mine and row and row["status"] == Status.READY and not req.replace:
                    with self._admin() as admin:
                        healthy = self._marked(admin, env, env=env)
                    if healthy:
                        log.info("%s already exists and is healthy; nothing to do (replace=true re-clones)", env)
                        return self._env(row)
                busy = not mine or (row and row["run_id"] != run_id and row["status"] in (Status.CREATING, Status.DELETING)
                                    and not self.stale(self._env(row)))
                if not busy:
                    if row:  # failed, stale, our own earlier attempt, unhealthy, or replace
                        self._remove(reg, row)
                    return self._clone(reg, req, run_id)
            holder[0] = f"run {row['run_id']} ({row['status']})" if row else "another prodclone run"
            log.info("%s is being worked on by %s; waiting", env, holder[0])
            return None

        try:
            return Poll(f"the claim on {env}", timeout=self.busy_wait, every=2).run(attempt)
        except WaitTimeout:
            raise CloneBusy(f"{env} is being worked on by {holder[0]} and it did not finish within "
                            f"{self.busy_wait:.0f}s; retry later") from None

    def _clone(self, reg, req: RestoreRequest, run_id: str) -> Environment:
        env, started = req.env, time.perf_counter()
        snap = self.resolve_snapshot(req.snapshot)
        with self._lock(reg, f"snap:{snap.id}", shared=True), self._admin() as admin:
            if self._marked(admin, env) is not None:
                raise CloneError(f"database {env!r} exists but prodclone's registry did not create it; "
                                 f"refusing to touch it. Choose another name or remove it yourself.")
            if self._role_marked(admin, env) is not None:
                raise CloneError(f"role {env!r} exists but prodclone's registry did not create it; "
                                 f"refusing to touch it. Choose another name or remove it yourself.")
            if not reg.execute("SELECT 1 FROM snapshots WHERE id = %s AND status = 'ready'", (snap.id,)).fetchone():
                raise CloneError(f"snapshot {snap.id} was pruned meanwhile; retry to use the latest")
            expires = _now() + timedelta(hours=req.ttl_hours)
            # The row comes first: whatever exists below is then something teardown knows about.
            reg.execute("""INSERT INTO environments (name, profile, snapshot_id, status, requested_by, pr, run_id,
                                                     expires_at)
                           VALUES (%s, %s, %s, 'creating', %s, %s, %s, %s)""",
                        (env, req.profile, snap.id, req.requested_by, req.pr, run_id, expires))
            fault_point("restore.registered")
            with self._failing(env, lambda: self._mark_failed(reg, env)):
                self._create_role(admin, env)
                fault_point("restore.role_created")
                self._copy_database(admin, snap.id, env, close_template=False)
                fault_point("restore.database_created")
                reg.execute("UPDATE environments SET copy_method = %s WHERE name = %s", (self.copy_method(admin), env))
                self._mark(admin, env, role="clone", env=env, snapshot=snap.id)
                self._configure(admin, env, req.profile)
                fault_point("restore.configured")
        row = reg.execute("UPDATE environments SET clone_seconds = %s, updated_at = now() WHERE name = %s RETURNING *",
                          (round(time.perf_counter() - started, 3), env)).fetchone()
        return self._env(row)

    @staticmethod
    def _mark_failed(reg, env: str) -> None:
        reg.execute("UPDATE environments SET status = 'failed', updated_at = now() WHERE name = %s", (env,))

    @staticmethod
    def _create_role(admin, env: str) -> None:
        """The clone's role: NOLOGIN until finish_restore's last step, and created and marked in one transaction,
        so a crash never leaves an unmarked role that would block the name for good. The base role becomes a
        member *of* it (Postgres 16 requires that to hand objects over and end its sessions), never the reverse."""
        roles.create_marked_role(admin, env, format_marker(role="clone", env=env))

    def _configure(self, admin, env: str, profile_name: str) -> None:
        """The database stays the base role's (its limit, settings and mark are out of the clone role's reach);
        the clone role gets CONNECT, TEMPORARY and CREATE on it and owns the objects inside (the base's owner
        role's until then), handed over before anyone but the base role could have connected. ``ALTER ... OWNER
        TO`` executes none of the objects' code."""
        db = _ident(env)
        admin.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(db))
        admin.execute(sql.SQL("GRANT CONNECT, TEMPORARY, CREATE ON DATABASE {} TO {}").format(db, db))
        profile = self.cfg.profile(profile_name)
        admin.execute(sql.SQL("ALTER DATABASE {} CONNECTION LIMIT {}").format(db, sql.Literal(profile.connection_limit)))
        for name, value in profile.settings:
            admin.execute(sql.SQL("ALTER DATABASE {} SET {} = {}").format(db, _ident(name), sql.Literal(value)))
        self._open(admin, env)
        with connect(catalog_only(with_dbname(self.admin_dsn, env)), role="clone", autocommit=True) as conn, \
                conn.transaction():
            for (stmt,) in conn.execute(OWNED_OBJECTS, {"role": env}).fetchall():
                conn.execute(stmt)

    def _url(self, env: str, password: str) -> str:
        return connection_url(*self._host(), env, env, password)

    def finish_restore(self, env: str, run_id: str, hooks: tuple[str, ...] | None = None) -> Environment:
        with self._registry() as reg, self._lock(reg, f"env:{env}"):
            row = reg.execute("SELECT * FROM environments WHERE name = %s", (env,)).fetchone()
            if row is None:
                raise CloneError(f"{env} is not in the registry; its restore did not start or it was torn down")
            if row["status"] == Status.READY:
                return self._env(row)  # the idempotent path, or a retry after success
            if row["run_id"] != run_id:
                raise CloneBusy(f"{env} was taken over by run {row['run_id']}")
            if row["status"] != Status.CREATING:
                raise CloneError(f"{env} is {row['status']}; re-run the restore to start over")
            hooks = self._post_restore_sql(self._env(row), hooks)
            with self._failing(env, lambda: self._mark_failed(reg, env)):
                if hooks:
                    self._run_hooks(env, hooks)
                fault_point("restore.hooks_done")
                password = pysecrets.token_urlsafe(24)
                with self._admin() as admin:  # the last database step: from now on the role can log in
                    admin.execute(sql.SQL("ALTER ROLE {} LOGIN PASSWORD {} VALID UNTIL {}").format(
                        _ident(env), sql.Literal(password_verifier(admin, env, password)),
                        sql.Literal(row["expires_at"].isoformat())))
                fault_point("restore.login_granted")
                self.secrets.put(env, self._url(env, password))
            row = reg.execute("UPDATE environments SET status = 'ready', updated_at = now() WHERE name = %s RETURNING *",
                              (env,)).fetchone()
            return self._env(row)

    def _run_hooks(self, env: str, hooks: tuple[str, ...]) -> None:
        """The profile's post_restore_sql, logged in as the clone's own role (never more privilege than it has):
        a one-time password that never leaves this process, valid for minutes; NOLOGIN again afterwards."""
        with self._admin() as admin, roles.login_once(admin, env) as once:
            dsn = psycopg.conninfo.make_conninfo(self.base_dsn, user=env, password=once, dbname=env)
            with connect(dsn, role="clone") as conn:
                run_post_restore_sql(conn, hooks, env)
                conn.commit()

    def connection(self, env: str) -> Connection:
        with self._registry() as reg:
            row = reg.execute("SELECT * FROM environments WHERE name = %s", (env,)).fetchone()
        if row is None or row["status"] != Status.READY:
            raise CloneError(f"{env} is not a ready environment")
        host, port = self._host()
        return Connection(env=env, host=host, port=port, database=env, user=env, secret=self.secrets.location(env),
                          expires_at=row["expires_at"].isoformat(timespec="seconds"), snapshot=row["snapshot_id"],
                          copy_method=row["copy_method"])

    @contextmanager
    def _env_lock(self, env: str):
        with self._registry() as reg, self._lock(reg, f"env:{env}"):
            yield

    def _set_expiry(self, env: Environment, expires_at: datetime) -> Environment:
        """The role's VALID UNTIL too: the clone's password stops working when the env expires."""
        with self._admin() as admin:
            admin.execute(sql.SQL("ALTER ROLE {} VALID UNTIL {}").format(_ident(env.name),
                                                                        sql.Literal(expires_at.isoformat())))
        with self._registry() as reg:
            row = reg.execute("UPDATE environments SET expires_at = %s, updated_at = now() WHERE name = %s RETURNING *",
                              (expires_at, env.name)).fetchone()
        return self._env(row)

    def teardown(self, env: str, reason: str = "requested") -> Removed:
        validate_env_name(env)
        self._refuse_foreign_name(env)
        with self._registry() as reg, self._lock(reg, f"env:{env}"):
            row = reg.execute("SELECT * FROM environments WHERE name = %s", (env,)).fetchone()
            if row is None:
                raise CloneError(f"{env} is not in prodclone's registry; prodclone removes only what it created")
            reg.execute("UPDATE environments SET status = 'deleting', updated_at = now() WHERE name = %s", (env,))
            removed = self._remove(reg, row)
            removed.reason = reason
            return removed

    def _remove(self, reg, row: dict) -> Removed:
        """Drop what the registry row says prodclone created; each object only if it carries the marker (or is
        the unmarked copy of a killed restore, see ``_crash_leftover``). Runs nothing inside the clone."""
        env = row["name"]
        removed = Removed(env=env)
        with self._admin() as admin:
            marked = self._marked(admin, env, env=env)
            if marked is False and not self._crash_leftover(admin, env, row):
                raise CloneError(f"database {env!r} lacks prodclone's marker though the registry lists it; "
                                 f"refusing to drop it. Inspect it, then delete its registry row by hand.")
            role = self._role_marked(admin, env)
            if role:
                admin.execute(sql.SQL("ALTER ROLE {} NOLOGIN").format(_ident(env)))  # no new sessions from here
            if marked is not None:
                sessions = drop_database(admin, env)
                removed.objects.append(f"database {env} ({sessions} session(s) ended)")
                fault_point("teardown.database_dropped")
            if role:
                self._drop_role(admin, env)
                removed.objects.append(f"role {env}")
                fault_point("teardown.role_dropped")
            elif role is False:
                log.warning("role %s lacks prodclone's marker; left alone", env)
        if self.secrets.delete(env):
            removed.objects.append(f"secret {self.secrets.location(env)}")
        reg.execute("DELETE FROM environments WHERE name = %s", (env,))
        removed.objects.append("registry entry")
        return removed

    def _drop_role(self, admin, env: str) -> None:
        """End the role's sessions anywhere on the server, drop what it still owns or was granted in any other
        database it reached (large objects, temporary tables, default privileges), then the role: nothing its user
        did stops it. Large objects go in batches first: one DROP OWNED of a flood of them would need a lock per
        object, more than the server's lock table holds."""
        for _attempt in range(40):  # terminated backends take a moment to go (and to drop their temp tables)
            live = admin.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = %s",
                                 (env,)).fetchone()[0]
            if not live:
                break
            time.sleep(0.25)
        dbs = admin.execute("""SELECT DISTINCT d.datname FROM pg_shdepend s JOIN pg_database d ON d.oid = s.dbid
                                WHERE s.refclassid = 'pg_authid'::regclass AND d.datallowconn
                                  AND s.refobjid = (SELECT oid FROM pg_roles WHERE rolname = %s)""", (env,)).fetchall()
        for (db,) in dbs:
            with connect(catalog_only(with_dbname(self.admin_dsn, db)), role="server", autocommit=True) as conn:
                while conn.execute(UNLINK_LARGE_OBJECTS, (env, LARGE_OBJECT_BATCH)).fetchone()[0]:
                    pass
                conn.execute(sql.SQL("DROP OWNED BY {}").format(_ident(env)))
        admin.execute(sql.SQL("DROP ROLE {}").format(_ident(env)))
