"""The README's masking workflow runs as written after `make demo`.

The commands are read from the README at test time, so the test fails when
the README drifts from the CLI. They run in bash from a directory laid out as
the repository is after `make demo`: `.venv` (this test's own virtualenv),
`.prodclone/pgdata` (the socket directory of the embedded server; the test
server stands in for it), `.prodclone/masking.key`, and the demo's
"production" database `prodclone_demo_prod` (a copy of the sample)."""

import os
import re
import secrets
import subprocess
import sys

import psycopg
import pytest
from psycopg import sql

from prodclone import devpg
from prodclone.db import dbname_of
from support import ROOT

DEMO_DB = "prodclone_demo_prod"
SECTION = "## Masking rules: the data engineer's workflow"


def readme_workflow() -> str:
    readme = (ROOT / "README.md").read_text()
    assert SECTION in readme, f"the README lost its section {SECTION!r}"
    section = readme.split(SECTION, 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "the masking workflow section has no ```bash block"
    return block.group(1)


@pytest.fixture
def demo_layout(pg, sample_source, tmp_path):
    if os.environ.get("PRODCLONE_PG_DSN"):
        pytest.skip("the README's DSN names the embedded server's socket directory")
    (tmp_path / ".venv").symlink_to(sys.prefix)
    (tmp_path / ".prodclone").mkdir()
    (tmp_path / ".prodclone" / "pgdata").symlink_to(devpg.TEST_DIR)
    key = secrets.token_urlsafe(32)
    (tmp_path / ".prodclone" / "masking.key").write_text(key + "\n")
    ident = sql.Identifier(DEMO_DB)
    with psycopg.connect(pg, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(ident, sql.Identifier(dbname_of(sample_source[0]))))
    yield tmp_path
    with psycopg.connect(pg, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))


def test_the_masking_workflow_runs_as_written(demo_layout, sample_source):
    commands = readme_workflow()
    for step in ("rules scaffold", "rules check", "rules preview"):
        assert f"prodclone {step}" in commands, f"the README's workflow no longer runs `prodclone {step}`"
    env = {k: v for k, v in os.environ.items() if k != "PRODCLONE_MASKING_KEY"}  # the README must set it
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "plugins"), env.get("PYTHONPATH", "")])  # this checkout's engine
    done = subprocess.run(["bash", "-c", "set -euo pipefail\n" + commands], cwd=demo_layout, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"the README's workflow failed:\n{done.stdout}\n{done.stderr}"
    rules = next(demo_layout.glob("*.yaml"), None)
    assert rules is not None, "scaffold --output wrote no rules file in the working directory"
    assert all(f"  public.{table}:" in rules.read_text() for table in sample_source[1])
    assert "rules OK" in done.stdout  # check found no gap in the fresh draft
    assert re.search(r"\(\d+ rows of public\.users; masked columns: email,", done.stdout)  # preview ran with the key
