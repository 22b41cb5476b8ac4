"""Secrets never reach logs (DSN redaction), the whole masking key counts, and exports on disk are private."""

import os
import stat

import pytest
import yaml
from psycopg.conninfo import conninfo_to_dict

from prodclone.db import UNPARSABLE, redact_dsn
from prodclone.masking import keys
from prodclone.masking.rules import build_transform, parse_rules
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


def test_a_bound_masking_shows_no_key_and_derives_what_it_always_did():
    key = b"x" * 40
    masking = parse_rules("version: 1\ntables: {}\n").bind(key)
    for shown in (repr(masking), repr(masking.context()), str(masking)):
        assert "xxxx" not in shown
    # Pinned from before sub-keys went through keys.derive alone: manifests and masked bytes must not change.
    assert masking.fingerprint == keys.fingerprint(key) == "e7d761d39066"
    assert keys.derive(key, "scope").hex() == "d8e78fa76a780001a8b16870fc9f645b6b7cdfaee151aca19a108acb431c7388"
    assert parse_rules("version: 1\ntables: {}\n").bind(b"y" * 40).fingerprint != masking.fingerprint
    # Steps that mask nothing they keep (coverage on its own, the frozen plan) need no key: each gets a fresh one.
    assert masking.rules.throwaway().fingerprint != masking.rules.throwaway().fingerprint


def test_file_exports_are_private(tmp_path, monkeypatch):
    from prodclone.storage import open_storage

    old = os.umask(0o022)
    try:
        storage = open_storage(f"file://{tmp_path}/a/b/exp")
        storage.write_bytes("data/public.users.0000.copy", b"x")
        (tmp_path / "a/b/exp/schema").mkdir(mode=0o755)  # an existing directory is not prodclone's to change
        storage.write_bytes("schema/pre-data.sql", b"y")
    finally:
        os.umask(old)
    for d in ("a", "a/b", "a/b/exp", "a/b/exp/data"):
        assert stat.S_IMODE((tmp_path / d).stat().st_mode) == 0o700, d
    assert stat.S_IMODE((tmp_path / "a/b/exp/schema").stat().st_mode) == 0o755
    for f in ("a/b/exp/data/public.users.0000.copy", "a/b/exp/schema/pre-data.sql"):
        assert stat.S_IMODE((tmp_path / f).stat().st_mode) == 0o600, f


def test_a_planted_symlink_is_not_followed(tmp_path):
    from prodclone.storage import open_storage

    victim = tmp_path / "victim"
    victim.write_text("untouched")
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "manifest.json.partial").symlink_to(victim)
    open_storage(f"file://{tmp_path}/exp").write_bytes("manifest.json", b"{}")
    assert victim.read_text() == "untouched"
    assert (tmp_path / "exp" / "manifest.json").read_bytes() == b"{}"


def test_the_default_storage_is_private_not_tmp(monkeypatch, tmp_path):
    from prodclone.config import DEFAULT_PATH, Config, load_config

    monkeypatch.delenv("PRODCLONE_STORAGE_URL", raising=False)
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow"))
    assert load_config().storage_url == f"file://{tmp_path}/airflow/prodclone/exports"
    monkeypatch.delenv("AIRFLOW_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    assert Config().storage_url == f"file://{tmp_path}/home/.local/share/prodclone/exports"
    assert "url" not in yaml.safe_load(DEFAULT_PATH.read_text())["storage"]  # the shipped config uses the default
