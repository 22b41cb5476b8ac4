"""Shared fixtures: a real Postgres (``$PRODCLONE_PG_DSN`` or an embedded
throwaway server), the sample production database, a real S3 API (moto's
server) and the masking key. Nothing here mocks the database or storage."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid

import psycopg
import pytest
from psycopg import sql

from prodclone import devpg
from prodclone.db import dbname_of, with_dbname
from prodclone.masking.rules import load_rules
from prodclone.sample import create_sample_database
from support import KEY, RULES, drop_role, dsn_as, make_role

# Only the bootstrap superuser (the tests' own admin) is trusted; every other
# role must log in with its password, so privilege and credential bugs show.
PG_HBA = """\
local all postgres trust
local all all scram-sha-256
host all all 127.0.0.1/32 scram-sha-256
host all all ::1/128 scram-sha-256
"""


def pytest_collection_modifyitems(items):
    """`db` marks every test that needs the test Postgres (through the pg fixture): `make test-fast` leaves
    them out."""
    for item in items:
        if "pg" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.db)


@pytest.fixture(scope="session")
def pg() -> str:
    """DSN of the server's maintenance database (as a superuser): $PRODCLONE_PG_DSN,
    or an embedded server of the tests' own where only that superuser is trusted,
    stopped at the end of the session."""
    embedded = not os.environ.get("PRODCLONE_PG_DSN")
    dsn = with_dbname(devpg.server_dsn(devpg.TEST_DIR), "postgres")
    if embedded:
        (devpg.TEST_DIR / "pg_hba.conf").write_text(PG_HBA)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_reload_conf()")
    yield dsn
    if embedded:
        devpg.stop(devpg.TEST_DIR)


@pytest.fixture(scope="session")
def password_auth(pg) -> None:
    """Skip unless the server refuses a wrong password (an external trust-auth server cannot test privileges)."""
    name, _ = make_role(pg, "pct_probe", "LOGIN")
    try:
        psycopg.connect(dsn_as(pg, name, "wrong"), connect_timeout=5).close()
    except psycopg.OperationalError:
        return
    finally:
        drop_role(pg, name)
    pytest.skip("the test server accepts any password (trust auth); unset PRODCLONE_PG_DSN to test privileges")


@pytest.fixture(scope="session")
def base_role(pg, password_auth):
    """A non-superuser role with only what the base connection needs (CREATEDB, CREATEROLE), logging in
    with a password: ``base_role(dbname)`` is its DSN for ``dbname``."""
    name, password = make_role(pg, "pct_base", "LOGIN", "CREATEDB", "CREATEROLE")
    yield lambda dbname="postgres": dsn_as(pg, name, password, dbname)
    drop_role(pg, name)


@pytest.fixture
def new_db(pg):
    """Factory for unique database names on the test server; all dropped afterwards."""
    made = []

    def make(prefix: str = "pct") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        made.append(name)
        return with_dbname(pg, name)

    yield make
    with psycopg.connect(pg, autocommit=True) as conn:
        for name in made:
            for suffix in ("", "__staging", "__previous"):
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name + suffix)))


@pytest.fixture
def own_db(base_role, new_db):
    """A database the base role (CREATEDB only, password auth) created and owns: its DSN."""
    name = dbname_of(new_db("pct_own"))
    with psycopg.connect(base_role(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return base_role(name)


@pytest.fixture(scope="session")
def sample_source(pg):
    """The sample production database (read-only for tests: copy it to change it)."""
    dsn = with_dbname(pg, f"pct_src_{os.getpid()}")
    counts = create_sample_database(dsn, users=400, replace=True)
    yield dsn, counts
    with psycopg.connect(pg, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname_of(dsn))))


@pytest.fixture
def source_copy(pg, sample_source, new_db):
    """A private copy of the sample database a test may alter."""
    dsn = new_db("pct_copy")
    src = psycopg.conninfo.conninfo_to_dict(sample_source[0])["dbname"]
    with psycopg.connect(pg, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(dbname_of(dsn)), sql.Identifier(src)))
    return dsn


@pytest.fixture(autouse=True)
def masking_key(monkeypatch):
    monkeypatch.setenv("PRODCLONE_MASKING_KEY", KEY)
    return KEY.encode()


@pytest.fixture
def rules():
    return load_rules(RULES)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3 API: moto's standalone server on a local port."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.2)
    else:
        proc.kill()
        raise RuntimeError("moto server did not start")
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def s3(s3_endpoint, monkeypatch):
    """boto3 options for the moto server and a fresh bucket."""
    import boto3

    opts = {"endpoint_url": s3_endpoint, "aws_access_key_id": "test", "aws_secret_access_key": "test",
            "region_name": "us-east-1"}
    for k, v in {"AWS_ENDPOINT_URL": s3_endpoint, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                 "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    bucket = f"pct-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", **opts).create_bucket(Bucket=bucket)
    return opts, bucket


@pytest.fixture(scope="session")
def sample_export(sample_source, tmp_path_factory):
    """One masked, verified export of the sample database (file://), shared read-only."""
    from prodclone.export import run_export, verify_and_record
    from prodclone.storage import open_storage

    url = f"file://{tmp_path_factory.mktemp('export')}/exp"
    rules = load_rules(RULES)
    run_export(sample_source[0], rules.bind(KEY.encode()), url)
    verify_and_record(open_storage(url), sample_source[0], rules.bind(KEY.encode()))
    return url


@pytest.fixture
def clones(pg, base_role, sample_export, new_db):
    """A base seeded by, and a postgres clone driver driving as, the non-superuser ``base_role`` (CREATEDB,
    CREATEROLE, password auth), with a registry of its own. Afterwards every environment, snapshot and the
    registry are removed."""
    import dataclasses

    from prodclone.config import load_config
    from prodclone.drivers.base import MemorySecrets
    from prodclone.drivers.postgres import PostgresDriver
    from prodclone.seed import seed

    base = base_role(psycopg.conninfo.conninfo_to_dict(new_db("pct_cbase"))["dbname"])
    seed(sample_export, base)
    cfg = dataclasses.replace(load_config(), registry_database=f"pct_reg_{uuid.uuid4().hex[:8]}")
    driver = PostgresDriver(base, cfg, MemorySecrets(), busy_wait=5)
    yield driver
    if driver._registry_ready:
        for env in driver.environments():
            driver.teardown(env.name)
        with psycopg.connect(pg, autocommit=True) as conn:
            for (sid,) in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'snap-%%' AND "
                                       "shobj_description(oid, 'pg_database') LIKE %s", (f"%base={psycopg.conninfo.conninfo_to_dict(base)['dbname']};%",)).fetchall():
                conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(sid)))
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(cfg.registry_database)))


@pytest.fixture
def kube(pg, s3_endpoint, tmp_path, monkeypatch, new_db):
    """The fake cluster of tests/fakekube/scenario.py and a velero driver for it; afterwards every API call
    made is checked against include/k8s/rbac.yaml."""
    from fakekube.scenario import build

    k = build(pg, s3_endpoint, tmp_path, monkeypatch, new_db)
    yield k
    k.close()
