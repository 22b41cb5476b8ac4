"""The clone driver interface the DAGs call, and the types it speaks.

Two implementations plug in behind it: ``postgres`` (databases cloned from
template databases on the base server) and ``velero`` (namespaces restored
from Velero backups). Everything driver-specific stays behind these methods.
"""

from __future__ import annotations

import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Literal
from urllib.parse import quote

from prodclone.errors import ProdcloneError

if TYPE_CHECKING:
    from prodclone.config import Config

log = logging.getLogger(__name__)

ENV_PREFIXES = ("preview", "loadtest")  # also the profile names
ENV_PATTERN = r"^(preview|loadtest)-[a-z0-9-]+$"
MAX_NAME = 63  # Postgres identifiers and Kubernetes namespace names
SNAPSHOT_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"  # "latest" or any driver's id: a DNS-1123 label


class CloneError(ProdcloneError):
    """A clone, snapshot or teardown was refused or failed; nothing is left looking healthy."""


class CloneBusy(CloneError):
    """Another run is working on the same environment or snapshot right now."""


def run_post_restore_sql(conn, hooks: tuple[str, ...], env: str) -> None:
    """The profile's post_restore_sql on ``conn`` (the caller commits); a failure names the hook, never a row."""
    import psycopg

    for i, stmt in enumerate(hooks, 1):
        try:
            conn.execute(stmt)
        except psycopg.Error as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise CloneError(f"{env}: post-restore hook #{i} failed: {first}. The environment is not usable; "
                             f"teardown removes it. Fix the profile's post_restore_sql.") from None


def validate_env_name(name: str) -> str:
    if not isinstance(name, str) or not re.match(ENV_PATTERN, name):
        raise CloneError(f"environment name {name!r} is invalid: it must match {ENV_PATTERN} "
                         f"(e.g. preview-pr-42 or loadtest-black-friday)")
    if len(name) > MAX_NAME:
        raise CloneError(f"environment name {name!r} is {len(name)} characters; the limit is {MAX_NAME}")
    if name.endswith("-") or "--" in name:
        raise CloneError(f"environment name {name!r} must not end with '-' or contain '--'")
    return name


def env_prefix(name: str) -> str:
    """The profile an env name's prefix names; call on validated names."""
    return name.split("-", 1)[0]


def env_for_pr(profile: str, pr: int) -> str:
    """The env of a pull request: ``preview-pr-42`` (the restore form, the API, `prodclone env --pr`, alerts)."""
    return f"{profile}-pr-{pr}"


