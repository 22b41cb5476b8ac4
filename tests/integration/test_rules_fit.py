"""`rules check` refuses rules whose masked output cannot load into the column (type, length,
NOT NULL, UNIQUE), and whatever it accepts loads: masked with TableMasker and COPYed into
the same table on a real server, as a password-authenticated non-superuser."""

import json

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from prodclone.catalog import load_catalog
from prodclone.db import dbname_of
from prodclone.errors import UncoveredValue
from prodclone.masking.coverage import check
from prodclone.masking.rewriter import TableMasker
from prodclone.masking.rules import parse_rules
from prodclone.masking.transforms import REGISTRY

KEY = b"f" * 40
# Column types, each with distinct source values valid for it (as PostgreSQL text).
TYPES = {
    "text": ["alice@corp.com", "", "Bob O'Neil"],
    "varchar(4)": ["ab", "", "abcd"],
    "varchar(24)": ["alice.smith@corp.com", "x", "Bob"],
    "varchar(40)": ["alice.smith@corp.com", "x", "Bob"],
    "varchar(64)": ["alice.smith@corp.com", "x", "Bob"],
    "varchar(255)": ["alice.smith@corp.com", "x", "Bob"],
    "char(10)": ["ab", "abcdefghij", "x"],
    "short12": ["alice", "bob", "carol"],  # a domain over varchar(12): the length is the domain's
    "smallint": ["1", "42", "-7"],
    "integer": ["1", "42", "-7"],
    "bigint": ["1", "4200000000", "-7"],
    "numeric(5,2)": ["1.50", "999.99", "-3"],
    "numeric": ["1.5", "12345678901234567890", "-3"],
    "uuid": ["0a0b0c0d-0000-4000-8000-000000000000", "0a0b0c0d-0000-4000-8000-000000000001",
             "0a0b0c0d-0000-4000-8000-000000000002"],
    "inet": ["10.0.0.1", "192.168.1.0/24", "::1"],
    "cidr": ["10.0.0.0/8", "192.168.1.0/24", "::1/128"],
    "date": ["1990-05-14", "2000-01-01", "1850-12-31"],
    "timestamp": ["1990-05-14 10:11:12", "2000-01-01 00:00:00", "1850-12-31 23:59:59.5"],
    "timestamptz": ["1990-05-14 10:11:12+00", "2000-01-01 00:00:00+02", "1850-12-31 23:59:59+00"],
    "boolean": ["true", "false"],
    "text[]": ["{a,b}", "{}", "{alice@corp.com}"],
    "integer[]": ["{1,2}", "{}", "{3}"],
    "jsonb": ['{"email": "a@corp.com"}', '{"email": "b@corp.com", "theme": "dark"}', "{}"],
}
RULES = [spec for cls in REGISTRY.values() for spec in cls.examples] + [
    {"transform": "email", "nulls": "mask"}, {"transform": "faker", "provider": "ipv4"},
    {"transform": "faker", "provider": "ipv4", "args": {"network": True}}, {"transform": "faker", "provider": "name"},
    {"transform": "faker", "provider": "email"}, {"transform": "faker", "provider": "date_of_birth"},
    {"transform": "faker", "provider": "date_time"}, {"transform": "faker", "provider": "random_int"},
    {"transform": "faker", "provider": "uuid4"}, {"transform": "faker", "provider": "first_name", "unique": True},
    {"transform": "hash", "length": 64}, {"transform": "hash", "format": "digits", "length": 18},
    {"transform": "hash", "format": "digits", "length": 25}, {"transform": "hash", "length": 8},
    {"transform": "constant", "value": "x"}, {"transform": "constant", "value": 70000}, {"transform": "redact"},
    {"transform": "template", "template": "{first_name}", "nulls": "mask"},
]


