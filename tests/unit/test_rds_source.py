"""The rds_snapshot freeze against moto's RDS: restore the newest available snapshot under the run's
deterministic name, tag it, find it again on a retry, wait through Poll, and delete only tagged instances.
Instance and snapshot states moto does not move by itself are set on its backend, as RDS would report them."""

import datetime as dt
import threading
import time

import boto3
import pytest
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.rds.models import rds_backends

from prodclone import source
from prodclone.errors import ProdcloneError
from prodclone.poll import WaitTimeout

REGION = "us-east-1"
CFG = {"source_instance": "prod", "instance_class": "db.t3.micro"}
RUN = "manual__2026-11-22T05:00:00+00:00"
NAME = source.temp_instance_name(RUN)


@pytest.fixture
def rds(monkeypatch):
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch.setenv(k, v)
    with mock_aws():
        client = boto3.client("rds", region_name=REGION)
        client.create_db_instance(DBInstanceIdentifier="prod", Engine="postgres", DBInstanceClass="db.t3.micro",
                                  MasterUsername="app", MasterUserPassword="not-a-real-one", AllocatedStorage=20)
        snaps = _backend().database_snapshots  # moto's first automated backup: tests make the snapshots they need
        for name in [n for n, s in snaps.items() if s.snapshot_type == "automated"]:
            del snaps[name]
        yield client


def _backend():
    return rds_backends[DEFAULT_ACCOUNT_ID][REGION]


def _snapshot(rds, name: str, hours_ago: float, status: str = "available") -> None:
    rds.create_db_snapshot(DBInstanceIdentifier="prod", DBSnapshotIdentifier=name)
    snap = _backend().database_snapshots[name]
    snap.created = dt.datetime.now(dt.UTC) - dt.timedelta(hours=hours_ago)
    snap.status = status


def _restores(rds) -> list[dict]:
    """What was asked of RDS (botocore's own event hook; moto still carries it out)."""
    calls = []
    rds.meta.events.register("provide-client-params.rds.RestoreDBInstanceFromDBSnapshot",
                             lambda params, **_: calls.append(dict(params)))
    return calls


def _instances(rds) -> set[str]:
    return {i["DBInstanceIdentifier"] for i in rds.describe_db_instances()["DBInstances"]}


def test_restores_the_newest_available_snapshot_tagged_and_a_retry_finds_it(rds):
    _snapshot(rds, "nightly-1", hours_ago=30)
    _snapshot(rds, "nightly-2", hours_ago=6)
    _snapshot(rds, "nightly-3", hours_ago=1, status="creating")  # newest, but not restorable yet
    calls = _restores(rds)
    frozen = source.restore_rds_snapshot(rds, CFG, RUN, every=0.01)
    assert [c["DBSnapshotIdentifier"] for c in calls] == ["nightly-2"]
    assert calls[0]["DBInstanceIdentifier"] == NAME and calls[0]["PubliclyAccessible"] is False
    inst = rds.describe_db_instances(DBInstanceIdentifier=NAME)["DBInstances"][0]
    assert frozen == source.Frozen(mode="rds_snapshot", host=inst["Endpoint"]["Address"],
                                   port=inst["Endpoint"]["Port"], instance=NAME)
    tags = rds.list_tags_for_resource(ResourceName=inst["DBInstanceArn"])["TagList"]
    assert source.MANAGED_TAG in tags and {"Key": "prodclone/run", "Value": RUN} in tags
    # A retried task finds the instance it made: no second restore.
    assert source.restore_rds_snapshot(rds, CFG, RUN, every=0.01) == frozen
    assert len(calls) == 1 and _instances(rds) == {"prod", NAME}


def test_a_missing_snapshot_is_a_clear_error_and_nothing_is_restored(rds):
    with pytest.raises(ProdcloneError, match="no available snapshot of RDS instance 'prod'"):
        source.restore_rds_snapshot(rds, CFG, RUN)
    with pytest.raises(ProdcloneError, match="no available snapshot of RDS instance 'prod-typo'"):
        source.restore_rds_snapshot(rds, {**CFG, "source_instance": "prod-typo"}, RUN)
    with pytest.raises(ProdcloneError, match="source.rds.source_instance must name"):
        source.restore_rds_snapshot(rds, {}, RUN)
    assert _instances(rds) == {"prod"}


def test_the_wait_polls_until_the_instance_is_available(rds):
    _snapshot(rds, "nightly", hours_ago=1)
    source.start_rds_restore(rds, CFG, RUN)
    inst = _backend().databases[NAME]
    inst.status = "creating"
    assert source.rds_instance_ready(rds, NAME) is None
    threading.Timer(0.5, setattr, (inst, "status", "available")).start()
    started = time.monotonic()
    frozen = source.restore_rds_snapshot(rds, CFG, RUN, every=0.05)
    assert frozen.instance == NAME and time.monotonic() - started >= 0.45


def test_the_wait_ends_with_a_clear_error(rds):
    _snapshot(rds, "nightly", hours_ago=1)
    source.start_rds_restore(rds, CFG, RUN)
    inst = _backend().databases[NAME]
    inst.status = "modifying"
    with pytest.raises(WaitTimeout, match=f"temporary RDS instance {NAME} is not done after 0s"):
        source.restore_rds_snapshot(rds, CFG, RUN, wait_seconds=0.3, every=0.05)
    inst.status = "incompatible-restore"  # RDS does not come back from this: no point waiting the hour
    started = time.monotonic()
    with pytest.raises(ProdcloneError, match=f"{NAME} is 'incompatible-restore'"):
        source.restore_rds_snapshot(rds, CFG, RUN, every=0.05)
    assert time.monotonic() - started < 1


def test_delete_removes_only_tagged_instances(rds):
    _snapshot(rds, "nightly", hours_ago=1)
    frozen = source.restore_rds_snapshot(rds, CFG, RUN, every=0.01)
    source.delete_rds_instance(rds, frozen.instance)
    assert _instances(rds) == {"prod"}
    source.delete_rds_instance(rds, frozen.instance)  # already gone: nothing to do
    # Someone else's instance under the same name (no managed-by tag) is refused, and left as it was.
    rds.create_db_instance(DBInstanceIdentifier=NAME, Engine="postgres", DBInstanceClass="db.t3.micro",
                           MasterUsername="app", MasterUserPassword="not-a-real-one", AllocatedStorage=20)
    with pytest.raises(ProdcloneError, match=f"refusing to delete RDS instance {NAME}: it lacks"):
        source.delete_rds_instance(rds, NAME)
    with pytest.raises(ProdcloneError, match="refusing"):
        source.delete_rds_instance(rds, "prod")
    assert _instances(rds) == {"prod", NAME}
