"""Freezing the source so that several workers (or mapped Airflow tasks on
different machines) read one point in time.

- ``live``: nothing to freeze; one task's workers share an exported snapshot.
- ``replica_paused``: a streaming replica with WAL replay paused for the run.
- ``rds_snapshot``: an RDS snapshot restored to a temporary instance (as
  Flexport did), deleted when the run ends.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

import psycopg

from prodclone.db import connect
from prodclone.errors import ConnectionFailed, ProdcloneError
from prodclone.poll import Poll, WaitTimeout

MANAGED_TAG = {"Key": "app.kubernetes.io/managed-by", "Value": "prodclone"}
RDS_WAIT_SECONDS = 3600
# Statuses a restoring instance does not come back from by itself.
RDS_DEAD_ENDS = ("failed", "incompatible-restore", "incompatible-parameters", "incompatible-network",
                 "storage-full", "deleting", "inaccessible-encryption-credentials")


@dataclass
class Frozen:
    """What a frozen source looks like to the export tasks; no secrets."""

    mode: str
    lsn: str | None = None
    host: str | None = None  # rds_snapshot: the temporary instance's endpoint
    port: int | None = None
    instance: str | None = None

    def dsn(self, source_dsn: str) -> str:
        if not self.host:
            return source_dsn
        params = psycopg.conninfo.conninfo_to_dict(source_dsn)
        params.update(host=self.host, port=str(self.port))
        return psycopg.conninfo.make_conninfo(**params)

    def as_dict(self) -> dict:
        return asdict(self)


def pause_replica(dsn: str, timeout: float = 60) -> Frozen:
    with connect(dsn, role="source replica", autocommit=True) as conn:
        if not conn.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
            raise ProdcloneError("source.mode is replica_paused but the source is not a replica (pg_is_in_recovery() is false)")
        conn.execute("SELECT pg_wal_replay_pause()")

        def paused():
            return conn.execute("SELECT pg_get_wal_replay_pause_state()").fetchone()[0] == "paused" or None

        try:
            Poll("WAL replay pause on the source replica", timeout, every=0.2).run(paused)
        except WaitTimeout:
            conn.execute("SELECT pg_wal_replay_resume()")
            raise
        lsn = conn.execute("SELECT pg_last_wal_replay_lsn()::text").fetchone()[0]
    return Frozen(mode="replica_paused", lsn=lsn)


def resume_replica(dsn: str, timeout: float = 60) -> None:
    """Resume WAL replay, and see that it did. Replay that restarts after a pause applies WAL older than
    max_standby_streaming_delay, so it cancels conflicting standby queries at once ("conflict with recovery"):
    this very statement among them, whether or not the resume took. A cancelled try is asked again."""
    def resumed():
        with connect(dsn, role="source replica", autocommit=True) as conn:
            conn.execute("SELECT pg_wal_replay_resume()")
            return conn.execute("SELECT pg_get_wal_replay_pause_state() = 'not paused'").fetchone()[0] or None

    Poll("WAL replay resume on the source replica", timeout, every=0.5, transient=_recovery_conflict).run(resumed)


def _recovery_conflict(exc: BaseException) -> bool:
    """Replay cancelled the statement (SQLSTATE 40001 or 40P01), or ended the session as it started: a FATAL that
    carries no SQLSTATE at connect time, only its message."""
    if isinstance(exc, psycopg.errors.SerializationFailure | psycopg.errors.DeadlockDetected):
        return True
    return isinstance(exc, ConnectionFailed) and "conflict with recovery" in str(exc.__context__)


def temp_instance_name(run_key: str) -> str:
    """Deterministic per run, so a retried task finds the instance it made."""
    slug = re.sub(r"[^a-z0-9-]+", "-", run_key.lower()).strip("-")
    return ("prodclone-export-" + slug)[:63].rstrip("-")


def start_rds_restore(rds, rds_cfg: dict, run_key: str) -> str:
    """Restore the source instance's newest available snapshot to a temporary instance named after the run,
    or find the one an earlier try of this run started; returns its name. Does not wait."""
    source = rds_cfg.get("source_instance")
    if not source:
        raise ProdcloneError("source.rds.source_instance must name the production RDS instance")
    name = temp_instance_name(run_key)
    try:
        rds.describe_db_instances(DBInstanceIdentifier=name)
        return name
    except rds.exceptions.DBInstanceNotFoundFault:
        pass
    snaps = rds.describe_db_snapshots(DBInstanceIdentifier=source)["DBSnapshots"]
    snaps = [s for s in snaps if s.get("Status") == "available"]
    if not snaps:
        raise ProdcloneError(f"no available snapshot of RDS instance {source!r} (source.rds.source_instance): "
                             "check the name and that automated or manual snapshots exist; nothing was restored")
    snap = max(snaps, key=lambda s: s["SnapshotCreateTime"])
    kwargs = {
        "DBInstanceIdentifier": name,
        "DBSnapshotIdentifier": snap["DBSnapshotIdentifier"],
        "DBInstanceClass": rds_cfg.get("instance_class", "db.r6g.large"),
        "PubliclyAccessible": False,
        "Tags": [MANAGED_TAG, {"Key": "prodclone/run", "Value": run_key[:255]}],
    }
    if rds_cfg.get("subnet_group"):
        kwargs["DBSubnetGroupName"] = rds_cfg["subnet_group"]
    if rds_cfg.get("security_group_ids"):
        kwargs["VpcSecurityGroupIds"] = rds_cfg["security_group_ids"]
    rds.restore_db_instance_from_db_snapshot(**kwargs)
    return name


def rds_instance_ready(rds, name: str) -> Frozen | None:
    """The check both waits share (Poll.run in a worker, Poll.run_async in the triggerer): the frozen source
    once the instance is available with an endpoint, None while it is still coming up."""
    inst = rds.describe_db_instances(DBInstanceIdentifier=name)["DBInstances"][0]
    status = inst.get("DBInstanceStatus")
    if status in RDS_DEAD_ENDS:
        raise ProdcloneError(f"temporary RDS instance {name} is {status!r}; it will not become available "
                             "(the next run's thaw or a manual delete removes it)")
    if status != "available" or not inst.get("Endpoint"):
        return None
    return Frozen(mode="rds_snapshot", host=inst["Endpoint"]["Address"], port=inst["Endpoint"]["Port"], instance=name)


def rds_wait(name: str, timeout: float = RDS_WAIT_SECONDS, every: float = 15, deadline: float = 0.0) -> Poll:
    return Poll(f"temporary RDS instance {name}", timeout, every=every, deadline=deadline, transient=_aws_transient)


def restore_rds_snapshot(rds, rds_cfg: dict, run_key: str, wait_seconds: float = RDS_WAIT_SECONDS,
                         every: float = 15) -> Frozen:
    """Restore (or find) the run's temporary instance and wait in this process until it is available:
    the synchronous path. The DAG waits in the triggerer instead (prodclone.airflow.rds)."""
    name = start_rds_restore(rds, rds_cfg, run_key)
    return rds_wait(name, wait_seconds, every).run(lambda: rds_instance_ready(rds, name))


def _aws_transient(exc: BaseException) -> bool:
    """Throttling, 5xx and dropped connections: ask again. Anything else (no such instance, access denied) stops."""
    from botocore.exceptions import ClientError, ConnectionError, ReadTimeoutError

    if isinstance(exc, (ConnectionError, ReadTimeoutError)):
        return True
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return status >= 500 or err.get("Code") in ("Throttling", "ThrottlingException", "RequestLimitExceeded")
    return False


def delete_rds_instance(rds, name: str) -> None:
    """Delete the temporary instance, but only one prodclone created and tagged."""
    try:
        inst = rds.describe_db_instances(DBInstanceIdentifier=name)["DBInstances"][0]
    except rds.exceptions.DBInstanceNotFoundFault:
        return
    tags = rds.list_tags_for_resource(ResourceName=inst["DBInstanceArn"])["TagList"]
    if MANAGED_TAG not in tags:
        raise ProdcloneError(f"refusing to delete RDS instance {name}: it lacks the prodclone managed-by tag")
    rds.delete_db_instance(DBInstanceIdentifier=name, SkipFinalSnapshot=True, DeleteAutomatedBackups=True)
