"""Connections with errors a person can act on, never echoing passwords."""

from __future__ import annotations

import psycopg
from psycopg import sql
from psycopg.rows import tuple_row

from prodclone.errors import ConnectionFailed, ProdcloneError
from prodclone.poll import Poll, WaitTimeout

REDACTED = "***"
URL_SCHEMES = ("postgresql://", "postgres://")
UNPARSABLE = "<a connection string that could not be parsed; not shown>"


def _secret(keyword: str) -> bool:
    return "password" in keyword.lower()  # password, sslpassword


def redact_dsn(dsn: str) -> str:
    """The DSN without its passwords, safe for logs and error messages.

    libpq's own parser reads it (keyword or URL form, quoting, escapes, percent-encoding, ``?password=``), so
    what is hidden is exactly what libpq would use as a secret; the result is in keyword form. Input libpq
    cannot parse, and URLs whose userinfo libpq reads in a way that could leave part of a password in another
    field (a raw ``/`` or ``@`` in it), are hidden whole rather than echoed."""
    try:
        params = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.Error:
        return UNPARSABLE
    if dsn.lstrip().startswith(URL_SCHEMES) and "@" in dsn:
        visible = [v for k, v in params.items() if not _secret(k)]
        if not {"user", "password"} & params.keys() or any("@" in v for v in visible):
            return UNPARSABLE
    for keyword, value in params.items():
        if _secret(keyword):
            params[keyword] = REDACTED
        elif keyword == "dbname" and ("=" in value or value.startswith(URL_SCHEMES)):  # libpq expands a dbname holding a DSN
            params[keyword] = redact_dsn(value)
    return psycopg.conninfo.make_conninfo(**params)


def connect(dsn: str, *, role: str, autocommit: bool = False, **kwargs) -> psycopg.Connection:
    """Connect to ``dsn``; ``role`` names it in errors ("source", "target", ...)."""
    try:
        return psycopg.connect(dsn, autocommit=autocommit, connect_timeout=10, **kwargs)
    except psycopg.OperationalError as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise ConnectionFailed(
            f"cannot connect to the {role} database {redact_dsn(dsn)}: {reason}. "
            f"Check that the server is up and the credentials are right."
        ) from None


def pin_search_path(conn) -> None:
    """For the rest of the (snapshot) transaction, unqualified names in a rules ``where`` resolve
    to built-ins only: the source schema cannot shadow lower() or = with its own."""
    conn.execute("SET LOCAL search_path = pg_catalog")


# Settings no source can change for prodclone's sessions (a database or role default loses to these):
# row-level security off, so a policy can neither run its code as the exporter nor hide rows without
# an error; standard strings, so a `where` means what pglast parsed (a backslash is not an escape).
# Output formats pinned, whatever the source database's defaults: the maskers parse COPY text as UTF-8
# (the server converts a LATIN1 source), ISO dates, hex bytea and round-trip floats.
_SOURCE_OPTIONS = ("-c row_security=off -c standard_conforming_strings=on -c client_encoding=UTF8 "
                   "-c DateStyle=ISO,MDY -c IntervalStyle=postgres -c TimeZone=UTC -c bytea_output=hex "
                   "-c extra_float_digits=3")


def connect_source(dsn: str, **kwargs) -> psycopg.Connection:
    """A connection to the source that its schema cannot subvert (see _SOURCE_OPTIONS)."""
    options = psycopg.conninfo.conninfo_to_dict(dsn).get("options")
    return connect(dsn, role="source", options=f"{options} {_SOURCE_OPTIONS}" if options else _SOURCE_OPTIONS, **kwargs)


def with_dbname(dsn: str, dbname: str) -> str:
    """The same server and credentials, another database."""
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    params["dbname"] = dbname
    return psycopg.conninfo.make_conninfo(**params)


def catalog_only(dsn: str) -> str:
    """``dsn`` whose sessions resolve unqualified names in ``pg_catalog`` only (then ``pg_temp``, never for
    functions). For prodclone's privileged sessions in databases others can write to: ``postgres`` where PUBLIC
    may create in its public schema (Postgres 14 and older), or a copy of production's schema. There a function
    or operator planted in ``public`` can out-match a built-in called unqualified and run with the role's rights."""
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    params["options"] = " ".join(filter(None, [params.get("options"), "-c search_path=pg_catalog,pg_temp"]))
    return psycopg.conninfo.make_conninfo(**params)


def dbname_of(dsn: str) -> str:
    return psycopg.conninfo.conninfo_to_dict(dsn).get("dbname") or "postgres"


def password_verifier(conn: psycopg.Connection, user: str, password: str) -> str:
    """A SCRAM verifier computed client-side, so the plaintext never reaches the server or its logs."""
    return conn.pgconn.encrypt_password(password.encode(), user.encode(), b"scram-sha-256").decode()


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def drop_database(admin: psycopg.Connection, name: str, timeout: float = 30.0) -> int:
    """Drop database ``name`` as a role that is not superuser; returns the client sessions it ended.

    ``DROP … WITH (FORCE)`` refuses outright when the database has a backend the role may not signal, and an
    autovacuum worker (which has no role) is one: a teardown then failed at random. So: no new connections,
    end the client sessions this role may end, then a plain DROP, which stops autovacuum workers itself;
    a session that is still there (a superuser's) is waited for, then named in the error."""
    ident = sql.Identifier(name)
    cur = admin.cursor(row_factory=tuple_row)  # whatever rows the caller's connection makes
    if not cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
        return 0
    admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(ident))
    ended = cur.execute(
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = %s"
        " AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
        " AND pg_has_role(current_user, usesysid, 'USAGE')", (name,)).fetchone()[0]
    dropping = Poll(f"dropping database {name!r}", timeout=timeout, every=0.25,
                    transient=lambda exc: isinstance(exc, psycopg.errors.ObjectInUse))
    try:
        dropping.run(lambda: admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(ident)) and True)
    except WaitTimeout:
        raise ProdcloneError(f"database {name!r} still has sessions of a role prodclone may not end (a superuser's?) "
                             f"after {timeout:.0f}s; end them and retry") from None
    return ended
