"""prodclone_export in replica_paused mode through Airflow (dag.test), against a real streaming replica: a
throwaway primary and a replica made with pg_basebackup, from the same Postgres binaries as the test server.
The frozen shape runs end to end (freeze -> plan -> mapped parts -> finalize -> verify -> seed), and thaw_source
resumes replay whether the run succeeds or fails."""

import json
from pathlib import Path

import psycopg
import pytest

from prodclone.db import with_dbname
from prodclone.devpg import airflow_conn_json
from prodclone.sample import create_sample_database
from support import ROOT, replay_state, replayed, streaming_replica


@pytest.fixture(scope="module")
def replica():
    with streaming_replica() as pair:
        yield pair


@pytest.fixture
def on_replica(replica, airflow_db, new_db, tmp_path, monkeypatch):
    """A sample database on the primary, replayed on the replica; prodclone_export configured to read the
    replica in replica_paused mode with small key ranges (so parts are mapped)."""
    primary, standby = replica

    def make(db: str, alter: str | None = None) -> tuple[str, dict, str, Path]:
        counts = create_sample_database(with_dbname(primary, db), users=150, replace=True)
        if alter:
            with psycopg.connect(with_dbname(primary, db), autocommit=True) as c:
                c.execute(alter)
        src = with_dbname(standby, db)
        replayed(src, "SELECT count(*) FROM users", counts["users"])
        if alter:
            replayed(src, "SELECT count(*) FROM information_schema.columns WHERE column_name = 'gift_message'", 1)
        base = new_db("pct_replbase")
        (tmp_path / "prodclone.yaml").write_text(
            f"source:\n  mode: replica_paused\n  split_rows: 100\nstorage:\n  url: file://{tmp_path}/store\n")
        monkeypatch.setenv("PRODCLONE_CONFIG", str(tmp_path / "prodclone.yaml"))
        monkeypatch.setenv("AIRFLOW_CONN_PRODCLONE_SOURCE", airflow_conn_json(src))
        monkeypatch.setenv("AIRFLOW_CONN_PRODCLONE_BASE", airflow_conn_json(base))
        return src, counts, base, tmp_path / "store"

    return make


def _dag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags")).dags["prodclone_export"]


def test_replica_paused_export_maps_parts_and_resumes_replay(on_replica):
    src, counts, base, store = on_replica("pct_rsrc")
    dag = _dag()
    assert "freeze_source" in dag.task_ids  # the frozen shape, chosen at parse time
    run = dag.test(use_executor=False)
    assert run.state == "success"
    tis = run.get_task_instances()
    assert {ti.task_id for ti in tis if ti.state != "success"} == set()
    assert len([ti for ti in tis if ti.task_id == "export_part"]) > 1  # key ranges on mapped tasks
    with psycopg.connect(base) as c:
        assert c.execute("SELECT count(*) FROM users").fetchone()[0] == counts["users"]
    latest = json.loads((store / "LATEST").read_text())
    manifest = json.loads((store / "exports" / latest["run"] / "manifest.json").read_text())
    frozen = next(ti for ti in tis if ti.task_id == "freeze_source").xcom_pull(task_ids="freeze_source")
    assert manifest["source"]["mode"] == "replica_paused" and manifest["source"]["lsn"] == frozen["lsn"]
    assert manifest["verified"]["leak_check"] == "passed"
    assert replay_state(src) == "not paused"  # thaw_source resumed it


def test_a_failed_run_still_resumes_replay(on_replica):
    src, _, base, store = on_replica("pct_rsrc_bad", alter="ALTER TABLE orders ADD COLUMN gift_message text")
    run = _dag().test(use_executor=False)
    assert run.state == "failed"
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["freeze_source"] == "success" and states["check_rules"] == "failed"
    assert states["thaw_source"] == "success"  # a teardown: it runs when the run fails
    assert replay_state(src) == "not paused"
    assert not list(store.rglob("*.copy"))
