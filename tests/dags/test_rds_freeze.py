"""The rds_snapshot freeze through Airflow: FreezeRdsSource restores (or finds) the run's instance and defers;
dag.test runs the trigger in-process against moto's RDS, so the wait really happens in the trigger; thaw_source,
the freeze's teardown, deletes the instance."""

import datetime as dt
import json
import logging
import threading

import boto3
import pytest
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.rds.models import rds_backends

from prodclone import source
from prodclone.exportrun import run_key
from support import ROOT

REGION = "us-east-1"
WHEN = dt.datetime(2026, 11, 22, 5, 0, tzinfo=dt.UTC)
NAME = source.temp_instance_name(run_key(f"manual__{WHEN.isoformat()}"))


@pytest.fixture
def rds(airflow_db, tmp_path, monkeypatch):
    (tmp_path / "prodclone.yaml").write_text(
        "source:\n  mode: rds_snapshot\n  rds:\n    source_instance: prod\n    instance_class: db.t3.micro\n"
        f"storage:\n  url: file://{tmp_path}/store\n")
    monkeypatch.setenv("PRODCLONE_CONFIG", str(tmp_path / "prodclone.yaml"))
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps({"conn_type": "aws", "extra": {"region_name": REGION}}))
    with mock_aws():
        client = boto3.client("rds", region_name=REGION)
        client.create_db_instance(DBInstanceIdentifier="prod", Engine="postgres", DBInstanceClass="db.t3.micro",
                                  MasterUsername="app", MasterUserPassword="not-a-real-one", AllocatedStorage=20)
        client.create_db_snapshot(DBInstanceIdentifier="prod", DBSnapshotIdentifier="nightly")
        yield client


def _run_freeze_and_thaw():
    """prodclone_export in rds_snapshot mode, where only freeze_source and thaw_source run: every other task is
    marked successful without running (the temporary instance's endpoint is moto's, which no Postgres answers)."""
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(ROOT / "dags")).dags["prodclone_export"]
    return dag.test(run_after=WHEN, logical_date=WHEN, use_executor=False,
                    mark_success_pattern=r"(?!freeze_source$|thaw_source$).*")


def _instances(rds) -> set[str]:
    return {i["DBInstanceIdentifier"] for i in rds.describe_db_instances()["DBInstances"]}


def test_the_freeze_waits_in_the_trigger_and_the_teardown_deletes_the_instance(rds):
    # An earlier try of this run started the restore; RDS is still creating it when the task runs again.
    source.start_rds_restore(rds, {"source_instance": "prod", "instance_class": "db.t3.micro"},
                             run_key(f"manual__{WHEN.isoformat()}"))
    inst = rds_backends[DEFAULT_ACCOUNT_ID][REGION].databases[NAME]
    inst.status = "creating"
    seen = []

    class WhenDeferred(logging.Handler):  # RDS finishes only once the task has deferred and the trigger polls
        def emit(self, record):
            if "running trigger in line" in record.getMessage():
                seen.append(inst.status)
                threading.Timer(1.0, setattr, (inst, "status", "available")).start()

    handler = WhenDeferred()
    logging.getLogger("airflow.sdk.definitions.dag").addHandler(handler)
    try:
        run = _run_freeze_and_thaw()
    finally:
        logging.getLogger("airflow.sdk.definitions.dag").removeHandler(handler)
    assert seen == ["creating"]
    tis = {ti.task_id: ti for ti in run.get_task_instances()}
    # (The run itself fails: the marked plan leaves export_part nothing to map over.)
    assert tis["freeze_source"].state == "success" and tis["check_rules"].state == "success"
    frozen = tis["freeze_source"].xcom_pull(task_ids="freeze_source")
    assert frozen["mode"] == "rds_snapshot" and frozen["instance"] == NAME and frozen["host"].startswith(NAME)
    assert set(frozen) == {"mode", "lsn", "host", "port", "instance"}  # an endpoint, no credentials
    assert tis["thaw_source"].state == "success"
    assert _instances(rds) == {"prod"}  # deleted by the teardown, the source untouched


def test_an_instance_that_cannot_come_up_fails_the_freeze_and_is_removed(rds):
    source.start_rds_restore(rds, {"source_instance": "prod", "instance_class": "db.t3.micro"},
                             run_key(f"manual__{WHEN.isoformat()}"))
    rds_backends[DEFAULT_ACCOUNT_ID][REGION].databases[NAME].status = "incompatible-restore"
    run = _run_freeze_and_thaw()
    assert run.state == "failed"
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["freeze_source"] == "failed" and states["thaw_source"] == "upstream_failed"
    assert states["check_rules"] == "upstream_failed"  # nothing reads from a source that was never frozen
    assert _instances(rds) == {"prod"}  # the failed freeze removed its own instance: the teardown never ran
