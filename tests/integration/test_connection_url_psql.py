"""`psql` connects to the clone with exactly what prodclone prints: the URL in the
connection info (password from the environment) and the stored credentials URL."""

import os
import subprocess
import uuid

import psycopg
import pytest

from prodclone import pgtools
from prodclone.drivers.base import RestoreRequest


def _psql() -> str:
    """The psql shipped next to the pg_dump prodclone would use (the embedded server's, when installed)."""
    found = [p.with_name("psql") for p in pgtools._candidates() if p.with_name("psql").exists()]
    if not found:
        pytest.skip("no psql next to any pg_dump")
    return str(found[0])


def _psql_says(url: str, password: str | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}  # nothing but the URL decides
    if password:
        env["PGPASSWORD"] = password
    out = subprocess.run([_psql(), url, "-XAtc", "SELECT current_user || ' ' || current_database()"], env=env,
                         capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_psql_connects_with_the_printed_url(clones):
    clones.snapshot("url-run")
    env = f"preview-u{uuid.uuid4().hex[:8]}"
    clones.begin_restore(RestoreRequest(env=env, profile="preview", ttl_hours=1, snapshot="latest",
                                        requested_by="pytest"), "r")
    clones.finish_restore(env, "r", ())
    stored = clones.secrets.values[env]  # what `prodclone env credentials` prints
    printed = clones.connection(env).text().split(": ", 1)[1].split(" ", 1)[0]  # the URL in connection_info's line
    assert printed.startswith("postgresql://") and stored.startswith("postgresql://")
    assert _psql_says(stored) == f"{env} {env}"
    assert _psql_says(printed, psycopg.conninfo.conninfo_to_dict(stored)["password"]) == f"{env} {env}"
