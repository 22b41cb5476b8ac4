"""Helpers the tests import (conftest modules are for fixtures only: two of
them share the module name `conftest`, so nothing may import from them)."""

import json
import secrets
import socket
import threading
import uuid
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "include" / "masking" / "rules.yaml"
KEY = "test-key-" + "k" * 40


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rows(dsn: str, sql: str, params=None) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql, params).fetchall()


class WebhookCapture:
    """A local HTTP endpoint standing in for Slack's incoming webhook: records what is posted."""

    def __init__(self):
        posts = self.posts = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                posts.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/services/T000/B000/XXX"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


def make_role(admin_dsn: str, prefix: str, *attributes: str) -> tuple[str, str]:
    """Create a uniquely named role with a random password and ``attributes`` (e.g. "LOGIN", "CREATEDB");
    returns (name, password)."""
    name, password = f"{prefix}_{uuid.uuid4().hex[:8]}", secrets.token_urlsafe(18)
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} " + " ".join(attributes) + " PASSWORD {}").format(
            sql.Identifier(name), sql.Literal(password)))
    return name, password


def drop_role(admin_dsn: str, name: str) -> None:
    """Drop ``name`` and whatever it still owns, in every database of the server, and first the owner roles
    its seeds made (prodclone never drops those itself)."""
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone():
            return
        for (owner,) in conn.execute("SELECT DISTINCT pg_get_userbyid(roleid) FROM pg_auth_members "
                                     "WHERE member = %s::regrole AND shobj_description(roleid, 'pg_authid') "
                                     "LIKE 'managed-by=prodclone; role=owner;%%'", (name,)).fetchall():
            drop_role(admin_dsn, owner)
        # Only where the role owns or holds something (and the maintenance database, for its rights on
        # databases): never run DDL as a superuser in a database a hostile test left behind (an event
        # trigger there would fire as the superuser).
        for (db,) in conn.execute("SELECT current_database() UNION SELECT d.datname FROM pg_shdepend s "
                                  "JOIN pg_database d ON d.oid = s.dbid WHERE d.datallowconn "
                                  "AND s.refobjid = (SELECT oid FROM pg_roles WHERE rolname = %s)", (name,)).fetchall():
            with psycopg.connect(psycopg.conninfo.make_conninfo(admin_dsn, dbname=db), autocommit=True) as c:
                c.execute(sql.SQL("DROP OWNED BY {} CASCADE").format(sql.Identifier(name)))
        for (db,) in conn.execute("SELECT datname FROM pg_database WHERE datdba = (SELECT oid FROM pg_roles "
                                  "WHERE rolname = %s)", (name,)).fetchall():
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(db)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def dsn_as(dsn: str, user: str, password: str, dbname: str | None = None) -> str:
    """``dsn``'s server as ``user`` with ``password`` (and optionally another database)."""
    extra = {"dbname": dbname} if dbname else {}
    return psycopg.conninfo.make_conninfo(dsn, user=user, password=password, **extra)


# -- clones (the postgres driver) ------------------------------------------------------------------------------

HOOK = "UPDATE users SET password_hash = '!disabled' WHERE NOT is_test_account"  # the shipped preview hook


def clone_env() -> str:
    return f"preview-s{uuid.uuid4().hex[:8]}"


def clone_request(env: str, **kw):
    from prodclone.drivers.base import RestoreRequest

    return RestoreRequest(env=env, profile="preview", ttl_hours=24, snapshot="latest", requested_by="pytest", **kw)


def restore(driver, env: str, run: str = "run-1", hooks=(HOOK,), **kw):
    driver.begin_restore(clone_request(env, **kw), run)
    return driver.finish_restore(env, run, hooks)


def clone_url(driver, env: str) -> str:
    """The clone user's own credentials, as the driver stored them."""
    return psycopg.conninfo.make_conninfo(driver.secrets.values[env])


def role_flags(pg: str, name: str):
    """(superuser, can log in, createrole, createdb) of role ``name``, or None."""
    found = rows(pg, "SELECT rolsuper, rolcanlogin, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = %s",
                 (name,))
    return found[0] if found else None


