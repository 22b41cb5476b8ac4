"""prodclone_export through Airflow (dag.test) against a real Postgres."""

import json

import psycopg
import pytest

from prodclone.devpg import airflow_conn_json as airflow_conn
from support import ROOT


@pytest.fixture
def dag_env(airflow_db, sample_source, new_db, tmp_path, monkeypatch):
    base = new_db("pct_dagbase")
    monkeypatch.setenv("AIRFLOW_CONN_PRODCLONE_SOURCE", airflow_conn(sample_source[0]))
    monkeypatch.setenv("AIRFLOW_CONN_PRODCLONE_BASE", airflow_conn(base))
    monkeypatch.setenv("PRODCLONE_STORAGE_URL", f"file://{tmp_path}/store")
    return base, tmp_path / "store"


def _dag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags")).dags["prodclone_export"]


def test_export_dag_fills_the_base(dag_env, sample_source):
    base, store = dag_env
    run = _dag().test(use_executor=False)
    assert run.state == "success"
    counts = sample_source[1]
    with psycopg.connect(base) as c:
        assert c.execute("SELECT count(*) FROM users").fetchone()[0] == counts["users"]
        assert c.execute("SELECT count(*) FROM order_items").fetchone()[0] == counts["order_items"]
    latest = json.loads((store / "LATEST").read_text())
    assert latest["rows"] == sum(counts.values())
    manifest = json.loads((store / "exports" / latest["run"] / "manifest.json").read_text())
    # verify's statistics: warnings in the record and the XCom, never a failure of the run
    stats = manifest["verified"]["statistics"]
    assert stats["columns_compared"] > 10 and "public.users.email" in stats["outside_bounds"]  # the uniqueness tag
    tis = {ti.task_id: ti for ti in run.get_task_instances()}
    assert tis["verify"].xcom_pull(task_ids="verify")["statistics_warnings"] == sorted(stats["outside_bounds"])


def test_uncovered_column_fails_the_run_before_any_data(airflow_db, source_copy, new_db, tmp_path, monkeypatch):
    with psycopg.connect(source_copy, autocommit=True) as c:
        c.execute("ALTER TABLE orders ADD COLUMN gift_message text")
    base = new_db("pct_dagbase")
    monkeypatch.setenv("AIRFLOW_CONN_PRODCLONE_SOURCE", airflow_conn(source_copy))
    monkeypatch.setenv("AIRFLOW_CONN_PRODCLONE_BASE", airflow_conn(base))
    monkeypatch.setenv("PRODCLONE_STORAGE_URL", f"file://{tmp_path}/store")
    run = _dag().test(use_executor=False)
    assert run.state == "failed"
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["check_rules"] == "failed"
    assert states["export"] != "success" and states["seed_base"] != "success"
    assert not list((tmp_path / "store").rglob("*.copy"))
    with psycopg.connect(psycopg.conninfo.make_conninfo(base, dbname="postgres")) as c:
        assert c.execute("SELECT count(*) FROM pg_database WHERE datname = %s",
                         (psycopg.conninfo.conninfo_to_dict(base)["dbname"],)).fetchone()[0] == 0
