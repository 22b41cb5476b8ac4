from support import ROOT


def _bag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert bag.import_errors == {}
    return bag.dags


def test_export_dag_shape(airflow_db):
    dag = _bag()["prodclone_export"]
    assert {"freeze_source", "check_rules", "plan", "export_part", "finalize", "verify", "seed_base", "start_snapshot",
            "wait_snapshot", "snapshot_base", "publish", "thaw_source"} <= set(dag.task_ids)
    assert dag.max_active_runs == 1
    assert dag.get_task("thaw_source").is_teardown
    assert dag.get_task("start_snapshot").upstream_task_ids >= {"seed_base"}
    assert dag.get_task("snapshot_base").upstream_task_ids >= {"wait_snapshot"}
    assert [o.name for o in dag.get_task("publish").outlets] == ["base snapshot"]


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
