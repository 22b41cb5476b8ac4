"""Loads and validates include/prodclone.yaml.

Each key of the file is declared once, on a dataclass field below (``key``): its default, its JSON Schema
and what it means. The loader reads those declarations, and include/prodclone.schema.json is generated from
them (``prodclone config schema``) so editors validate and complete the file. Unknown keys and bad values
are refused with file:line:col."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from prodclone import yamlsource
from prodclone.drivers.base import ENV_PREFIXES
from prodclone.errors import ProdcloneError

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PATH = REPO_ROOT / "include" / "prodclone.yaml"
SCHEMA_PATH = DEFAULT_PATH.with_name("prodclone.schema.json")
MODES = ("live", "replica_paused", "rds_snapshot")
DRIVERS = ("postgres", "velero")
STORAGE_URL = r"^(file:///|s3://)"

TEXT = {"type": "string"}
NAME = {"type": "string", "minLength": 1}
COUNT = {"type": "integer", "minimum": 1}
SCHEDULE = {"type": ["string", "null"], "minLength": 1}  # a cron expression or preset; null: no schedule
TEXTS = {"type": ["array", "null"], "items": TEXT}  # null (an emptied list): the default
MAPPING = {"type": ["object", "null"], "additionalProperties": {"type": ["string", "number", "boolean"]}}


def key(doc: str, schema: dict, default=dataclasses.MISSING, *, factory=dataclasses.MISSING, at: str | None = None,
        load=None, keep_null: bool = False):
    """A key of the file: its one default, its JSON Schema, what it means. ``at`` is its dotted place in the
    file when that is not the field's name; ``load`` turns the YAML value into the field's type;
    ``keep_null`` makes null a value (no schedule) instead of "the default"."""
    return field(default=default, default_factory=factory,
                 metadata={"doc": doc, "schema": schema, "at": at, "load": load, "keep_null": keep_null})


def _pairs(mapping: dict) -> tuple[tuple[str, str], ...]:
    return tuple((str(k), str(v)) for k, v in mapping.items())


def _keys(cls) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if "schema" in f.metadata]


def _place(f: dataclasses.Field) -> tuple[str, ...]:
    return tuple((f.metadata["at"] or f.name).split("."))


_ABSENT = object()


def _read(raw, place: tuple[str, ...]):
    for part in place:
        if not isinstance(raw, dict) or part not in raw:
            return _ABSENT
        raw = raw[part]
    return raw


def _build(cls, raw: dict | None, **fixed):
    """``cls`` from its section of the file (already schema-checked): absent keys take the field's default."""
    kwargs = dict(fixed)
    for f in _keys(cls):
        value = _read(raw or {}, _place(f))
        if value is _ABSENT or (value is None and not f.metadata["keep_null"]):
            continue
        kwargs[f.name] = f.metadata["load"](value) if f.metadata["load"] else value
    return cls(**kwargs)


@dataclass(frozen=True)
class Profile:
    """An environment archetype: lifetime bounds, post-restore SQL, resources."""

    name: str  # the env prefix it serves: its key under `profiles`
    title: str = key("Shown in the restore form; empty: the profile's name.", TEXT, "")
    ttl_hours: int = key("Lifetime when a request names none.", COUNT, 24)
    max_ttl_hours: int = key("The longest lifetime a request or an extension may reach, from now.", COUNT, 72)
    post_restore_sql: tuple[str, ...] = key(
        "SQL run in the clone, in one transaction, as the clone's role, before it is marked ready.", TEXTS, (),
        load=tuple)
    connection_limit: int = key("CONNECTION LIMIT of the clone database; -1: none.", {"type": "integer", "minimum": -1},
                                -1, at="resources.connection_limit")
    settings: tuple[tuple[str, str], ...] = key(
        "ALTER DATABASE ... SET name = value for the clone, e.g. statement_timeout: 30s.", MAPPING, (),
        at="resources.settings", load=_pairs)
    volume: tuple[tuple[str, str], ...] = key(
        "velero driver: StorageClass parameters for this profile's clones (over velero.volume).", MAPPING, (),
        at="resources.volume", load=_pairs)
    on_restored: tuple[str, ...] = key(
        "Shell commands after a restore (Heroku's postdeploy); PRODCLONE_ENV etc. in their environment.", TEXTS, (),
        load=tuple)
    pre_teardown: tuple[str, ...] = key("Shell commands before a teardown (Heroku's pr-predestroy).", TEXTS, (),
                                        load=tuple)

    def __post_init__(self):
        if not self.title:
            object.__setattr__(self, "title", self.name)


