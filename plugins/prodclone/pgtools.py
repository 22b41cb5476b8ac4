"""Finding and running PostgreSQL client tools (pg_dump) of a suitable version."""

from __future__ import annotations

import functools
import glob
import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path

from prodclone.db import redact_dsn
from prodclone.errors import ProdcloneError


def _candidates() -> list[Path]:
    found = []
    if os.environ.get("PRODCLONE_PG_BIN"):
        found.append(Path(os.environ["PRODCLONE_PG_BIN"]) / "pg_dump")
    spec = importlib.util.find_spec("pgserver")  # the embedded server's binaries, when installed
    if spec and spec.origin:
        found.append(Path(spec.origin).parent / "pginstall" / "bin" / "pg_dump")
    if shutil.which("pg_dump"):
        found.append(Path(shutil.which("pg_dump")))
    found += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_dump"))]
    return [p for p in found if p.exists()]


@functools.lru_cache
def _version(binary: Path) -> int:
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=True).stdout
    return int(re.search(r"\)\s*(\d+)", out).group(1))


def pg_dump_for(server_version_num: int) -> Path:
    """The newest pg_dump available; it must be at least the server's major."""
    major = server_version_num // 10000
    best = max(_candidates(), key=_version, default=None)
    if best is None or _version(best) < major:
        raise ProdcloneError(
            f"need pg_dump >= {major} for this source server; found "
            f"{[str(p) for p in _candidates()] or 'none'}. Install postgresql-client-{major} or set PRODCLONE_PG_BIN."
        )
    return best


# Lines pg_dump may emit that are psql meta-commands or newer-server settings.
_STRIP = re.compile(r"^(\\restrict |\\unrestrict |SET transaction_timeout\b).*$", re.M)


def dump_schema(dsn: str, section: str, snapshot: str | None, server_version_num: int) -> str:
    """``pg_dump --schema-only --section=<section>`` as SQL runnable through psycopg."""
    cmd = [str(pg_dump_for(server_version_num)), "--schema-only", f"--section={section}", "--no-owner",
           "--no-privileges", "--no-publications", "--no-subscriptions", "--dbname", dsn]
    if snapshot:
        cmd.append(f"--snapshot={snapshot}")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ProdcloneError(f"pg_dump ({section}) of {redact_dsn(dsn)} failed: {proc.stderr.strip()}")
    sql = _STRIP.sub("", proc.stdout)
    if re.search(r"^\\", sql, re.M):
        raise ProdcloneError(f"pg_dump ({section}) produced psql meta-commands prodclone cannot run")
    return sql
