"""Load an export into the base Postgres: into a staging database first, then
swap it in, so a failed seed leaves the previous base untouched.

Order: pre-data schema, data (COPY, checksums verified while streaming),
post-data (indexes, constraints, FKs, triggers: built after the load is
faster and checks every FK), sequence values, ANALYZE, then the swap.
"""

from __future__ import annotations

import hashlib
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass

from psycopg import sql

from prodclone.db import connect, dbname_of, quote_ident, with_dbname
from prodclone.errors import ProdcloneError, SeedError
from prodclone.export import read_manifest
from prodclone.storage import open_storage

log = logging.getLogger(__name__)

MARKER = "managed-by=prodclone"
ADMIN_DB = "postgres"


@dataclass
class SeedResult:
    database: str
    tables: int
    rows: int
    seconds: float
    replaced_previous: bool


def is_managed(admin, dbname: str) -> bool | None:
    """None if the database does not exist, else whether prodclone created it."""
    row = admin.execute(
        "SELECT coalesce(shobj_description(oid, 'pg_database'), '') FROM pg_database WHERE datname = %s", (dbname,)
    ).fetchone()
    return None if row is None else MARKER in row[0]


def _drop_if_managed(admin, dbname: str) -> None:
    if is_managed(admin, dbname):
        admin.execute(f"DROP DATABASE {quote_ident(dbname)} WITH (FORCE)")


def _load_table(conn, storage, table: dict) -> int:
    cols = ", ".join(quote_ident(c) for c in table["columns"])
    schema, _, rel = table["name"].partition(".")
    target = f"{quote_ident(schema)}.{quote_ident(rel)}"
    rows = 0
    for f in table["files"]:
        digest = hashlib.sha256()
        with conn.cursor().copy(f"COPY {target} ({cols}) FROM STDIN") as copy:
            for chunk in storage.read_chunks(f["path"]):
                digest.update(chunk)
                copy.write(chunk)
            if digest.hexdigest() != f["sha256"]:
                raise SeedError(f"{f['path']}: checksum mismatch; the export is corrupt. Re-run the export.")
        rows += f["rows"]
    return rows


def seed(storage_url: str, target_dsn: str, *, overwrite: bool = False, s3_options: dict | None = None,
         labels: str = "") -> SeedResult:
    """Seed ``target_dsn``'s database from the export at ``storage_url``."""
    started = time.perf_counter()
    storage = open_storage(storage_url, s3_options)
    manifest = read_manifest(storage)
    base = dbname_of(target_dsn)
    if base in (ADMIN_DB, "template0", "template1"):
        raise SeedError(f"refusing to seed into {base!r}: name a dedicated base database in the target DSN")
    staging = f"{base}__staging"[:63]
    old = f"{base}__previous"[:63]
    admin = connect(with_dbname(target_dsn, ADMIN_DB), role="target", autocommit=True)
    try:
        state = is_managed(admin, base)
        if state is not None and not overwrite:
            raise SeedError(f"database {base!r} already exists; pass overwrite to replace it")
        if state is False:
            raise SeedError(f"database {base!r} exists but prodclone did not create it; refusing to replace it")
        for leftover in (staging, old):
            if is_managed(admin, leftover) is False:
                raise SeedError(f"database {leftover!r} exists but prodclone did not create it; rename or drop it")
            _drop_if_managed(admin, leftover)
        admin.execute(f"CREATE DATABASE {quote_ident(staging)} TEMPLATE template0 ENCODING 'UTF8'")
        # Only prodclone's admin role reads the base; clone roles must not reach it.
        admin.execute(f"REVOKE ALL ON DATABASE {quote_ident(staging)} FROM PUBLIC")
        comment = f"{MARKER}; role=base; export={manifest['created_at']}; rules={manifest['rules_sha256'][:12]}"
        if labels:
            comment += f"; {labels}"
        admin.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(staging), sql.Literal(comment)))
        try:
            rows = _fill(with_dbname(target_dsn, staging), storage, manifest)
        except BaseException:
            _drop_if_managed(admin, staging)
            raise
        _swap(admin, base, staging, old, replace=state is not None)
    finally:
        admin.close()
    return SeedResult(database=base, tables=len(manifest["tables"]), rows=rows,
                      seconds=round(time.perf_counter() - started, 3), replaced_previous=state is not None)


@contextmanager
def _step(what: str, hint: str = ""):
    """Database errors become a SeedError naming the step; prodclone's own errors pass through."""
    try:
        yield
    except ProdcloneError:
        raise
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SeedError(f"{what} failed: {first}{hint}") from exc


def _fill(dsn: str, storage, manifest: dict) -> int:
    conn = connect(dsn, role="staging", autocommit=True)
    try:
        with _step("applying the schema (pre-data)"):
            conn.execute(storage.read_bytes(manifest["schema"]["pre_data"]).decode())
        rows = 0
        with conn.transaction():
            for table in manifest["tables"]:
                if table["files"]:
                    with _step(f"loading {table['name']}"):
                        rows += _load_table(conn, storage, table)
        with _step("building indexes and constraints (post-data)",
                   ". A UNIQUE violation means a masking rule lacks `unique: true`; an FK violation, a subset gap."):
            conn.execute(storage.read_bytes(manifest["schema"]["post_data"]).decode())
        for seq in manifest["sequences"]:
            conn.execute("SELECT setval(%s::regclass, %s, %s)", (seq["name"], seq["last_value"], seq["is_called"]))
        conn.execute("ANALYZE")
        return rows
    finally:
        conn.close()


def _swap(admin, base: str, staging: str, old: str, replace: bool) -> None:
    """Make staging the base in one transaction; the old base is dropped after."""
    if replace:
        admin.execute(f"ALTER DATABASE {quote_ident(base)} ALLOW_CONNECTIONS false")
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (base,))
    try:
        with admin.transaction():
            if replace:
                admin.execute(f"ALTER DATABASE {quote_ident(base)} RENAME TO {quote_ident(old)}")
            admin.execute(f"ALTER DATABASE {quote_ident(staging)} RENAME TO {quote_ident(base)}")
    except Exception as exc:
        if replace:  # the previous base stays in service
            admin.execute(f"ALTER DATABASE {quote_ident(base)} ALLOW_CONNECTIONS true")
        _drop_if_managed(admin, staging)
        raise SeedError(f"swapping the new base in failed; the previous base is untouched: {exc}") from exc
    if replace:
        admin.execute(f"DROP DATABASE {quote_ident(old)} WITH (FORCE)")
