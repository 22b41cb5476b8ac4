"""A real Airflow in subprocesses, for the tests that drive it over REST and for bench/scale_out.py: a temporary
AIRFLOW_HOME, a Postgres metadata DB, known users (admin, viewer), prodclone's DAGs and plugin. Either
`airflow standalone` (LocalExecutor) or the CeleryExecutor's parts one by one: its own redis-server on a free
port, scheduler, dag-processor, api-server and `airflow celery worker`s. Every process is the leader of a
process group of its own and is stopped with everything it started (task runners included)."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import psutil

from prodclone.devpg import airflow_metadata_url, stop_process_tree
from support import KEY, ROOT, free_port

USERS = {"admin": "admin-pw-" + "a" * 8, "viewer": "viewer-pw-" + "v" * 8}


def get_json(url: str, token: str | None = None):
    """The JSON at ``url``, or None while the server is not answering (yet)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as r:
            return json.loads(r.read())
    except Exception:
        return None


def token(url: str, user: str = "admin") -> str | None:
    req = urllib.request.Request(f"{url}/auth/token", data=json.dumps({"username": user, "password": USERS[user]}).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())["access_token"]
    except Exception:
        return None


class AirflowStack:
    """Airflow's processes under ``home``, sharing one environment; ``start`` adds one, ``close`` stops all."""

    def __init__(self, home: Path, pg: str, metadata_db: str, env: dict | None = None):
        self.home, self.port = Path(home), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.procs: dict[str, subprocess.Popen] = {}
        self.api = self.base = self.store = None  # celery_export's deployment sets them
        (self.home / "simple_auth_manager_passwords.json.generated").write_text(json.dumps(USERS))
        self.env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,viewer:viewer",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": airflow_metadata_url(pg, metadata_db),
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__BASE_URL": self.url,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            # Separate processes must agree on the secret that signs the task tokens (standalone shares one).
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "PRODCLONE_MASKING_KEY": KEY,
            **(env or {}),
        }
        for k in ("AIRFLOW__CORE__UNIT_TEST_MODE", "AIRFLOW_CONFIG"):  # the in-process DAG tests' settings
            self.env.pop(k, None)

    def start(self, name: str, *args: str) -> subprocess.Popen:
        """``airflow *args`` as a process group leader, its output in ``<home>/<name>.log``."""
        with open(self.home / f"{name}.log", "a") as log:
            proc = subprocess.Popen(["airflow", *args], env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True, cwd=self.home)
        self.procs[name] = proc
        return proc

    def run(self, *args: str) -> None:
        with open(self.home / "commands.log", "a") as log:
            subprocess.run(["airflow", *args], env=self.env, stdout=log, stderr=subprocess.STDOUT, check=True,
                           cwd=self.home)

    def wait_healthy(self, components: tuple[str, ...], dag_ids: set[str], timeout: float = 240) -> None:
        """Until /monitor/health says ``components`` are healthy and the dag-processor has serialised
        ``dag_ids``; fails early, with the log to read, when a process exits."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"airflow {name} exited ({proc.returncode}); see {self.home / name}.log")
            health = get_json(f"{self.url}/api/v2/monitor/health") or {}
            if all(health.get(k, {}).get("status") == "healthy" for k in components) and dag_ids <= self.dag_ids():
                return
            time.sleep(2)
        raise RuntimeError(f"Airflow did not become healthy in {timeout:.0f}s; see the logs in {self.home}")

    def dag_ids(self) -> set[str]:
        tok = token(self.url)
        body = get_json(f"{self.url}/api/v2/dags?dag_id_pattern=prodclone", tok) if tok else None
        return {d["dag_id"] for d in (body or {}).get("dags", [])}

    def stop(self, name: str, kill: bool = False) -> None:
        """Stop one process and everything under it; ``kill``: SIGKILL at once, as a machine that dies."""
        proc = self.procs.pop(name)
        if kill:
            tree = _tree(proc.pid)
            for p in tree:
                with contextlib.suppress(psutil.NoSuchProcess):
                    p.kill()
            psutil.wait_procs(tree, timeout=10)
        else:
            stop_process_tree(proc.pid, timeout=20)
        proc.wait(10)

    def close(self) -> None:
        for name in list(self.procs):
            self.stop(name)


def _tree(pid: int) -> list[psutil.Process]:
    """The process group led by ``pid`` and every descendant of its members: Airflow's task runners move
    into process groups of their own, so a kill of the group alone would leave them running."""
    procs = set()
    for p in psutil.process_iter():
        try:
            if os.getpgid(p.pid) == pid:
                procs.add(p)
        except (OSError, psutil.NoSuchProcess):
            pass
    for p in list(procs):
        with contextlib.suppress(psutil.NoSuchProcess):
            procs |= set(p.children(recursive=True))
    return list(procs)


def running_in(stack: AirflowStack, name: str, ti_id: str) -> bool:
    """True when the task instance ``ti_id`` runs under process ``name`` (its runner's title holds the id)."""
    proc = stack.procs.get(name)
    if proc is None:
        return False
    for p in _tree(proc.pid):
        try:
            if ti_id in " ".join(p.cmdline()):
                return True
        except psutil.NoSuchProcess:
            pass
    return False


class Redis:
    """A redis-server of the test's own on a free port (never a shared one), keeping nothing on disk."""

    def __init__(self, workdir: Path):
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (Debian: apt-get install redis-server)")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = subprocess.Popen([binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", str(workdir)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.2)
        self.close()
        raise RuntimeError("redis-server did not answer PING in 30s")

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def celery_env(redis: Redis) -> dict:
    """CeleryExecutor through ``redis`` (tasks) and the metadata DB (results)."""
    return {"AIRFLOW__CORE__EXECUTOR": "CeleryExecutor", "AIRFLOW__CELERY__BROKER_URL": redis.url,
            "AIRFLOW__API__WORKERS": "1"}


