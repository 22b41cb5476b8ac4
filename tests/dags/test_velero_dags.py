"""prodclone_restore and prodclone_teardown with driver: velero, through Airflow
(dag.test runs the trigger in-process, so wait_clone really defers) against
the fake cluster of tests/fakekube/scenario.py."""

import json

import pytest
import yaml

from support import ROOT


def _config(kube, tmp_path, monkeypatch, s3_endpoint):
    cfg = yaml.safe_load((ROOT / "include" / "prodclone.yaml").read_text())
    cfg["driver"] = "velero"
    v = kube.cfg.velero
    cfg["velero"].update(wait_minutes=v.wait_minutes, host_template=v.host_template)
    cfg["velero"]["datastores"]["postgres"]["port"] = v.datastores[0].port
    (tmp_path / "prodclone.yaml").write_text(yaml.safe_dump(cfg))
    monkeypatch.setenv("PRODCLONE_CONFIG", str(tmp_path / "prodclone.yaml"))
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps({
        "conn_type": "aws", "login": "test", "password": "test",
        "extra": {"endpoint_url": s3_endpoint, "region_name": "us-east-1"}}))


def _dags():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags")).dags


def test_restore_defers_on_the_velero_restore_then_teardown(airflow_db, kube, tmp_path, monkeypatch, s3_endpoint):
    _config(kube, tmp_path, monkeypatch, s3_endpoint)
    snap = kube.driver.snapshot("export-run")
    dags = _dags()
    assert dags["prodclone_restore"].get_task("wait_clone").pool == "prodclone_velero"
    run = dags["prodclone_restore"].test(run_conf={"env": "preview-velero-dag"}, use_executor=False)
    assert run.state == "success"
    tis = {ti.task_id: ti for ti in run.get_task_instances()}
    assert tis["wait_clone"].xcom_pull(task_ids="wait_clone") == "Completed"  # the trigger's event
    info = tis["connection_info"].xcom_pull(task_ids="connection_info")
    assert info["env"] == "preview-velero-dag" and info["snapshot"] == snap.id
    assert info["secret"].startswith("Kubernetes Secret preview-velero-dag/postgres-credentials")
    assert kube.cluster.get("namespaces", "preview-velero-dag")["metadata"]["annotations"]["prodclone.io/status"] == "ready"

    down = dags["prodclone_teardown"].test(run_conf={"env": "preview-velero-dag"}, use_executor=False)
    assert down.state == "success"
    assert not [n for n in kube.cluster.find("namespaces") if n["metadata"]["name"] == "preview-velero-dag"]


def test_a_partially_failed_restore_fails_the_run_with_velero_reasons(airflow_db, kube, tmp_path, monkeypatch,
                                                                       s3_endpoint, capfd):
    _config(kube, tmp_path, monkeypatch, s3_endpoint)
    kube.driver.snapshot("export-run")
    kube.sim.faults.restore_result = "PartiallyFailed"
    run = _dags()["prodclone_restore"].test(run_conf={"env": "preview-velero-bad"}, use_executor=False)
    assert run.state == "failed"
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["wait_clone"] == "success" and states["post_restore"] == "failed"
    out, err = capfd.readouterr()
    assert "did not complete: phase PartiallyFailed" in out + err
    ns = kube.cluster.get("namespaces", "preview-velero-bad")
    assert ns["metadata"]["annotations"]["prodclone.io/status"] == "failed"  # never looks healthy


def test_export_snapshots_with_a_velero_backup_and_announces_it(airflow_db, kube, tmp_path, monkeypatch, s3_endpoint,
                                                                 sample_source, new_db):
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session

    from prodclone.devpg import airflow_conn_json

    _config(kube, tmp_path, monkeypatch, s3_endpoint)
    monkeypatch.setenv("AIRFLOW_CONN_PRODCLONE_SOURCE", airflow_conn_json(sample_source[0]))
    monkeypatch.setenv("AIRFLOW_CONN_PRODCLONE_BASE", airflow_conn_json(new_db("pct_velbase")))  # the base namespace's Postgres
    monkeypatch.setenv("PRODCLONE_STORAGE_URL", f"file://{tmp_path}/store")
    run = _dags()["prodclone_export"].test(use_executor=False)
    assert run.state == "success"
    tis = {ti.task_id: ti for ti in run.get_task_instances()}
    assert tis["wait_snapshot"].xcom_pull(task_ids="wait_snapshot") == "Completed"  # deferred on the Backup
    [backup] = kube.cluster.find("backups", "velero")
    assert backup["metadata"]["annotations"]["prodclone.io/run-id"] == run.run_id
    assert int(backup["metadata"]["annotations"]["prodclone.io/rows"]) == sum(sample_source[1].values())
    with create_session() as s:
        event = s.query(AssetEvent).filter(AssetEvent.source_run_id == run.run_id).one()
    assert event.extra["snapshot"] == backup["metadata"]["name"]


def test_a_named_velero_backup_is_restored_through_the_form_params(airflow_db, kube, tmp_path, monkeypatch, s3_endpoint):
    """Velero snapshot ids are `prodclone-<base>-<time>-<hash>`, not `snap-…`: the form's Param and the request
    check accept any driver's id (a DNS-1123 label), and the driver restores that one, not the latest."""
    _config(kube, tmp_path, monkeypatch, s3_endpoint)
    older = kube.driver.snapshot("export-run-1")
    assert kube.driver.snapshot("export-run-2").id != older.id
    run = _dags()["prodclone_restore"].test(run_conf={"env": "preview-velero-older", "snapshot": older.id},
                                            use_executor=False)
    assert run.state == "success"
    info = {ti.task_id: ti for ti in run.get_task_instances()}["connection_info"].xcom_pull(task_ids="connection_info")
    assert info["snapshot"] == older.id
    ns = kube.cluster.get("namespaces", "preview-velero-older")
    assert ns["metadata"]["annotations"]["prodclone.io/snapshot"] == older.id
    from airflow.sdk.definitions.param import ParamValidationError

    for bad in ("Prodclone_Base", "x" * 64, "-leading-dash", "snap-1; drop"):  # still only DNS-1123 labels
        with pytest.raises(ParamValidationError, match="snapshot"):
            _dags()["prodclone_restore"].test(run_conf={"env": "preview-velero-bad-id", "snapshot": bad},
                                              use_executor=False)
