"""Freezing the source so that several workers (or mapped Airflow tasks on
different machines) read one point in time.

- ``live``: nothing to freeze; one task's workers share an exported snapshot.
- ``replica_paused``: a streaming replica with WAL replay paused for the run.
- ``rds_snapshot``: an RDS snapshot restored to a temporary instance (as
  Flexport did), deleted when the run ends.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass

import psycopg

from prodclone.db import connect
from prodclone.errors import ProdcloneError

MANAGED_TAG = {"Key": "app.kubernetes.io/managed-by", "Value": "prodclone"}


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
        deadline = time.monotonic() + timeout
        while conn.execute("SELECT pg_get_wal_replay_pause_state()").fetchone()[0] != "paused":
            if time.monotonic() > deadline:
                conn.execute("SELECT pg_wal_replay_resume()")
                raise ProdcloneError(f"the replica did not pause WAL replay within {timeout}s")
            time.sleep(0.2)
        lsn = conn.execute("SELECT pg_last_wal_replay_lsn()::text").fetchone()[0]
    return Frozen(mode="replica_paused", lsn=lsn)


def resume_replica(dsn: str) -> None:
    with connect(dsn, role="source replica", autocommit=True) as conn:
        conn.execute("SELECT pg_wal_replay_resume()")


def temp_instance_name(run_key: str) -> str:
    """Deterministic per run, so a retried task finds the instance it made."""
    slug = re.sub(r"[^a-z0-9-]+", "-", run_key.lower()).strip("-")
    return ("prodclone-export-" + slug)[:63].rstrip("-")


def restore_rds_snapshot(rds, rds_cfg: dict, run_key: str, wait_seconds: int = 3600) -> Frozen:
    """Restore the source instance's newest available snapshot to a temporary instance."""
    source = rds_cfg.get("source_instance")
    if not source:
        raise ProdcloneError("source.rds.source_instance must name the production RDS instance")
    name = temp_instance_name(run_key)
    try:
        inst = rds.describe_db_instances(DBInstanceIdentifier=name)["DBInstances"][0]
    except rds.exceptions.DBInstanceNotFoundFault:
        snaps = rds.describe_db_snapshots(DBInstanceIdentifier=source)["DBSnapshots"]
        snaps = [s for s in snaps if s.get("Status") == "available"]
        if not snaps:
            raise ProdcloneError(f"no available snapshot of RDS instance {source!r}") from None
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
        inst = rds.restore_db_instance_from_db_snapshot(**kwargs)["DBInstance"]
    deadline = time.monotonic() + wait_seconds
    while inst.get("DBInstanceStatus") != "available" or not inst.get("Endpoint"):
        if time.monotonic() > deadline:
            raise ProdcloneError(f"temporary RDS instance {name} not available after {wait_seconds}s")
        time.sleep(15)
        inst = rds.describe_db_instances(DBInstanceIdentifier=name)["DBInstances"][0]
    return Frozen(mode="rds_snapshot", host=inst["Endpoint"]["Address"], port=inst["Endpoint"]["Port"], instance=name)


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
