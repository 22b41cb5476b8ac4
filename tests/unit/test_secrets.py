"""Secrets never reach logs (DSN redaction), and the whole masking key counts."""

import pytest
from psycopg.conninfo import conninfo_to_dict

from prodclone.db import UNPARSABLE, redact_dsn
from prodclone.masking import keys
from prodclone.masking.rules import build_transform
from prodclone.masking.transforms import Context

SECRET = "correct horse battery staple"


@pytest.mark.parametrize("dsn, shown", [
    # keyword form: quoting, escapes, spaces around '=', anywhere in the string
    (f"host=db password='{SECRET}' dbname=shop", "host=db"),
    (f"password = '{SECRET}' host=db", "host=db"),
    (r"host=db password='it\'s correct horse' user=app", "user=app"),
    (r"host=db password=correct\ horse\ battery dbname=shop", "dbname=shop"),
    (f"host=db sslpassword='{SECRET}' password=correct", "host=db"),
    (f"dbname='postgresql://app:{SECRET.replace(' ', '%20')}@db/shop'", "app"),  # a DSN inside dbname
    # URL form: userinfo, percent-encoding, query parameters, multiple hosts
    ("postgresql://app:correct%20horse@db:5432/shop", "host=db"),
    ("postgres://app:correct?horse@db/shop", "host=db"),
    ("postgresql://app@db,db2:5433/shop?password=correct+horse&sslmode=require", "sslmode=require"),
    ("postgresql://app@db/shop?pass%77ord=correct%20horse", "user=app"),
    ("postgresql://app:correct:horse@[::1]:5432/shop", "dbname=shop"),
])
def test_every_form_of_password_is_redacted_and_the_rest_kept(dsn, shown):
    out = redact_dsn(dsn)
    for word in ("correct", "horse", "battery", "staple", "it\\'s"):
        assert word not in out, out
    assert shown in out and "***" in out


@pytest.mark.parametrize("dsn", [
    f"host=db password='{SECRET}",  # unterminated quote
    f"{SECRET} host=db",  # not key=value
    "host=db bogus_option=correct",  # libpq does not know the keyword
    "postgresql://app:correct/horse@db/shop",  # a raw '/' in the password: libpq would read a host and port
    "postgresql://app:correct@horse@db/shop",  # a raw '@': part would land in the host
])
def test_what_cannot_be_parsed_is_redacted_whole(dsn):
    assert redact_dsn(dsn) == UNPARSABLE


def test_a_dsn_without_a_password_is_kept():
    dsn = "host=db port=5432 dbname=shop user=app"
    assert conninfo_to_dict(redact_dsn(dsn)) == conninfo_to_dict(dsn)


def test_the_whole_masking_key_counts():
    """Keys differing only after byte 64 used to mask alike and share a fingerprint."""
    a, b = b"k" * 64 + b"-one", b"k" * 64 + b"-two"
    assert keys.fingerprint(a) != keys.fingerprint(b)
    assert keys.derive(a, "scope") != keys.derive(b, "scope")
    for spec in ({"transform": "email"}, {"transform": "hash"}, {"transform": "faker", "provider": "first_name"}):
        masked = [build_transform(spec, Context(key=key), where="t.c")(b"jane.doe@example.com") for key in (a, b)]
        assert masked[0] != masked[1], spec