@pytest.fixture
def own_db(base_role, new_db):
    """A database the base role (CREATEDB and CREATEROLE only, password auth) created and owns."""
    name = dbname_of(new_db("pct_fit"))
    with psycopg.connect(base_role(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        dsn = base_role(name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE DOMAIN short12 AS varchar(12)")
    return dsn


def attempt(dsn: str, typ: str, rule: dict, nullable: bool = True, unique: bool = False) -> tuple[str | None, Exception | None]:
    """Make public.src (id, first_name, last_name, c ``typ``) with a few rows, NULLs in c if ``nullable``;
    check ``rule`` on c; then mask and COPY the rows into an identical public.out, whatever check said.
    Returns (check's message for c or None, the load's error or None)."""
    values = TYPES[typ] + ([None, None] if nullable else [])
    cols = {"id": "keep", "first_name": {"transform": "faker", "provider": "first_name"},
            "last_name": {"transform": "faker", "provider": "last_name"}, "c": rule}
    rules = parse_rules(f"version: 1\ntables:\n  public.src:\n    columns: {json.dumps(cols)}\n"
                        "  public.out:\n    skip: true\n")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS src, out")
        conn.execute(sql.SQL("CREATE TABLE src (id int PRIMARY KEY, first_name text, last_name text, c {} {})").format(
            sql.SQL(typ), sql.SQL("" if nullable else "NOT NULL")))  # typ: from TYPES above, not user input
        if unique:
            conn.execute("CREATE UNIQUE INDEX ON src (c)")
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO src VALUES (%s, 'Ann', 'Lee', %s)", list(enumerate(values)))
        conn.execute("CREATE TABLE out (LIKE src INCLUDING INDEXES)")
        catalog = load_catalog(conn)
        problems = [p.message for p in check(catalog, rules.bind(KEY)).problems if p.table == "public.src"]
        masker = TableMasker(catalog.table("public.src"), rules.bind(KEY))
        try:
            with conn.cursor().copy("COPY src TO STDOUT") as copy:
                lines = [masker.mask_line(bytes(r)[:-1]) + b"\n" for r in copy]
            with conn.cursor().copy("COPY out FROM STDIN") as copy:
                copy.write(b"".join(lines))
        except (psycopg.Error, UncoveredValue) as exc:
            return (problems[0] if problems else None), exc
    return (problems[0] if problems else None), None


@pytest.mark.parametrize("typ,rule,unique,expected", [
    ("varchar(40)", {"transform": "email"}, False, "'email' emits values up to"),
    ("varchar(24)", {"transform": "faker", "provider": "user_name", "unique": True}, False, "holds 24"),
    ("text", {"transform": "email", "nulls": "mask"}, True, "UNIQUE and nullable, and nulls: mask"),
    ("inet", {"transform": "faker", "provider": "first_name"}, False, "which a inet column cannot load"),
    ("integer", {"transform": "faker", "provider": "name"}, False, "which a integer column cannot load"),
    ("text[]", {"transform": "faker", "provider": "email"}, False, "which a text[] column cannot load"),
    ("uuid", {"transform": "hash"}, False, "'hash' emits text only, which a uuid column cannot load"),
    ("short12", {"transform": "hash", "length": 13}, False, "short12 holds 12"),
    ("numeric(5,2)", {"transform": "hash", "format": "digits", "length": 8}, False, "holds 3"),
])
def test_check_refuses_what_would_fail_the_seed(own_db, typ, rule, unique, expected):
    """Each of these passed check and export, then failed at seed."""
    problem, load_error = attempt(own_db, typ, rule, unique=unique)
    assert load_error is not None, "the rule must really fail the load, or this test proves nothing"
    assert problem is not None and expected in problem, problem


@pytest.mark.parametrize("typ,rule,nullable,unique", [
    ("varchar(255)", {"transform": "email"}, True, True),
    ("varchar(64)", {"transform": "faker", "provider": "user_name", "unique": True}, True, True),
    ("text", {"transform": "email", "nulls": "mask"}, False, True),
    ("text", {"transform": "email", "nulls": "mask"}, True, False),
    ("inet", {"transform": "faker", "provider": "ipv4"}, True, False),
    ("cidr", {"transform": "faker", "provider": "ipv4"}, True, False),
    ("uuid", {"transform": "hash", "format": "uuid"}, True, True),
    ("integer", {"transform": "hash", "format": "digits", "length": 9}, True, False),
    ("date", {"transform": "faker", "provider": "date_of_birth"}, True, False),
    ("short12", {"transform": "hash", "length": 12}, True, False),
    ("varchar(4)", {"transform": "redact", "keep_end": 1}, True, False),
    ("varchar(40)", {"transform": "template", "template": "{first_name}.{last_name}"}, True, False),
    ("integer", {"transform": "constant", "value": 0}, False, False),
])
def test_check_accepts_what_loads(own_db, typ, rule, nullable, unique):
    assert attempt(own_db, typ, rule, nullable, unique) == (None, None)


@settings(max_examples=60, deadline=None, derandomize=True,  # CI must not go red on a new random draw
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(typ=st.sampled_from(sorted(TYPES)), rule=st.sampled_from(RULES), nullable=st.booleans(), unique=st.booleans())
def test_whatever_check_accepts_loads(own_db, typ, rule, nullable, unique):
    problem, load_error = attempt(own_db, typ, rule, nullable, unique)
    assert problem is not None or load_error is None, f"check accepted {rule} on {typ}, but the load failed: {load_error}"
