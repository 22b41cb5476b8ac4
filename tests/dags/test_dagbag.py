from support import ROOT


def test_dags_import_without_errors(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags"))
    assert bag.import_errors == {}
    dag = bag.dags.get("prodclone_export")
    assert dag is not None
    assert {"freeze_source", "check_rules", "plan", "export_part", "finalize", "verify", "seed_base", "publish",
            "thaw_source"} <= set(dag.task_ids)
    assert dag.max_active_runs == 1
    assert dag.get_task("thaw_source").is_teardown