def default_profiles() -> dict[str, Profile]:
    """The profiles when the file names none."""
    return {"preview": Profile("preview", "Preview (a PR's environment)", 24, 72),
            "loadtest": Profile("loadtest", "Load test", 24, 168)}


def _profiles(raw: dict) -> dict[str, Profile]:
    return {name: _build(Profile, p, name=name) for name, p in raw.items()}


DATASTORE_PORTS = {"postgres": 5432, "redis": 6379}


@dataclass(frozen=True)
class Datastore:
    """One kind of datastore in the base namespace: how to make it consistent for a backup."""

    kind: str  # postgres | redis: its key under `velero.datastores`
    selector: tuple[tuple[str, str], ...] = key("Labels of its pods; empty: app=<kind>.", MAPPING, (), load=_pairs)
    container: str = key("The container hooks run in; empty: the kind's name.", TEXT, "")
    secret: str = key("postgres: the Secret holding username, password and database.", TEXT, "")
    service: str = key("postgres: the Service clones answer on.", TEXT, "")
    port: int = key("Its port; 0: the kind's (postgres 5432, redis 6379).", {"type": "integer", "minimum": 0}, 0)
    pre_hook: str = key("A shell command replacing the kind's default backup pre-hook.", TEXT, "")

    def __post_init__(self):  # the defaults that depend on the kind
        for name, value in (("selector", (("app", self.kind),)), ("container", self.kind),
                            ("port", DATASTORE_PORTS[self.kind])):
            if not getattr(self, name):
                object.__setattr__(self, name, value)


@dataclass(frozen=True)
class Velero:
    namespace: str = key("Where Velero and its custom resources live.", NAME, "velero")
    base_namespace: str = key("The namespace snapshots are taken of.", NAME, "prodclone-base")
    kubernetes_conn_id: str = key("Airflow connection to the cluster.", NAME, "kubernetes_default")
    storage_location: str = key("Velero BackupStorageLocation.", NAME, "default")
    backup_ttl_hours: int = key("Backups' TTL; 0: the longest profile max_ttl_hours + 1h.",
                                {"type": "integer", "minimum": 0}, 0)
    first_ordinal_only: bool = key("Back up only each StatefulSet's first pod's volumes (replicas resync).",
                                   {"type": "boolean"}, False)
    protected_namespaces: tuple[str, ...] = key(
        "Never touched, besides kube-*, default, the Velero and base namespaces.", TEXTS, (), load=tuple)
    datastores: tuple[Datastore, ...] = key(
        "Backup pre-hooks per kind, and how to reach Postgres.",
        {"type": ["object", "null"], "propertyNames": {"enum": list(DATASTORE_PORTS)},
         "additionalProperties": {"$ref": "#/$defs/datastore"}}, (),
        load=lambda raw: tuple(_build(Datastore, d, kind=kind) for kind, d in raw.items()))
    volume: tuple[tuple[str, str], ...] = key("EBS CSI StorageClass parameters; a profile's resources.volume "
                                              "overrides.", MAPPING, (("type", "gp3"),), load=_pairs)
    wait_minutes: float = key("Backups, restores, PVC binding and namespace deletion.",
                              {"type": "number", "exclusiveMinimum": 0}, 30)
    pool: str = key("Airflow pool (1 slot, counting deferred tasks): Velero runs restores one at a time.", NAME,
                    "prodclone_velero")
    host_template: str = key("Where a clone's Postgres answers; {service} and {namespace} are filled in.", NAME,
                             "{service}.{namespace}.svc.cluster.local")


def default_storage_url() -> str:
    """Exports hold masked production data, so by default they live in the deployment's own data directory:
    ``$AIRFLOW_HOME/prodclone/exports``, or outside Airflow ``$XDG_DATA_HOME`` (``~/.local/share``)
    ``/prodclone/exports``. Never /tmp, where any local user can create the directory first. Missing
    directories are created 0700 by the storage on first write."""
    home = os.environ.get("AIRFLOW_HOME") or os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return f"file://{Path(home).resolve() / 'prodclone' / 'exports'}"


def _rds_schema() -> dict:
    return {"type": ["object", "null"], "additionalProperties": False, "properties": {
        "aws_conn_id": {**NAME, "description": "AWS connection for RDS; default: storage.aws_conn_id."},
        "source_instance": {**TEXT, "description": "The production instance whose latest snapshot is restored."},
        "instance_class": {**TEXT, "description": "Class of the temporary instance (default db.r6g.large)."},
        "subnet_group": {**TEXT, "description": "DB subnet group of the temporary instance."},
        "security_group_ids": {**TEXTS, "description": "VPC security groups of the temporary instance."}}}


