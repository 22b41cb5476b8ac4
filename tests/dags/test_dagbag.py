from support import ROOT


def _bag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert bag.import_errors == {}
    return bag.dags


def _export_dag(monkeypatch, tmp_path, mode: str | None):
    if mode:
        (tmp_path / "prodclone.yaml").write_text(f"source:\n  mode: {mode}\n  rds:\n    source_instance: prod\n")
        monkeypatch.setenv("PRODCLONE_CONFIG", str(tmp_path / "prodclone.yaml"))
    return _bag()["prodclone_export"]


COMMON = {"check_rules", "verify", "seed_base", "start_snapshot", "wait_snapshot", "snapshot_base", "publish"}


def _common_shape(dag):
    assert dag.max_active_runs == 1
    assert dag.get_task("verify").upstream_task_ids >= {"export", "finalize"} & set(dag.task_ids)
    assert dag.get_task("seed_base").upstream_task_ids == {"verify"}
    assert dag.get_task("start_snapshot").upstream_task_ids >= {"seed_base"}
    assert dag.get_task("snapshot_base").upstream_task_ids >= {"wait_snapshot"}
    assert [o.name for o in dag.get_task("publish").outlets] == ["base snapshot"]
    assert all(t.on_failure_callback for t in dag.tasks)


def test_export_dag_live_shape(airflow_db):
    """The default (live) mode, decided at parse time: one export task, nothing to freeze or thaw."""
    dag = _bag()["prodclone_export"]
    assert set(dag.task_ids) == COMMON | {"export"}
    assert dag.get_task("export").upstream_task_ids == {"check_rules"}
    assert dag.get_task("check_rules").upstream_task_ids == set()
    _common_shape(dag)


def test_export_dag_frozen_shapes(airflow_db, monkeypatch, tmp_path):
    """replica_paused and rds_snapshot: freeze -> plan -> mapped parts -> finalize, thaw as a teardown that
    runs even when the run fails; the RDS freeze is the deferrable operator, the replica's a task."""
    for mode, freeze in (("replica_paused", "_PythonDecoratedOperator"), ("rds_snapshot", "FreezeRdsSource")):
        dag = _export_dag(monkeypatch, tmp_path, mode)
        assert set(dag.task_ids) == COMMON | {"freeze_source", "plan", "export_part", "finalize", "thaw_source"}, mode
        assert type(dag.get_task("freeze_source")).__name__ == freeze
        assert dag.get_task("freeze_source").is_setup and dag.get_task("thaw_source").is_teardown
        assert dag.get_task("thaw_source").upstream_task_ids == {"freeze_source", "verify"}
        assert dag.get_task("check_rules").upstream_task_ids == {"freeze_source"}
        assert dag.get_task("plan").upstream_task_ids == {"freeze_source", "check_rules"}
        assert dag.get_task("export_part").upstream_task_ids == {"freeze_source", "plan"}
        assert dag.get_task("finalize").upstream_task_ids == {"freeze_source", "export_part"}
        _common_shape(dag)


def test_restore_form_has_validated_sections(airflow_db):
    dag = _bag()["prodclone_restore"]
    assert type(dag.timetable).__name__ == "NullTimetable"  # manual (UI form, REST API) only
    params = dag.params
    assert set(params) == {"env", "pr", "profile", "ttl_hours", "snapshot", "replace", "requested_by"}
    env = params.get_param("env").schema
    assert env["pattern"] == r"^(preview|loadtest)-[a-z0-9-]+$" and env["maxLength"] == 63
    profile = params.get_param("profile").schema
    assert profile["enum"] == ["preview", "loadtest"] and set(profile["values_display"]) == {"preview", "loadtest"}
    assert params.get_param("ttl_hours").schema["maximum"] == 168
    assert all(params.get_param(p).schema.get("title") for p in params)
    # The environment's fields sit in the form's default section, the one Airflow opens; the rest are folded.
    assert {p for p in params if not params.get_param(p).schema.get("section")} == {"env", "pr", "profile"}
    assert dag.max_active_runs > 1
    assert list(dag.topological_sort()) and [t.task_id for t in dag.topological_sort()] == [
        "resolve", "clone", "wait_clone", "post_restore", "lifecycle_hooks", "connection_info"]
    assert dag.get_task("wait_clone").pool == "default_pool"  # the Velero pool only with driver: velero
    assert all(t.on_failure_callback for t in dag.tasks)


def test_teardown_dag_is_hourly_and_serial(airflow_db):
    dag = _bag()["prodclone_teardown"]
    assert dag.max_active_runs == 1
    assert {"due", "teardown_env", "prune_snapshots", "summary"} == set(dag.task_ids)
    assert dag.timetable.expression == "0 * * * *"
