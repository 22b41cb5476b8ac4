"""A real Airflow for REST and browser tests: `airflow standalone` (api-server,
scheduler, dag-processor, triggerer; LocalExecutor) in a subprocess with a
temporary AIRFLOW_HOME, known users (admin, viewer), prodclone's DAGs and
plugin, and a base that is already seeded and snapshotted. Started once per
session; the slow part (~1 min) is shared by every test here."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import psycopg
import pytest
import yaml

from prodclone.config import load_config
from prodclone.db import with_dbname
from prodclone.devpg import airflow_conn_json, airflow_metadata_url
from prodclone.drivers.base import MemorySecrets
from prodclone.drivers.postgres import PostgresDriver
from prodclone.seed import seed
from support import KEY, ROOT

USERS = {"admin": "admin-pw-" + "a" * 8, "viewer": "viewer-pw-" + "v" * 8}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str):
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return json.loads(r.read())
    except Exception:
        return None


@pytest.fixture(scope="session")
def airflow_server(pg, sample_export, tmp_path_factory):
    home = tmp_path_factory.mktemp("airflow-standalone")
    tag = uuid.uuid4().hex[:8]
    base = with_dbname(pg, f"pct_apibase_{tag}")
    cfg_data = yaml.safe_load((ROOT / "include" / "prodclone.yaml").read_text())
    cfg_data["clones"]["registry_database"] = f"pct_apireg_{tag}"
    (home / "prodclone.yaml").write_text(yaml.safe_dump(cfg_data))
    seed(sample_export, base, labels="run=api-tests")
    cfg = load_config(home / "prodclone.yaml")
    snapshot = PostgresDriver(base, cfg, MemorySecrets()).snapshot(f"api-tests-{tag}", rows=1)
    (home / "simple_auth_manager_passwords.json.generated").write_text(json.dumps(USERS))
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,viewer:viewer",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": airflow_metadata_url(pg, f"pct_airflow_{tag}"),
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__BASE_URL": url,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW_CONN_PRODCLONE_BASE": airflow_conn_json(base),
        "PRODCLONE_CONFIG": str(home / "prodclone.yaml"),
        "PRODCLONE_MASKING_KEY": KEY,
    }
    env.pop("AIRFLOW__CORE__UNIT_TEST_MODE", None)
    with open(home / "standalone.log", "w") as log:
        proc = subprocess.Popen(["airflow", "standalone"], env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=home)
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"airflow standalone exited; see {home / 'standalone.log'}")
            health = _get(f"{url}/api/v2/monitor/health")
            if health and all(health.get(k, {}).get("status") == "healthy"
                              for k in ("metadatabase", "scheduler", "triggerer", "dag_processor")) \
                    and _parsed(url, USERS["admin"]):
                break
            time.sleep(2)
        else:
            raise RuntimeError(f"airflow standalone did not become healthy; see {home / 'standalone.log'}")
        yield {"url": url, "home": home, "base": base, "registry": with_dbname(pg, cfg.registry_database),
               "snapshot": snapshot.id, "users": USERS, "pg": pg}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        _cleanup(pg, base, cfg.registry_database, snapshot.id, tag)


def _parsed(url: str, password: str) -> bool:
    """True once the dag-processor has serialised prodclone's DAGs."""
    try:
        req = urllib.request.Request(f"{url}/auth/token", data=json.dumps({"username": "admin", "password": password}).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=5) as r:
            token = json.loads(r.read())["access_token"]
        req = urllib.request.Request(f"{url}/api/v2/dags?dag_id_pattern=prodclone", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=5) as r:
            ids = {d["dag_id"] for d in json.loads(r.read())["dags"]}
        return {"prodclone_restore", "prodclone_teardown", "prodclone_extend"} <= ids
    except Exception:
        return False


def _cleanup(pg: str, base: str, registry: str, snapshot: str, tag: str) -> None:
    with psycopg.connect(pg, autocommit=True) as c:
        try:
            envs = [r[0] for r in psycopg.connect(with_dbname(pg, registry)).execute("SELECT name FROM environments")]
        except psycopg.Error:
            envs = []
        for env in envs:
            c.execute(f'DROP DATABASE IF EXISTS "{env}" WITH (FORCE)')
            c.execute(f'DROP ROLE IF EXISTS "{env}"')
        for db in (registry, snapshot, psycopg.conninfo.conninfo_to_dict(base)["dbname"], f"pct_airflow_{tag}"):
            c.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


@pytest.fixture(scope="session")
def unpaused(airflow_server):
    """The first `up` meets paused DAGs (they start paused) and must say so; --unpause fixes it."""
    from prodclone.airflow_api import AirflowAPI
    from prodclone.cli import main

    url, pw = airflow_server["url"], airflow_server["users"]["admin"]
    base = ["--airflow-url", url, "--username", "admin", "--password", pw]
    assert main(["env", "up", "--pr", "1", "--no-wait", *base]) == 4  # EXIT_PAUSED
    api = AirflowAPI(url, username="admin", password=pw)
    for dag in ("prodclone_restore", "prodclone_teardown", "prodclone_extend"):
        api.ensure_unpaused(dag, unpause=True)
    return api


@pytest.fixture
def cli(airflow_server, capsys):
    """Runs `prodclone env ...` in-process against the server; returns (exit code, stdout, stderr)."""
    from prodclone.cli import main

    def run(*args, user="admin", password=None):
        code = main(["env", *args, "--airflow-url", airflow_server["url"], "--username", user,
                     "--password", password or airflow_server["users"][user]])
        out, err = capsys.readouterr()
        return code, out, err

    return run
