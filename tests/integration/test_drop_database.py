"""Dropping a database as the base role (not superuser): sessions it may end are ended, any other session is
waited for and then named, and nothing is dropped that way by force."""

import psycopg
import pytest
from psycopg import sql

from prodclone.db import drop_database, with_dbname
from prodclone.errors import ProdcloneError
from support import drop_role, dsn_as, make_role, rows


def _create(base_role, name: str, member: str) -> None:
    with psycopg.connect(base_role("postgres"), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        admin.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(name), sql.Identifier(member)))


def test_sessions_of_a_member_role_are_ended_and_a_superusers_stops_the_drop(pg, base_role, new_db):
    name = psycopg.conninfo.conninfo_to_dict(new_db("pct_drop"))["dbname"]
    base = psycopg.conninfo.conninfo_to_dict(base_role("postgres"))["user"]
    clone, password = make_role(pg, "pct_dropper", "LOGIN")
    try:
        with psycopg.connect(pg, autocommit=True) as su:
            su.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(clone), sql.Identifier(base)))
        _create(base_role, name, clone)
        held = psycopg.connect(with_dbname(dsn_as(pg, clone, password), name))
        with psycopg.connect(base_role("postgres"), autocommit=True) as admin:
            assert drop_database(admin, name) == 1
        assert rows(pg, "SELECT count(*) FROM pg_database WHERE datname = %s", (name,)) == [(0,)]
        held.close()

        _create(base_role, name, clone)
        superuser_session = psycopg.connect(with_dbname(pg, name))
        with psycopg.connect(base_role("postgres"), autocommit=True) as admin, \
                pytest.raises(ProdcloneError, match=r"still has sessions of a role prodclone may not end"):
            drop_database(admin, name, timeout=1)
        assert rows(pg, "SELECT count(*) FROM pg_database WHERE datname = %s", (name,)) == [(1,)]
        superuser_session.close()
        with psycopg.connect(base_role("postgres"), autocommit=True) as admin:
            assert drop_database(admin, name) == 0
            assert drop_database(admin, name) == 0  # already gone: nothing to do
    finally:
        drop_role(pg, clone)