@dataclass
class Config:
    driver: str = key("postgres: template databases on the base server | velero: Kubernetes namespaces restored "
                      "from Velero backups.", {"enum": list(DRIVERS)}, "postgres")
    source_conn_id: str = key("Airflow connection to production, read-only.", NAME, "prodclone_source",
                              at="source.conn_id")
    source_mode: str = key("How one consistent point in time is held: live | replica_paused | rds_snapshot.",
                           {"enum": list(MODES)}, "live", at="source.mode")
    jobs: int = key("Parallel workers inside one export task (live mode).", COUNT, 2, at="source.jobs")
    split_rows: int = key("Frozen modes: tables bigger than this split into key-range tasks.", COUNT, 5_000_000,
                          at="source.split_rows")
    rds: dict = key("rds_snapshot mode only: restore the source's latest snapshot to a temporary instance.",
                    _rds_schema(), factory=dict, at="source.rds")
    base_conn_id: str = key("Airflow connection to the base server; its database is replaced on every seed.", NAME,
                            "prodclone_base", at="base.conn_id")
    storage_url: str = key("file:///abs/path (only when every task runs on one machine) or s3://bucket/prefix; "
                           "$PRODCLONE_STORAGE_URL overrides. Unset: $AIRFLOW_HOME/prodclone/exports.",
                           {"type": "string", "pattern": STORAGE_URL}, factory=default_storage_url, at="storage.url")
    aws_conn_id: str = key("Credentials and endpoint for s3://.", NAME, "aws_default", at="storage.aws_conn_id")
    rules_path: Path = key("The masking rules; a relative path is from the folder that holds plugins/ and include/.",
                           NAME, Path("include/masking/rules.yaml"), at="masking.rules", load=Path)
    key_variable: str = key("Airflow Variable holding the masking key (>= 32 characters); else "
                            "$PRODCLONE_MASKING_KEY.", NAME, "prodclone_masking_key", at="masking.key_variable")
    leak_sample: int = key("Original values sampled per masked column for the leak check.", COUNT, 500,
                           at="masking.leak_sample")
    stats_rows: int = key("Rows sampled per table by verify to compare each masked column's distinct values, nulls "
                          "and width with the source's (outside bounds: a warning in the record); 0: off.",
                          {"type": "integer", "minimum": 0}, 30_000, at="masking.stats_rows")
    schedule: str | None = key("Cron for prodclone_export; null: manual runs only.", SCHEDULE, "0 2 * * *",
                               at="export.schedule", keep_null=True)
    compression: str = key("Export data files: none | zstd (smaller in storage, a little slower to write; the "
                           "manifest records it and seed and verify read either).", {"enum": ["none", "zstd"]}, "none",
                           at="export.compression")
    export_deadline_minutes: int = key("Alert when an export is still not done this long after it was queued; 0: off.",
                                       {"type": "integer", "minimum": 0}, 0, at="export.deadline_minutes")
    slack_webhook_conn_id: str = key("An Airflow connection (Slack Incoming Webhook) for failure and deadline alerts.",
                                     TEXT, "", at="alerts.slack_webhook_conn_id")
    alert_emails: tuple[str, ...] = key("Addresses for the same alerts, through Airflow's SMTP connection.", TEXTS, (),
                                        at="alerts.email", load=tuple)
    registry_database: str = key("postgres driver: its record of snapshots and clones, on the base server.", NAME,
                                 "prodclone_registry", at="clones.registry_database")
    keep_snapshots: int = key("Teardown prunes older snapshots, never one a live environment uses (>= 1: the newest "
                              "is always kept).", COUNT, 3, at="clones.keep_snapshots")
    teardown_schedule: str | None = key("Cron for prodclone_teardown; null: manual runs only.", SCHEDULE, "@hourly",
                                        at="clones.teardown_schedule", keep_null=True)
    stale_minutes: int = key("A clone stuck creating this long is a leftover; teardown removes it.", COUNT, 60,
                             at="clones.stale_minutes")
    clone_strategy: str = key("CREATE DATABASE strategy: file_copy (fast for big bases) | wal_log.",
                              {"enum": ["file_copy", "wal_log"]}, "file_copy", at="clones.strategy")
    protected: tuple[str, ...] = key("Extra database names prodclone must never touch.", TEXTS, (),
                                     at="clones.protected", load=tuple)
    profiles: dict[str, Profile] = key(
        "Environment archetypes; the env name's prefix picks the profile. Absent: preview (24h, at most 72h) and "
        "loadtest (24h, at most 168h).",
        {"type": ["object", "null"], "minProperties": 1, "propertyNames": {"enum": list(ENV_PREFIXES)},
         "additionalProperties": {"$ref": "#/$defs/profile"}}, factory=default_profiles, load=_profiles)
    velero: Velero = key("The velero driver (driver: velero).", {"$ref": "#/$defs/velero"}, factory=Velero,
                         load=lambda raw: _build(Velero, raw))

    def __post_init__(self):
        if not self.rules_path.is_absolute():
            self.rules_path = REPO_ROOT / self.rules_path

    def profile(self, name: str) -> Profile:
        if name not in self.profiles:
            raise ProdcloneError(f"unknown profile {name!r}; configured profiles: {', '.join(self.profiles)}")
        return self.profiles[name]

    @property
    def max_ttl_hours(self) -> int:
        return max(p.max_ttl_hours for p in self.profiles.values())