def server_state(pg: str) -> dict:
    """Every role with its attributes and memberships, and every database with its owner, ACL, limit,
    settings and comment: what 'nothing else changed' compares."""
    roles = rows(pg, "SELECT rolname, rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolcanlogin, rolreplication, "
                     "rolbypassrls FROM pg_roles ORDER BY 1")
    members = rows(pg, "SELECT roleid::regrole::text, member::regrole::text, admin_option, inherit_option, set_option "
                       "FROM pg_auth_members ORDER BY 1, 2, 3, 4, 5")
    dbs = rows(pg, "SELECT d.datname, pg_get_userbyid(d.datdba), d.datacl::text, d.datconnlimit, d.datallowconn, "
                   "pg_catalog.shobj_description(d.oid, 'pg_database'), (SELECT setconfig::text FROM pg_db_role_setting s "
                   "WHERE s.setdatabase = d.oid AND s.setrole = 0) FROM pg_database d ORDER BY 1")
    return {"roles": roles, "members": members, "databases": dbs}


def assert_refused(conn, statements: list[str], **names: str) -> None:
    """Each statement (``{name}`` placeholders filled with quoted identifiers) fails with permission denied."""
    import pytest

    idents = {k: sql.Identifier(v) for k, v in names.items()}
    for stmt in statements:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(sql.SQL(stmt).format(**idents))


# -- a streaming replica ----------------------------------------------------------------------------------------

def _as_server_user(*cmd) -> None:
    """Postgres refuses to run as root; the embedded server's own system user runs it then (as for the test server)."""
    import os
    import subprocess

    from prodclone.devpg import SYSTEM_USER

    prefix = ["runuser", "-u", SYSTEM_USER, "--"] if os.geteuid() == 0 else []
    subprocess.run([*prefix, *map(str, cmd)], check=True, capture_output=True)


@contextmanager
def streaming_replica(replica_conf: str = ""):
    """(primary DSN, replica DSN) of a fresh primary and its streaming replica (pg_basebackup -R), from the
    embedded Postgres binaries, on unix sockets; both stopped and removed afterwards. ``replica_conf``:
    more postgresql.conf lines for the replica."""
    import os
    import shutil
    import tempfile

    from prodclone.devpg import SYSTEM_USER
    from prodclone.pgtools import embedded_bin_dir

    if shutil.which("runuser") is None and os.geteuid() == 0:
        import pytest  # (the bench imports this module without pytest)

        pytest.skip("needs runuser to start Postgres as a non-root user")
    bin_, work = embedded_bin_dir(), Path(tempfile.mkdtemp(prefix="pct-replica-"))
    work.chmod(0o755)
    if os.geteuid() == 0:
        shutil.chown(work, SYSTEM_USER)
    ports = {"primary": free_port(), "replica": free_port()}
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
            conf.write(f"port = {ports['replica']}\n{replica_conf}\n")
        _as_server_user(bin_ / "pg_ctl", "-D", work / "replica", "-l", work / "replica.log", "-w", "start")
        started.append("replica")
        dsn = {n: f"host={work} port={p} user=postgres dbname=postgres" for n, p in ports.items()}
        yield dsn["primary"], dsn["replica"]
    finally:
        for name in reversed(started):
            _as_server_user(bin_ / "pg_ctl", "-D", work / name, "-w", "stop", "-m", "fast")
        shutil.rmtree(work, ignore_errors=True)


def replayed(replica_dsn: str, query: str, expected, params=None, timeout: float = 60) -> None:
    """Wait until ``query`` answers ``expected`` on the replica."""
    import time

    deadline = time.time() + timeout
    while True:
        try:
            with psycopg.connect(replica_dsn) as c:
                if c.execute(query, params).fetchone()[0] == expected:
                    return
        except psycopg.OperationalError:  # the database is not on the replica yet
            pass
        if time.time() > deadline:
            raise AssertionError(f"the replica did not replay {query!r} in {timeout:.0f}s")
        time.sleep(0.2)


def replay_state(replica_dsn: str) -> str:
    """paused | pause requested | not paused. Asked again when replay cancels the question (a recovery conflict)."""
    import time

    for _ in range(20):
        try:
            with psycopg.connect(replica_dsn) as c:
                return c.execute("SELECT pg_get_wal_replay_pause_state()").fetchone()[0]
        except psycopg.OperationalError:  # "conflict with recovery", at connect time too
            time.sleep(0.2)
    raise AssertionError("every query on the replica was cancelled by recovery conflicts for 4s")