def max_extend_hours(expires_at: datetime, max_ttl_hours: int, now: datetime) -> int:
    """Whole hours an env may still be extended by: its new expiry stays within max_ttl_hours from now."""
    return max(0, int((now + timedelta(hours=max_ttl_hours) - max(expires_at, now)).total_seconds() // 3600))


def extended_expiry(env: Environment, hours: int, max_ttl_hours: int, now: datetime) -> datetime:
    """``env``'s expiry ``hours`` later (counted from now when it is already past), refused beyond its
    profile's max_ttl_hours from now."""
    if hours < 1:
        raise CloneError("extend by at least 1 hour")
    wanted = max(env.expires_at, now) + timedelta(hours=hours)
    if wanted > now + timedelta(hours=max_ttl_hours):
        raise CloneError(f"{env.name} would expire {wanted:%Y-%m-%d %H:%M} UTC, beyond the {env.profile} profile's "
                         f"maximum of {max_ttl_hours}h from now; extend by at most "
                         f"{max_extend_hours(env.expires_at, max_ttl_hours, now)}h")
    return wanted


class Status(StrEnum):
    """A snapshot's or an environment's state. Its values are what registries, XCom, JSON and the Clones page
    carry, so ``Status.READY == "ready"`` and ``json.dumps`` writes ``"ready"``."""

    CREATING = "creating"
    READY = "ready"
    FAILED = "failed"
    DELETING = "deleting"  # environments only: a teardown has started


@dataclass(frozen=True)
class WaitSpec:
    """What a deferrable wait polls before ``finish_snapshot``/``finish_restore``: a Velero Backup or Restore
    (``resource`` "backups" or "restores") in ``namespace``, until it reaches a terminal phase or ``timeout``
    seconds have passed."""

    resource: Literal["backups", "restores"]
    namespace: str
    name: str
    timeout: float

    @property
    def what(self) -> str:
        return f"Velero {self.resource[:-1]} {self.namespace}/{self.name}"


@dataclass
class Snapshot:
    id: str
    status: Status
    created_at: datetime
    run_id: str = ""
    export: str = ""
    rows: int = 0
    rules_sha256: str = ""
    used_by: list[str] = field(default_factory=list)
    copy_method: str = ""  # how the database was copied: clone (thin, PostgreSQL 18), copy, or wal_log

    def __post_init__(self):
        self.status = Status(self.status)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["status"] = self.status.value
        d["created_at"] = self.created_at.isoformat()
        return d


@dataclass
class Environment:
    name: str
    profile: str
    snapshot: str
    status: Status
    requested_by: str
    pr: int | None
    created_at: datetime
    expires_at: datetime
    run_id: str = ""
    updated_at: datetime | None = None
    clone_seconds: float | None = None
    copy_method: str = ""  # how the database was copied: clone (thin, PostgreSQL 18), copy, or wal_log

    def __post_init__(self):
        self.status = Status(self.status)

    def made_by(self, run_id: str) -> bool:
        """Whether run ``run_id`` created this env (else that run found it already there, healthy)."""
        return self.run_id == run_id

    @classmethod
    def from_dict(cls, d: dict) -> Environment:
        """The inverse of ``as_dict`` (what XCom carries between tasks)."""
        times = {k: datetime.fromisoformat(d[k]) if d.get(k) else None
                 for k in ("created_at", "expires_at", "updated_at")}
        return cls(**{**d, **times})

    def as_dict(self) -> dict:
        d = asdict(self)
        d["status"] = self.status.value
        for k in ("created_at", "expires_at", "updated_at"):
            d[k] = d[k].isoformat() if d[k] else None
        return d


@dataclass
class Connection:
    """Where a clone answers. The password is never here: ``secret`` says
    where to fetch it."""

    env: str
    host: str
    port: int
    database: str
    user: str
    secret: str
    expires_at: str
    snapshot: str
    existing: bool = False  # an idempotent re-run found the env already healthy
    copy_method: str = ""  # clone: a thin copy-on-write clone; copy or wal_log: a full copy of the snapshot

    def url(self, password: str | None = None) -> str:
        return connection_url(self.host, self.port, self.database, self.user, password)

    def text(self) -> str:
        made = f", {self.copy_method}" if self.copy_method else ""
        return (f"{self.env}: {self.url()} (snapshot {self.snapshot}{made}, expires {self.expires_at}); "
                f"password: {self.secret}")


def connection_url(host: str, port: int, database: str, user: str, password: str | None = None) -> str:
    """The one format prodclone prints and stores: a libpq URL, valid for every kind of host.
    A socket directory cannot sit in the authority part (libpq would read it as a path and
    connect to the default socket instead), so it goes, percent-encoded, in the `host` parameter."""
    userinfo = quote(user, safe="") + (f":{quote(password, safe='')}" if password is not None else "")
    path = "/" + quote(database, safe="")
    if host.startswith("/"):
        return f"postgresql://{userinfo}@{path}?host={quote(host, safe='')}&port={port}"
    netloc = f"[{host}]" if ":" in host else host  # an IPv6 address
    return f"postgresql://{userinfo}@{netloc}:{port}{path}"


@dataclass
class RestoreRequest:
    env: str
    profile: str
    ttl_hours: int
    snapshot: str  # "latest" or an id
    requested_by: str
    pr: int | None = None
    replace: bool = False


@dataclass
class Removed:
    """What one teardown removed, for the run's log and the demo summary."""

    env: str
    objects: list[str] = field(default_factory=list)
    reason: str = ""

    def text(self) -> str:
        return f"{self.env} ({self.reason}): removed " + ", ".join(self.objects)


class SecretStore(ABC):
    """Where a clone's connection URL, password included, goes for users to
    fetch; never XCom or logs. The DAGs use Airflow Variables."""

    @abstractmethod
    def put(self, env: str, url: str) -> None: ...

    @abstractmethod
    def delete(self, env: str) -> bool: ...

    @abstractmethod
    def location(self, env: str) -> str:
        """Tells a person where to fetch it, e.g. 'Airflow Variable prodclone_env_preview-x_dsn'."""


class MemorySecrets(SecretStore):
    """For the CLI and tests: kept in this process only."""

    def __init__(self):
        self.values: dict[str, str] = {}

    def put(self, env: str, url: str) -> None:
        self.values[env] = url

    def delete(self, env: str) -> bool:
        return self.values.pop(env, None) is not None

    def location(self, env: str) -> str:
        return "this process's memory (tests and CLI only)"


def _now() -> datetime:
    return datetime.now(UTC)


class CloneDriver(ABC):
    """What the DAGs call. Every method is safe to retry.

    The policy both drivers share lives here, with one set of messages: which snapshot ``latest`` is, the
    extend cap (read from the env's own profile), when a half-made env counts as stale, what is due for
    teardown, and marking a step failed when it raises. The drivers implement the mechanics below them.
    """

    cfg: Config

    # -- snapshots ------------------------------------------------------------------

    @abstractmethod
    def begin_snapshot(self, run_id: str, export: str = "", rows: int = 0, rules_sha256: str = "") -> str:
        """Start snapshotting the freshly seeded base and return the snapshot's id; a retry of the same run
        returns the same id. A driver whose snapshot is slow returns before it is done (see ``wait_spec``)."""

    @abstractmethod
    def finish_snapshot(self, run_id: str) -> Snapshot:
        """The run's snapshot, checked and ready; raises CloneError when it failed or holds no usable data."""

    @staticmethod
    def _not_started(run_id: str) -> CloneError:
        return CloneError(f"run {run_id} started no snapshot (or it was pruned since); begin_snapshot comes first")

    def snapshot(self, run_id: str, export: str = "", rows: int = 0, rules_sha256: str = "") -> Snapshot:
        """Both steps in one call, waiting in this process (the CLI, the demo and tests)."""
        self.begin_snapshot(run_id, export, rows, rules_sha256)
        return self.finish_snapshot(run_id)

    def wait_spec(self, what: Literal["snapshot", "restore"], name: str) -> WaitSpec | None:
        """What a deferrable wait should poll before ``finish_snapshot`` (``name``: the snapshot id) or
        ``finish_restore`` (``name``: the env); None when there is nothing to wait for."""
        return None

    @abstractmethod
    def snapshots(self) -> list[Snapshot]:
        """Every snapshot, newest first."""

    def _unusable(self, snap: Snapshot) -> str | None:
        """Why ``snap`` cannot be restored, said after its id ("is PartiallyFailed ..."), when the driver knows
        more than its status (None: nothing more). Drivers that check a snapshot late do it here."""
        return None

    def latest_snapshot(self) -> Snapshot:
        """The newest ready snapshot: what ``latest`` restores."""
        return self.resolve_snapshot("latest")

    def resolve_snapshot(self, wanted: str) -> Snapshot:
        """``latest`` (the newest ready, usable snapshot) or the snapshot of that id, if it can be restored."""
        snaps = self.snapshots()
        if wanted == "latest":
            for s in snaps:
                if s.status == Status.READY and self._unusable(s) is None:
                    return s
            raise CloneError("there is no ready snapshot yet: run prodclone_export first")
        snap = next((s for s in snaps if s.id == wanted), None)
        if snap is None:
            ready = [s.id for s in snaps if s.status == Status.READY][:5]
            raise CloneError(f"snapshot {wanted!r} does not exist; ready snapshots: {', '.join(ready) or 'none'} "
                             f"(or use 'latest')")
        if snap.status == Status.CREATING:
            raise CloneBusy(f"snapshot {wanted!r} is still being created by export run {snap.run_id}; "
                            f"retry when it is ready, or use 'latest'")
        why = self._unusable(snap)
        if why or snap.status != Status.READY:
            raise CloneError(f"snapshot {wanted!r} {why or 'failed during the export and cannot be restored'}; "
                             f"use 'latest'")
        return snap

    @abstractmethod
    def prune_snapshots(self, keep: int) -> list[str]:
        """Delete snapshots beyond the newest ``keep`` ready ones, except any a live env uses."""

    # -- environments -----------------------------------------------------------------

    @abstractmethod
    def begin_restore(self, req: RestoreRequest, run_id: str) -> Environment:
        """Claim ``req.env`` for ``run_id`` and clone the snapshot into it. An env that is
        already healthy is returned as is (idempotent) unless ``req.replace``."""

    @abstractmethod
    def finish_restore(self, env: str, run_id: str, hooks: tuple[str, ...] | None = None) -> Environment:
        """Run the post-restore hooks (None: the env's profile's post_restore_sql), then mark the env ready."""

    def _post_restore_sql(self, env: Environment, hooks: tuple[str, ...] | None) -> tuple[str, ...]:
        return self.cfg.profile(env.profile).post_restore_sql if hooks is None else hooks

    @abstractmethod
    def connection(self, env: str) -> Connection:
        ...

    @abstractmethod
    def environments(self) -> list[Environment]:
        """Every environment the driver created, newest first."""

    def environment(self, name: str) -> Environment | None:
        """The environment of that name, or None when prodclone has none (it never made one, or it is gone)."""
        return next((e for e in self.environments() if e.name == name), None)

    def require(self, name: str, doing: str) -> Environment:
        """The environment of that name; CloneError naming what could not be done when prodclone has none."""
        env = self.environment(name)
        if env is None:
            raise CloneError(f"{name} does not exist (it is not in prodclone's registry: it expired, was torn down "
                             f"or was never made); nothing to {doing}")
        return env

    def _env_lock(self, env: str):
        """Held while one env is read and changed (extend); drivers with concurrent writers override it."""
        return nullcontext()

    def check_extend(self, env: str, hours: int) -> tuple[Environment, datetime]:
        """The env and the expiry ``extend`` would give it, or the CloneError it would refuse with; changes
        nothing (the Clones page asks before it triggers a run)."""
        current = self.require(env, "extend")
        if current.status != Status.READY:
            raise CloneError(f"{env} is {current.status}, not a ready environment; nothing to extend")
        return current, extended_expiry(current, hours, self.cfg.profile(current.profile).max_ttl_hours, _now())

    def extend(self, env: str, hours: int) -> Environment:
        """Push ``env``'s expiry ``hours`` later, within its own profile's max_ttl_hours from now."""
        with self._env_lock(env):
            return self._set_expiry(*self.check_extend(env, hours))

    @abstractmethod
    def _set_expiry(self, env: Environment, expires_at: datetime) -> Environment:
        """Record the new expiry (and, where the clone enforces it, apply it); returns the env as it is now."""

    def stale(self, env: Environment, now: datetime | None = None) -> bool:
        """Half-made or half-removed for longer than clones.stale_minutes: a dead run's leftover."""
        now = now or _now()
        return env.status in (Status.CREATING, Status.DELETING) and \
            (env.updated_at or env.created_at) < now - timedelta(minutes=self.cfg.stale_minutes)

    def teardown_reason(self, env: Environment, now: datetime | None = None) -> str | None:
        """Why ``env`` is due for teardown ("failed", "stuck creating", "expired"), or None."""
        now = now or _now()
        if env.status == Status.FAILED:
            return "failed"
        if self.stale(env, now):
            return f"stuck {env.status}"
        if env.expires_at < now:
            return "expired"
        return None

    def due_for_teardown(self) -> list[tuple[str, str]]:
        """(env, reason) for every environment past its expiry, failed, or stuck half-made; soonest expiry first."""
        now = _now()
        due = [(e, self.teardown_reason(e, now)) for e in sorted(self.environments(), key=lambda e: e.expires_at)]
        return [(e.name, reason) for e, reason in due if reason]

    @abstractmethod
    def teardown(self, env: str, reason: str = "requested") -> Removed:
        """Remove everything the env left behind; refuse anything prodclone did not create."""

    @staticmethod
    @contextmanager
    def _failing(what: str, mark_failed: Callable[[], None]):
        """Run a step; if it raises (a kill included), mark ``what`` failed so teardown or prune removes it, and
        re-raise the step's own error (a failure to mark is logged, never hides it)."""
        try:
            yield
        except BaseException:
            try:
                mark_failed()
            except Exception as exc:
                log.warning("could not mark %s failed (%s); the next teardown finds it stale instead", what, exc)
            raise
