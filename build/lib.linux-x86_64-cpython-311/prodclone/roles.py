"""Roles prodclone creates on the base server, and how it runs SQL as one of them.

Such a role has no attribute at all and starts NOLOGIN. It is created and
marked in one transaction, so a crash never leaves an unmarked role that
would block its name for good. The role that creates it becomes a member
*of* it (Postgres 16 requires that to hand its objects over, end its
sessions and drop it), never the reverse.

Code another party wrote (the production schema's functions, a clone user's
triggers) runs with the rights of whoever runs it. So prodclone runs such
code *as* the role that owns it, never as the admin role. ``SET ROLE``
would not do: the code can ``RESET ROLE``, and index builds run as the
table's owner anyway. Instead the role logs in with a one-time password.
The password never leaves this process; the server only sees a SCRAM
verifier; the password expires within minutes. Afterwards the role is
NOLOGIN with no password. A crash in between leaves a password that nobody
knows and that soon expires; ``lock_out`` shuts the role again.
"""

from __future__ import annotations

import secrets
from collections.abc import Generator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

from psycopg import sql
from psycopg.rows import tuple_row

from prodclone.db import password_verifier

LOGIN_MINUTES = 10  # how long a one-time password lets its role log in (sessions already open outlive it)


def create_marked_role(admin, name: str, mark: str) -> None:
    """Create ``name`` NOLOGIN with no attribute, with ``mark`` as its comment, in one transaction; the admin
    role becomes a member of it (a superuser needs no membership)."""
    with admin.transaction():
        admin.execute(sql.SQL("CREATE ROLE {} NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION "
                              "NOBYPASSRLS").format(sql.Identifier(name)))
        admin.execute(sql.SQL("COMMENT ON ROLE {} IS {}").format(sql.Identifier(name), sql.Literal(mark)))
        superuser = admin.cursor(row_factory=tuple_row).execute(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[0]
        if not superuser:
            admin.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(sql.Identifier(name)))


def lock_out(admin, name: str) -> None:
    """``name`` can no longer log in: NOLOGIN, and no password left to try."""
    admin.execute(sql.SQL("ALTER ROLE {} NOLOGIN PASSWORD NULL").format(sql.Identifier(name)))


@contextmanager
def login_once(admin, name: str) -> Generator[str]:
    """Let ``name`` log in for LOGIN_MINUTES with a fresh password, yielded to the caller; NOLOGIN again and
    no password afterwards, whatever happened."""
    once = secrets.token_urlsafe(24)
    until = datetime.now(UTC) + timedelta(minutes=LOGIN_MINUTES)
    admin.execute(sql.SQL("ALTER ROLE {} LOGIN PASSWORD {} VALID UNTIL {}").format(
        sql.Identifier(name), sql.Literal(password_verifier(admin, name, once)), sql.Literal(until.isoformat())))
    try:
        yield once
    finally:
        lock_out(admin, name)
