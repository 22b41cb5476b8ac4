"""How the base server copies a database: ``clone`` (PostgreSQL 18's ``file_copy_method = clone``) or ``copy``.

With ``clone``, ``CREATE DATABASE … STRATEGY FILE_COPY`` hands each file to ``copy_file_range`` (Linux) or
``copyfile`` (macOS). On a copy-on-write filesystem (XFS with reflink, btrfs, ZFS 2.2+ with block cloning,
APFS) that shares blocks instead of copying them: a clone takes constant time and no extra disk. On other
filesystems the kernel copies the bytes, which is still faster than ``copy`` (no round trip through the
server's buffers) but not thin. A filesystem that cannot do it at all fails the copy, so the probe tries it
on a tiny throwaway database first.

``file_copy_method`` is a user-settable parameter: the base role needs no extra privilege to choose it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from prodclone.faults import fault_point
from prodclone.marker import format_marker, marked_as

CLONE, COPY = "clone", "copy"
PROBE, PROBE_PREFIX = "copy-probe", "prodclone_probe_"
_FICLONE = 0x40049409  # linux/fs.h: _IOW(0x94, 9, int)


@dataclass(frozen=True)
class CopyMethod:
    method: str  # CLONE or COPY
    reason: str  # one line, for the log and the demo


def probe(admin: psycopg.Connection) -> CopyMethod:
    """Which method works on the server ``admin`` (autocommit, a role with CREATEDB) is connected to.
    Leaves the session's ``file_copy_method`` at the method found, so the caller's next copy uses it."""
    version = admin.info.server_version
    if version < 180000:
        return CopyMethod(COPY, f"PostgreSQL {version // 10000} copies files; thin clones need PostgreSQL 18+")
    _drop_leftover_probes(admin)
    name = PROBE_PREFIX + secrets.token_hex(6)
    try:
        admin.execute("SET file_copy_method = clone")
        admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0 STRATEGY FILE_COPY ALLOW_CONNECTIONS false")
                      .format(sql.Identifier(name)))
        admin.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(name),
                                                                    sql.Literal(format_marker(role=PROBE))))
        fault_point("copy-probe-created")
    except psycopg.Error as exc:
        admin.execute("SET file_copy_method = copy")
        return CopyMethod(COPY, f"file_copy_method = clone failed on the base server: {_first_line(exc)}")
    finally:
        with contextlib.suppress(psycopg.Error):
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
    return CopyMethod(CLONE, "file_copy_method = clone: constant-time copies on XFS (reflink), btrfs, ZFS 2.2+ "
                             "or APFS; other filesystems copy the bytes in the kernel")


def use(admin: psycopg.Connection, method: CopyMethod) -> None:
    """Make the session's next ``CREATE DATABASE … STRATEGY FILE_COPY`` use ``method``."""
    if admin.info.server_version >= 180000:
        admin.execute(sql.SQL("SET file_copy_method = {}").format(sql.Literal(method.method)))


def _drop_leftover_probes(admin: psycopg.Connection) -> None:
    """A probe killed before its DROP leaves an empty database behind; the next probe drops it if it is ours:
    marked as a probe and owned by this role. (Killed in the instant between CREATE and COMMENT, it stays
    unmarked, and so stays: an empty database that never accepts connections.)"""
    rows = admin.execute(
        "SELECT datname, shobj_description(oid, 'pg_database') FROM pg_database"
        " WHERE starts_with(datname, %s) AND datdba = (SELECT oid FROM pg_roles WHERE rolname = current_user)"
        " AND NOT datallowconn", (PROBE_PREFIX,)).fetchall()
    for name, comment in rows:
        if marked_as(comment, role=PROBE):
            with contextlib.suppress(psycopg.Error):
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


def shares_blocks(directory: Path) -> bool:
    """Whether the filesystem holding ``directory`` clones files by sharing blocks (the FICLONE ioctl that
    XFS reflink, btrfs and ZFS 2.2+ answer). Only for a server whose data directory this process can see,
    such as the demo's embedded one; a remote server is judged by ``probe`` alone."""
    if not hasattr(fcntl, "ioctl") or not Path(directory).is_dir():
        return False
    with tempfile.NamedTemporaryFile(dir=directory) as src, tempfile.NamedTemporaryFile(dir=directory) as dst:
        src.write(b"prodclone" * 512)
        src.flush()
        try:
            fcntl.ioctl(dst.fileno(), _FICLONE, src.fileno())
        except OSError:
            return False
    return True


def filesystem_of(directory: Path) -> str:
    """The type of the filesystem mounted at or above ``directory`` ("xfs", "ext4", ...), from /proc/mounts."""
    path, best, kind = os.path.realpath(directory), "", "unknown"
    with contextlib.suppress(OSError), open("/proc/mounts") as mounts:
        for line in mounts:
            _dev, point, fstype = line.split()[:3]
            if (path == point or path.startswith(point.rstrip("/") + "/")) and len(point) > len(best):
                best, kind = point, fstype
    return kind


def _first_line(exc: psycopg.Error) -> str:
    return (exc.diag.message_primary or str(exc)).splitlines()[0]
