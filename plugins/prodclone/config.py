"""Loads and validates include/prodclone.yaml."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from prodclone.drivers.base import ENV_PREFIXES
from prodclone.errors import ProdcloneError

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PATH = REPO_ROOT / "include" / "prodclone.yaml"
MODES = ("live", "replica_paused", "rds_snapshot")
DRIVERS = ("postgres", "velero")


@dataclass(frozen=True)
class Profile:
    """An environment archetype: lifetime bounds, post-restore SQL, resources."""

    name: str
    title: str
    ttl_hours: int
    max_ttl_hours: int
    post_restore_sql: tuple[str, ...] = ()
    connection_limit: int = -1
    settings: tuple[tuple[str, str], ...] = ()  # ALTER DATABASE ... SET name = value
    volume: tuple[tuple[str, str], ...] = ()  # velero: StorageClass parameters
    on_restored: tuple[str, ...] = ()  # shell commands after a restore (Heroku's postdeploy)
    pre_teardown: tuple[str, ...] = ()  # shell commands before a teardown (Heroku's pr-predestroy)


DEFAULT_PROFILES = {
    "preview": {"title": "Preview (a PR's environment)", "ttl_hours": 24, "max_ttl_hours": 72},
    "loadtest": {"title": "Load test", "ttl_hours": 24, "max_ttl_hours": 168},
}


def _profiles(raw: dict | None, where: Path) -> dict[str, Profile]:
    out = {}
    for name, p in (raw or DEFAULT_PROFILES).items():
        if name not in ENV_PREFIXES:
            raise ProdcloneError(f"{where}: profile {name!r}: profiles are named after their env prefix: "
                                 f"{' or '.join(ENV_PREFIXES)}")
        p = p or {}
        res = p.get("resources") or {}
        try:
            prof = Profile(name=name, title=str(p.get("title", name)), ttl_hours=int(p.get("ttl_hours", 24)),
                           max_ttl_hours=int(p.get("max_ttl_hours", 72)),
                           post_restore_sql=tuple(str(q) for q in p.get("post_restore_sql") or ()),
                           connection_limit=int(res.get("connection_limit", -1)),
                           settings=tuple((str(k), str(v)) for k, v in (res.get("settings") or {}).items()),
                           volume=tuple((str(k), str(v)) for k, v in (res.get("volume") or {}).items()),
                           on_restored=tuple(str(c) for c in p.get("on_restored") or ()),
                           pre_teardown=tuple(str(c) for c in p.get("pre_teardown") or ()))
        except (TypeError, ValueError, AttributeError) as exc:
            raise ProdcloneError(f"{where}: profile {name!r} is malformed: {exc}") from None
        if not 1 <= prof.ttl_hours <= prof.max_ttl_hours:
            raise ProdcloneError(f"{where}: profile {name!r}: need 1 <= ttl_hours <= max_ttl_hours")
        out[name] = prof
    return out


@dataclass(frozen=True)
class Datastore:
    """One kind of datastore in the base namespace: how to make it consistent for a backup."""

    kind: str  # postgres | redis
    selector: tuple[tuple[str, str], ...]  # pod labels
    container: str
    secret: str = ""  # postgres: the Secret holding username/password/database
    service: str = ""  # postgres: the Service clones answer on
    port: int = 5432
    pre_hook: str = ""  # a shell command replacing the kind's default backup pre-hook


@dataclass(frozen=True)
class Velero:
    namespace: str = "velero"
    base_namespace: str = "prodclone-base"
    kubernetes_conn_id: str = "kubernetes_default"
    storage_location: str = "default"
    backup_ttl_hours: int = 0  # 0: the longest profile TTL + 1h
    first_ordinal_only: bool = False
    protected_namespaces: tuple[str, ...] = ()
    datastores: tuple[Datastore, ...] = ()
    volume: tuple[tuple[str, str], ...] = (("type", "gp3"),)
    wait_minutes: float = 30
    pool: str = "prodclone_velero"
    host_template: str = "{service}.{namespace}.svc.cluster.local"


def _velero(raw: dict | None, where: Path) -> Velero:
    raw = raw or {}
    stores = []
    for kind, d in (raw.get("datastores") or {}).items():
        if kind not in ("postgres", "redis"):
            raise ProdcloneError(f"{where}: velero.datastores.{kind}: only postgres and redis are known")
        d = d or {}
        stores.append(Datastore(kind=kind, selector=tuple((d.get("selector") or {"app": kind}).items()),
                                container=d.get("container", kind), secret=d.get("secret", ""),
                                service=d.get("service", ""), port=int(d.get("port", 5432 if kind == "postgres" else 6379)),
                                pre_hook=d.get("pre_hook", "")))
    return Velero(namespace=raw.get("namespace", "velero"), base_namespace=raw.get("base_namespace", "prodclone-base"),
                  kubernetes_conn_id=raw.get("kubernetes_conn_id", "kubernetes_default"),
                  storage_location=raw.get("storage_location", "default"),
                  backup_ttl_hours=int(raw.get("backup_ttl_hours") or 0),
                  first_ordinal_only=bool(raw.get("first_ordinal_only", False)),
                  protected_namespaces=tuple(raw.get("protected_namespaces") or ()), datastores=tuple(stores),
                  volume=tuple((str(k), str(v)) for k, v in (raw.get("volume") or {"type": "gp3"}).items()),
                  wait_minutes=float(raw.get("wait_minutes", 30)), pool=raw.get("pool", "prodclone_velero"),
                  host_template=raw.get("host_template", "{service}.{namespace}.svc.cluster.local"))


def default_storage_url() -> str:
    """Exports hold masked production data, so by default they live in the deployment's own data directory:
    ``$AIRFLOW_HOME/prodclone/exports``, or outside Airflow ``$XDG_DATA_HOME`` (``~/.local/share``)
    ``/prodclone/exports``. Never /tmp, where any local user can create the directory first. Missing
    directories are created 0700 by the storage on first write."""
    home = os.environ.get("AIRFLOW_HOME") or os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return f"file://{Path(home).resolve() / 'prodclone' / 'exports'}"


@dataclass
class Config:
    driver: str = "postgres"
    source_conn_id: str = "prodclone_source"
    source_mode: str = "live"
    jobs: int = 2
    split_rows: int = 5_000_000
    rds: dict = field(default_factory=dict)
    base_conn_id: str = "prodclone_base"
    storage_url: str = field(default_factory=default_storage_url)
    aws_conn_id: str = "aws_default"
    rules_path: Path = REPO_ROOT / "include" / "masking" / "rules.yaml"
    key_variable: str = "prodclone_masking_key"
    leak_sample: int = 500
    schedule: str | None = "0 2 * * *"
    registry_database: str = "prodclone_registry"
    keep_snapshots: int = 3
    teardown_schedule: str | None = "@hourly"
    stale_minutes: int = 60
    clone_strategy: str = "file_copy"
    protected: tuple[str, ...] = ()
    profiles: dict[str, Profile] = field(default_factory=dict)
    slack_webhook_conn_id: str = ""
    alert_emails: tuple[str, ...] = ()
    export_deadline_minutes: int = 0
    velero: Velero = field(default_factory=Velero)

    def profile(self, name: str) -> Profile:
        if name not in self.profiles:
            raise ProdcloneError(f"unknown profile {name!r}; configured profiles: {', '.join(self.profiles)}")
        return self.profiles[name]

    @property
    def max_ttl_hours(self) -> int:
        return max(p.max_ttl_hours for p in self.profiles.values())


def load_config(path: str | Path | None = None) -> Config:
    """``$PRODCLONE_CONFIG`` or include/prodclone.yaml; ``$PRODCLONE_STORAGE_URL`` overrides the storage URL."""
    p = Path(path or os.environ.get("PRODCLONE_CONFIG") or DEFAULT_PATH)
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except FileNotFoundError:
        raise ProdcloneError(f"config file {p} does not exist") from None
    except yaml.YAMLError as exc:
        raise ProdcloneError(f"{p}: malformed YAML: {exc}") from None
    src, base, st, m, ex, cl = (data.get(k) or {} for k in ("source", "base", "storage", "masking", "export", "clones"))
    rules = Path(m.get("rules", "include/masking/rules.yaml"))
    cfg = Config(
        driver=data.get("driver", "postgres"),
        source_conn_id=src.get("conn_id", "prodclone_source"),
        source_mode=src.get("mode", "live"),
        jobs=int(src.get("jobs", 2)),
        split_rows=int(src.get("split_rows", 5_000_000)),
        rds=src.get("rds") or {},
        base_conn_id=base.get("conn_id", "prodclone_base"),
        storage_url=os.environ.get("PRODCLONE_STORAGE_URL") or st.get("url") or default_storage_url(),
        aws_conn_id=st.get("aws_conn_id", "aws_default"),
        rules_path=rules if rules.is_absolute() else REPO_ROOT / rules,
        key_variable=m.get("key_variable", "prodclone_masking_key"),
        leak_sample=int(m.get("leak_sample", 500)),
        schedule=ex.get("schedule", "0 2 * * *"),
        registry_database=cl.get("registry_database", "prodclone_registry"),
        keep_snapshots=int(cl.get("keep_snapshots", 3)),
        teardown_schedule=cl.get("teardown_schedule", "@hourly"),
        stale_minutes=int(cl.get("stale_minutes", 60)),
        clone_strategy=cl.get("strategy", "file_copy"),
        protected=tuple(cl.get("protected") or ()),
        profiles=_profiles(data.get("profiles"), p),
        slack_webhook_conn_id=(data.get("alerts") or {}).get("slack_webhook_conn_id") or "",
        alert_emails=tuple((data.get("alerts") or {}).get("email") or ()),
        export_deadline_minutes=int(ex.get("deadline_minutes") or 0),
        velero=_velero(data.get("velero"), p),
    )
    if cfg.source_mode not in MODES:
        raise ProdcloneError(f"{p}: source.mode must be one of {', '.join(MODES)}, not {cfg.source_mode!r}")
    if cfg.driver not in DRIVERS:
        raise ProdcloneError(f"{p}: driver must be one of {', '.join(DRIVERS)}, not {cfg.driver!r}")
    if cfg.clone_strategy not in ("file_copy", "wal_log"):
        raise ProdcloneError(f"{p}: clones.strategy must be file_copy or wal_log")
    if cfg.keep_snapshots < 1:
        raise ProdcloneError(f"{p}: clones.keep_snapshots must be >= 1 (the newest snapshot is always kept)")
    if cfg.jobs < 1:
        raise ProdcloneError(f"{p}: source.jobs must be >= 1")
    if not cfg.storage_url.startswith(("file:///", "s3://")):
        raise ProdcloneError(f"{p}: storage.url must start with file:/// or s3://")
    return cfg
