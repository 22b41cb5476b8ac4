"""`make airflow`: Airflow standalone (api-server, scheduler, dag-processor,
triggerer) on the `make demo` setup and its metadata DB, so a person can
trigger prodclone_restore from the UI form and see the demo's runs.

It listens on 127.0.0.1 only (the simple auth manager is for a laptop), runs
at most 4 tasks at once, and records the pid of the process group it starts:
Ctrl-C, SIGTERM or `make stop` (`airflow_local.py stop`) stop all of it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from demo import STATE, airflow_env, devpg  # noqa: E402

PORT = os.environ.get("PRODCLONE_AIRFLOW_PORT", "8080")
PIDFILE = STATE / "airflow" / "standalone.pid"
STOP_TIMEOUT = 20  # seconds between SIGTERM and SIGKILL
PARALLELISM = "4"  # LocalExecutor workers; Airflow's default of 32 is for servers, not laptops


def main() -> int:
    if not (STATE / "storage" / "LATEST").exists():
        print("No export yet: run `make demo` first (it builds the sample data, the base and a snapshot).",
              file=sys.stderr)
        return 1
    if _recorded():
        print(f"Airflow from `make airflow` is already running (pid file {PIDFILE}); `make stop` stops it.",
              file=sys.stderr)
        return 1
    url = f"http://127.0.0.1:{PORT}"
    env = airflow_env(devpg.server_dsn())
    env |= {"AIRFLOW__API__HOST": "127.0.0.1", "AIRFLOW__API__PORT": PORT, "AIRFLOW__API__BASE_URL": url,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/", "AIRFLOW__CORE__PARALLELISM": PARALLELISM}
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    subprocess.run(["airflow", "db", "migrate"], env=env, check=True, **quiet)
    subprocess.run(["airflow", "dags", "reserialize"], env=env, check=True, **quiet)  # DAGs exist, paused
    # The export stays paused (unpaused, it would run at once for the last missed night); restores,
    # teardowns and extensions run as soon as they are triggered.
    subprocess.run(["airflow", "dags", "pause", "prodclone_export"], env=env, check=True, **quiet)
    for dag_id in ("prodclone_restore", "prodclone_teardown", "prodclone_extend"):
        subprocess.run(["airflow", "dags", "unpause", dag_id], env=env, check=True, **quiet)
    passwords = Path(env["AIRFLOW_HOME"]) / "simple_auth_manager_passwords.json.generated"
    print(f"Airflow UI: {url}  (user admin; password in {passwords}, written on first start)")
    print("Trigger prodclone_restore from its form; Ctrl-C or `make stop` stops Airflow.", flush=True)
    return supervise(["airflow", "standalone"], env)


def supervise(cmd: list[str], env: dict) -> int:
    """Run ``cmd`` as the leader of a new process group, its pid recorded in PIDFILE, until it exits or
    this process gets SIGINT, SIGTERM or SIGHUP; then stop its whole tree. (`airflow standalone` itself
    only handles Ctrl-C, and a background job never gets one.)"""
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    import psutil

    PIDFILE.parent.mkdir(parents=True, exist_ok=True)
    PIDFILE.write_text(json.dumps({"pid": proc.pid, "created": psutil.Process(proc.pid).create_time()}))

    def _stop(signum, _frame):
        raise SystemExit(128 + signum)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _stop)
    try:
        return proc.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not abandon the stop half-way
        devpg.stop_process_tree(proc.pid, timeout=STOP_TIMEOUT)
        proc.wait()
        PIDFILE.unlink(missing_ok=True)


def _recorded() -> dict | None:
    """The recorded process group, if its leader is still the process we started."""
    import psutil

    try:
        rec = json.loads(PIDFILE.read_text())
        alive = abs(psutil.Process(rec["pid"]).create_time() - rec["created"]) <= 0.01
    except (FileNotFoundError, ValueError, KeyError, psutil.NoSuchProcess):
        alive = False
    if not alive:
        PIDFILE.unlink(missing_ok=True)  # stale: its processes are gone, or the pid is someone else's now
        return None
    return rec


def stop() -> int:
    """`make stop`: stop the Airflow that `make airflow` started, wherever it runs (a background job,
    another terminal, a wrapper that was killed)."""
    rec = _recorded()
    if rec is None:
        print("Airflow from `make airflow` is not running.")
        return 0
    stopped = devpg.stop_process_tree(rec["pid"], rec["created"], timeout=STOP_TIMEOUT)
    PIDFILE.unlink(missing_ok=True)
    print(f"Stopped Airflow from `make airflow` ({len(stopped)} processes).")
    return 0


if __name__ == "__main__":
    sys.exit(stop() if sys.argv[1:] == ["stop"] else main())