def _plain(f: dataclasses.Field):
    """A field's default as it is written in the file."""
    value = f.default
    if "object" in f.metadata["schema"].get("type", ()):
        return dict(value)
    return list(value) if isinstance(value, tuple) else str(value) if isinstance(value, Path) else value


def _object_schema(cls) -> dict:
    """The section a dataclass is read from: its keys (dotted places nest), nothing else."""
    root: dict = {"type": ["object", "null"], "additionalProperties": False, "properties": {}}
    for f in _keys(cls):
        *parents, leaf = _place(f)
        node = root
        for part in parents:
            node = node["properties"].setdefault(part, {"type": ["object", "null"], "additionalProperties": False,
                                                        "properties": {}})
        default = {} if f.default is dataclasses.MISSING else {"default": _plain(f)}
        node["properties"][leaf] = {"description": f.metadata["doc"], **f.metadata["schema"], **default}
    return root


def json_schema() -> dict:
    """The JSON Schema of include/prodclone.yaml, from the declarations above (include/prodclone.schema.json)."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://prodclone.dev/schemas/prodclone-config.json",
        "title": "prodclone deployment config (include/prodclone.yaml)",
        "description": "Generated by `prodclone config schema`; every key is described in docs/configuration.md.",
        **_object_schema(Config),
        "type": "object",  # an empty file is all defaults: the loader reads it as {}
        "$defs": {"profile": _object_schema(Profile), "velero": _object_schema(Velero),
                  "datastore": _object_schema(Datastore)},
    }


def _semantic_errors(data: dict, marks: dict, source: str) -> list[str]:
    """What the schema cannot say: a profile's default lifetime within its maximum."""
    out = []
    for name, p in ((data.get("profiles") or {}).items()):
        p = p or {}
        ttl, most = p.get("ttl_hours", Profile.ttl_hours), p.get("max_ttl_hours", Profile.max_ttl_hours)
        if ttl > most:
            line, col = yamlsource.locate(marks, ("profiles", name, "ttl_hours"))
            out.append(f"{source}:{line}:{col}: profiles.{name}.ttl_hours: {ttl} is more than max_ttl_hours ({most})")
    return out


def parse_config(text: str, source: str = "<config>") -> Config:
    data, marks = yamlsource.parse(text, source, ProdcloneError)
    data = {} if data is None else data
    errors = yamlsource.schema_errors(json_schema(), data, marks, source) or _semantic_errors(data, marks, source)
    if errors:
        raise ProdcloneError(f"invalid config {source} (keys: docs/configuration.md):\n  " + "\n  ".join(errors))
    return _build(Config, data)


def load_config(path: str | Path | None = None) -> Config:
    """``$PRODCLONE_CONFIG`` or include/prodclone.yaml; ``$PRODCLONE_STORAGE_URL`` overrides the storage URL."""
    p = Path(path or os.environ.get("PRODCLONE_CONFIG") or DEFAULT_PATH)
    try:
        cfg = parse_config(p.read_text(), str(p))
    except FileNotFoundError:
        raise ProdcloneError(f"config file {p} does not exist") from None
    override = os.environ.get("PRODCLONE_STORAGE_URL")
    if override:
        if not override.startswith(("file:///", "s3://")):
            raise ProdcloneError(f"$PRODCLONE_STORAGE_URL must start with file:/// or s3://, not {override!r}")
        cfg.storage_url = override
    return cfg


def schema_text() -> str:
    """include/prodclone.schema.json as it is checked in."""
    return json.dumps(json_schema(), indent=2) + "\n"