def start_celery(stack: AirflowStack, workers: int, concurrency: int) -> None:
    """Migrate, then scheduler, dag-processor, api-server and ``workers`` Celery workers; returns when healthy."""
    stack.run("db", "migrate")
    for name in ("scheduler", "dag-processor", "api-server"):
        stack.start(name, name)
    for i in range(1, workers + 1):
        start_worker(stack, f"worker{i}", concurrency)
    stack.wait_healthy(("metadatabase", "scheduler", "dag_processor"), {"prodclone_export"})


def start_worker(stack: AirflowStack, name: str, concurrency: int) -> None:
    # --skip-serve-logs: the log server's fixed port would clash between workers on one machine.
    stack.start(name, "celery", "worker", "--concurrency", str(concurrency), "--celery-hostname", f"{name}@%h",
                "--skip-serve-logs", "--without-gossip", "--without-mingle")


@contextlib.contextmanager
def celery_export(pg: str, home: Path, source: str, *, workers: int, concurrency: int, split_rows: int,
                  env: dict | None = None, local_settings: str | None = None):
    """prodclone_export in replica_paused mode reading ``source`` (a replica), on a CeleryExecutor deployment
    under ``home`` with ``workers`` workers: a base database and clone registry of its own on ``pg``, file://
    storage in ``home``/store (every worker is on this machine), manual runs only, the DAG unpaused.
    ``local_settings``: an airflow_local_settings.py (cluster policies). Yields the stack, with ``api`` (an
    AirflowAPI as admin), ``base`` (its DSN) and ``store``; afterwards stops every process and drops what it
    made on ``pg``."""
    from prodclone.airflow_api import AirflowAPI
    from prodclone.db import with_dbname
    from prodclone.devpg import airflow_conn_json

    tag = uuid.uuid4().hex[:8]
    store, registry, base_db, metadata_db = home / "store", f"pct_celreg_{tag}", f"pct_celbase_{tag}", f"pct_airflow_{tag}"
    (home / "prodclone.yaml").write_text(
        f"source:\n  mode: replica_paused\n  split_rows: {split_rows}\nstorage:\n  url: file://{store}\n"
        f"export:\n  schedule: null\nclones:\n  registry_database: {registry}\n")
    if local_settings:
        (home / "config").mkdir(exist_ok=True)
        (home / "config" / "airflow_local_settings.py").write_text(local_settings)
    redis = Redis(home)
    stack = None
    try:
        stack = AirflowStack(home, pg, metadata_db, env={
            **celery_env(redis),
            "AIRFLOW_CONN_PRODCLONE_SOURCE": airflow_conn_json(source),
            "AIRFLOW_CONN_PRODCLONE_BASE": airflow_conn_json(with_dbname(pg, base_db)),
            "PRODCLONE_CONFIG": str(home / "prodclone.yaml"),
            **(env or {})})
        start_celery(stack, workers, concurrency)
        stack.api = AirflowAPI(stack.url, username="admin", password=USERS["admin"])
        stack.api.ensure_unpaused("prodclone_export", unpause=True)
        stack.base, stack.store = with_dbname(pg, base_db), store
        yield stack
    finally:
        if stack is not None:
            stack.close()
        redis.close()
        drop_made(pg, base_db, registry, metadata_db)


def drop_made(pg: str, base_db: str, registry: str, metadata_db: str) -> None:
    """The base, its snapshots (template databases whose comment names the base), the registry, Airflow's DB."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(pg, autocommit=True) as c:
        snaps = [r[0] for r in c.execute("SELECT datname FROM pg_database WHERE shobj_description(oid, 'pg_database') "
                                         "LIKE %s", (f"%base={base_db};%",))]
        for db in (*snaps, base_db, f"{base_db}__staging", f"{base_db}__previous", registry, metadata_db):
            c.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))


def worker_ready(stack: AirflowStack, name: str, timeout: float = 120) -> None:
    """Until Celery worker ``name`` logs that it is ready to take tasks."""
    deadline = time.monotonic() + timeout
    while b" ready." not in (stack.home / f"{name}.log").read_bytes():
        if stack.procs[name].poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"Celery {name} did not get ready; see {stack.home / name}.log")
        time.sleep(1)


def run_export(stack: AirflowStack, run_id: str, timeout: float, while_running=None) -> dict:
    """Trigger prodclone_export as ``run_id`` and wait for it to finish, calling ``while_running()`` about
    twice a second meanwhile; returns the run."""
    stack.api.trigger("prodclone_export", run_id, {})
    deadline = time.monotonic() + timeout
    while (run := stack.api.run("prodclone_export", run_id))["state"] not in ("success", "failed"):
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_id} still {run['state']} after {timeout:.0f}s; logs in {stack.home}")
        if while_running:
            while_running()
        time.sleep(0.5)
    return run
