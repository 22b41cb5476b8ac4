"""Helpers the tests import (conftest modules are for fixtures only: two of
them share the module name `conftest`, so nothing may import from them)."""

from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "include" / "masking" / "rules.yaml"
KEY = "test-key-" + "k" * 40


def rows(dsn: str, sql: str, params=None) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql, params).fetchall()
