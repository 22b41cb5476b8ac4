"""`make airflow`: Airflow standalone (api-server, scheduler, dag-processor,
triggerer) on the `make demo` setup, so a person can trigger
prodclone_restore from the UI form. Ctrl-C stops it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from demo import STATE, airflow_env, devpg, with_dbname  # noqa: E402

PORT = os.environ.get("PRODCLONE_AIRFLOW_PORT", "8080")


def main() -> int:
    if not (STATE / "storage" / "LATEST").exists():
        print("No export yet: run `make demo` first (it builds the sample data, the base and a snapshot).",
              file=sys.stderr)
        return 1
    server = devpg.server_dsn()
    env = airflow_env(with_dbname(server, "prodclone_demo_prod"), with_dbname(server, "prodclone_demo_base"))
    env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = devpg.airflow_metadata_url(server, "prodclone_demo_airflow")
    env["AIRFLOW__API__PORT"] = PORT
    env["AIRFLOW__API__BASE_URL"] = f"http://localhost:{PORT}"
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    subprocess.run(["airflow", "db", "migrate"], env=env, check=True, **quiet)
    subprocess.run(["airflow", "dags", "reserialize"], env=env, check=True, **quiet)  # DAGs exist, paused
    # The export stays paused (unpaused, it would run at once for the last missed night); restores,
    # teardowns and extensions run as soon as they are triggered.
    subprocess.run(["airflow", "dags", "pause", "prodclone_export"], env=env, check=True, **quiet)
    for dag_id in ("prodclone_restore", "prodclone_teardown", "prodclone_extend"):
        subprocess.run(["airflow", "dags", "unpause", dag_id], env=env, check=True, **quiet)
    passwords = Path(env["AIRFLOW_HOME"]) / "simple_auth_manager_passwords.json.generated"
    print(f"Airflow UI: http://localhost:{PORT}  (user admin; password in {passwords}, written on first start)")
    print("Trigger prodclone_restore from its form; Ctrl-C stops Airflow.", flush=True)
    try:
        return subprocess.run(["airflow", "standalone"], env=env).returncode
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
