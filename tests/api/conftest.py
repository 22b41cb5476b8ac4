"""A real Airflow for REST and browser tests (tests/airflow_stack.py): `airflow standalone` (api-server,
scheduler, dag-processor, triggerer; LocalExecutor) in a subprocess with a
temporary AIRFLOW_HOME, known users (admin, viewer), prodclone's DAGs and
plugin, and a base that is already seeded and snapshotted. Started once per
session; the slow part (~1 min) is shared by every test here."""

import uuid

import psycopg
import pytest
import yaml

from airflow_stack import USERS, AirflowStack
from prodclone.config import load_config
from prodclone.db import with_dbname
from prodclone.devpg import airflow_conn_json
from prodclone.drivers.base import MemorySecrets
from prodclone.drivers.postgres import PostgresDriver
from prodclone.seed import seed
from support import ROOT


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
    stack = None
    try:
        stack = AirflowStack(home, pg, f"pct_airflow_{tag}", env={
            "AIRFLOW_CONN_PRODCLONE_BASE": airflow_conn_json(base), "PRODCLONE_CONFIG": str(home / "prodclone.yaml")})
        stack.start("standalone", "standalone")
        stack.wait_healthy(("metadatabase", "scheduler", "triggerer", "dag_processor"),
                           {"prodclone_restore", "prodclone_teardown", "prodclone_extend"})
        yield {"url": stack.url, "home": home, "base": base, "registry": with_dbname(pg, cfg.registry_database),
               "snapshot": snapshot.id, "users": USERS, "pg": pg}
    finally:
        if stack is not None:
            stack.close()
        _cleanup(pg, base, cfg.registry_database, snapshot.id, tag)


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
