"""The connection URL prodclone prints and stores is one valid libpq URL for every kind of host."""

import psycopg
import pytest

from prodclone.drivers.base import Connection, connection_url

CASES = [
    ("db.internal", "postgresql://preview-pr-42:p%40ss%2Fw%3Ard@db.internal:5433/preview-pr-42"),
    ("::1", "postgresql://preview-pr-42:p%40ss%2Fw%3Ard@[::1]:5433/preview-pr-42"),
    ("/run/my sockets", "postgresql://preview-pr-42:p%40ss%2Fw%3Ard@/preview-pr-42?host=%2Frun%2Fmy%20sockets&port=5433"),
]


@pytest.mark.parametrize(("host", "url"), CASES)
def test_url_round_trips_through_libpq(host, url):
    assert connection_url(host, 5433, "preview-pr-42", "preview-pr-42", "p@ss/w:rd") == url
    parsed = psycopg.conninfo.conninfo_to_dict(url)
    assert parsed == {"host": host, "port": "5433", "dbname": "preview-pr-42", "user": "preview-pr-42",
                      "password": "p@ss/w:rd"}


def test_printed_connection_has_the_same_url_without_the_password():
    info = Connection(env="preview-x", host="/tmp/pg", port=5432, database="preview-x", user="preview-x",
                      secret="Airflow Variable prodclone_env_preview-x_dsn", expires_at="2026-01-01T00:00:00",
                      snapshot="snap-1")
    assert info.url() == "postgresql://preview-x@/preview-x?host=%2Ftmp%2Fpg&port=5432"
    assert info.url() in info.text()
    assert "password" not in psycopg.conninfo.conninfo_to_dict(info.url())
