"""The clone driver interface the DAGs call, and the types it speaks.

Two implementations plug in behind it: ``postgres`` (databases cloned from
template databases on the base server) and ``velero`` (namespaces restored
from Velero backups). Everything driver-specific stays behind these methods.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from urllib.parse import quote

from prodclone.errors import ProdcloneError

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


@dataclass
class Snapshot:
    id: str
    status: str  # creating | ready | failed
    created_at: datetime
    run_id: str = ""
    export: str = ""
    rows: int = 0
    rules_sha256: str = ""
    used_by: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["created_at"] = self.created_at.isoformat()
        return d


@dataclass
class Environment:
    name: str
    profile: str
    snapshot: str
    status: str  # creating | ready | failed | deleting
    requested_by: str
    pr: int | None
    created_at: datetime
    expires_at: datetime
    run_id: str = ""
    updated_at: datetime | None = None
    clone_seconds: float | None = None

    def as_dict(self) -> dict:
        d = asdict(self)
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

    def url(self, password: str | None = None) -> str:
        return connection_url(self.host, self.port, self.database, self.user, password)

    def text(self) -> str:
        return (f"{self.env}: {self.url()} (snapshot {self.snapshot}, expires {self.expires_at}); "
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


class CloneDriver(ABC):
    """What the DAGs call. Every method is safe to retry."""

    @abstractmethod
    def snapshot(self, run_id: str, export: str = "", rows: int = 0, rules_sha256: str = "") -> Snapshot:
        """Snapshot the freshly seeded base; a retry of the same run reuses its snapshot."""

    def begin_snapshot(self, run_id: str, export: str = "", rows: int = 0, rules_sha256: str = "") -> str:
        """Start the snapshot and return its id; drivers whose snapshot is slow return before it is done."""
        return self.snapshot(run_id, export, rows, rules_sha256).id

    def wait_spec(self, what: str, name: str) -> dict | None:
        """What a deferrable wait should poll before `snapshot`/`finish_restore` ("snapshot" or "restore");
        None when there is nothing to wait for."""
        return None

    @abstractmethod
    def snapshots(self) -> list[Snapshot]:
        """Every snapshot, newest first."""

    def latest_snapshot(self) -> Snapshot:
        for s in self.snapshots():
            if s.status == "ready":
                return s
        raise CloneError("there is no ready snapshot yet: run prodclone_export first")

    @abstractmethod
    def begin_restore(self, req: RestoreRequest, run_id: str) -> Environment:
        """Claim ``req.env`` for ``run_id`` and clone the snapshot into it. An env that is
        already healthy is returned as is (idempotent) unless ``req.replace``."""

    @abstractmethod
    def finish_restore(self, env: str, run_id: str, hooks: tuple[str, ...] = ()) -> Environment:
        """Run the profile's post-restore hooks, then mark the env ready."""

    @abstractmethod
    def connection(self, env: str) -> Connection:
        ...

    @abstractmethod
    def environments(self) -> list[Environment]:
        """Every environment the driver created, newest first."""

    @abstractmethod
    def extend(self, env: str, hours: int, max_hours: int) -> Environment:
        ...

    @abstractmethod
    def due_for_teardown(self) -> list[tuple[str, str]]:
        """(env, reason) for every environment past its expiry, failed, or stuck half-made."""

    @abstractmethod
    def teardown(self, env: str, reason: str = "requested") -> Removed:
        """Remove everything the env left behind; refuse anything prodclone did not create."""

    @abstractmethod
    def prune_snapshots(self, keep: int) -> list[str]:
        """Delete snapshots beyond the newest ``keep`` ready ones, except any a live env uses."""
