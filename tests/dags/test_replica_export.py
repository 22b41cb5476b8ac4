"""prodclone_export in replica_paused mode through Airflow (dag.test), against a real streaming replica: a
throwaway primary and a replica made with pg_basebackup, from the same Postgres binaries as the test server.
The frozen shape runs end to end (freeze -> plan -> mapped parts -> finalize -> verify -> seed), and thaw_source
resumes replay whether the run succeeds or fails."""

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
import pytest

from prodclone.db import with_dbname
from prodclone.devpg import SYSTEM_USER, airflow_conn_json
from prodclone.pgtools import embedded_bin_dir
from prodclone.sample import create_sample_database
from support import ROOT


def _bin() -> Path:
    return embedded_bin_dir()


def _as_server_user(*cmd) -> None:
    """Postgres refuses to run as root; the embedded server's own system user runs it then (as for the test server)."""
    prefix = ["runuser", "-u", SYSTEM_USER, "--"] if os.geteuid() == 0 else []
    subprocess.run([*prefix, *map(str, cmd)], check=True, capture_output=True)


@pytest.fixture(scope="module")
def replica():
    """(primary DSN, replica DSN) of a fresh primary/replica pair on unix sockets; both stopped afterwards."""
    if shutil.which("runuser") is None and os.geteuid() == 0:
        pytest.skip("needs runuser to start Postgres as a non-root user")
    bin_, work = _bin(), Path(tempfile.mkdtemp(prefix="pct-replica-"))
    work.chmod(0o755)
    if os.geteuid() == 0:
        shutil.chown(work, SYSTEM_USER)
    ports = {"primary": 0, "replica": 0}
    for name in ports:
        with __import__("socket").socket() as s:
            s.bind(("127.0.0.1", 0))
            ports[name] = s.getsockname()[1]
    started = []
    try:
        _as_server_user(bin_ / "initdb", "-D", work / "primary", "-U", "postgres", "--auth=trust", "-E", "UTF8")
        with open(work / "primary" / "postgresql.conf", "a") as conf:
            conf.write(f"port = {ports['primary']}\nlisten_addresses = ''\nunix_socket_directories = '{work}'\n"
                       "wal_level = replica\nmax_wal_senders = 4\n")
        _as_server_user(bin_ / "pg_ctl", "-D", work / "primary", "-l", work / "primary.log", "-w", "start")
        started.append("primary")
        _as_server_user(bin_ / "pg_basebackup", "-D", work / "replica", "-R", "-h", work, "-p", ports["primary"],
                        "-U", "postgres", "-X", "stream")
        with open(work / "replica" / "postgresql.conf", "a") as conf:
            conf.write(f"port = {ports['replica']}\n")
        _as_server_user(bin_ / "pg_ctl", "-D", work / "replica", "-l", work / "replica.log", "-w", "start")
        started.append("replica")
        dsn = {n: f"host={work} port={p} user=postgres dbname=postgres" for n, p in ports.items()}
        yield dsn["primary"], dsn["replica"]
    finally:
        for name in reversed(started):
            _as_server_user(bin_ / "pg_ctl", "-D", work / name, "-w", "stop", "-m", "fast")
        shutil.rmtree(work, ignore_errors=True)


def _replayed(replica_dsn: str, query: str, expected) -> None:
    deadline = time.time() + 60
    while True:
        try:
            with psycopg.connect(replica_dsn) as c:
                if c.execute(query).fetchone()[0] == expected:
                    return
        except psycopg.OperationalError:  # the database is not on the replica yet
            pass
        if time.time() > deadline:
            raise AssertionError(f"the replica did not replay {query!r} in 60s")
        time.sleep(0.2)


def _replay_state(replica_dsn: str) -> str:
    with psycopg.connect(replica_dsn) as c:
        return c.execute("SELECT pg_get_wal_replay_pause_state()").fetchone()[0]


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
        _replayed(src, "SELECT count(*) FROM users", counts["users"])
        if alter:
            _replayed(src, "SELECT count(*) FROM information_schema.columns WHERE column_name = 'gift_message'", 1)
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
    assert _replay_state(src) == "not paused"  # thaw_source resumed it


def test_a_failed_run_still_resumes_replay(on_replica):
    src, _, base, store = on_replica("pct_rsrc_bad", alter="ALTER TABLE orders ADD COLUMN gift_message text")
    run = _dag().test(use_executor=False)
    assert run.state == "failed"
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["freeze_source"] == "success" and states["check_rules"] == "failed"
    assert states["thaw_source"] == "success"  # a teardown: it runs when the run fails
    assert _replay_state(src) == "not paused"
    assert not list(store.rglob("*.copy"))
