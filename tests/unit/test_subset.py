"""Subsetting's foreign-key closure, on a catalog built in memory: which tables are filtered, the SQL each
gets, and the cases it refuses. (tests/integration/test_export_seed.py runs it against Postgres.)"""

from __future__ import annotations

import pytest

from prodclone.catalog import Catalog, Column, ForeignKey, Table
from prodclone.errors import RulesError
from prodclone.masking.rules import Rules, TableRule
from prodclone.subset import Subsetter


def _table(name: str, *fks: ForeignKey, casts: bool = False) -> Table:
    cols = [Column("id", "integer", True, unique=True)] + [Column(c, "integer", False, source_casts=casts)
                                                            for fk in fks for c in fk.columns]
    return Table(name=name, kind="table", columns=cols, primary_key=["id"], foreign_keys=list(fks))


def _subsetter(tables: list[Table], rules: dict[str, TableRule]) -> Subsetter:
    catalog = Catalog(tables={t.name: t for t in tables}, sequences=[])
    all_rules = {t.name: rules.get(t.name) or TableRule(t.name) for t in tables}
    return Subsetter(catalog, Rules(tables=all_rules, locale="en_US", pool_size=16, digest="", source="<test>"))


USERS = _table("public.users")
ORDERS = _table("public.orders", ForeignKey(["user_id"], "public.users", ["id"]))
ITEMS = _table("public.items", ForeignKey(["order_id"], "public.orders", ["id"]))
COUNTRIES = _table("public.countries")


def _sql(s: Subsetter, table: str) -> str | None:
    clause = s.filter_sql(table)
    return None if clause is None else clause.as_string()


def test_a_filter_follows_foreign_keys_down_the_chain():
    s = _subsetter([USERS, ORDERS, ITEMS, COUNTRIES], {"public.users": TableRule("public.users", where="id < 10")})
    assert [s.is_filtered(t) for t in ("public.users", "public.orders", "public.items", "public.countries")] == \
        [True, True, True, False]
    assert _sql(s, "public.users") == "(id < 10)"
    assert _sql(s, "public.countries") is None
    items = _sql(s, "public.items")
    assert items.startswith('("t0"."order_id" IS NULL OR EXISTS (SELECT 1 FROM ONLY "public"."orders" "t1_0" WHERE '
                            '"t1_0"."id" = "t0"."order_id" AND ("t1_0"."user_id" IS NULL OR EXISTS (SELECT 1 FROM ONLY '
                            '"public"."users" "t2_0" WHERE "t2_0"."id" = "t1_0"."user_id" AND (id < 10))))')


def test_a_skipped_table_keeps_no_row_and_its_referrers_only_null_references():
    s = _subsetter([USERS, ORDERS], {"public.users": TableRule("public.users", skip=True)})
    assert _sql(s, "public.users") == "false"
    assert '"t0"."user_id" IS NULL OR EXISTS' in _sql(s, "public.orders")


def test_a_foreign_key_masked_to_null_is_not_followed():
    rule = TableRule("public.orders", columns={"user_id": {"transform": "null"}})
    s = _subsetter([USERS, ORDERS], {"public.users": TableRule("public.users", where="id < 10"), "public.orders": rule})
    assert not s.is_filtered("public.orders")
    assert _sql(s, "public.orders") is None


def test_a_where_is_rechecked_and_re_written():
    s = _subsetter([USERS], {"public.users": TableRule("public.users", where="ID<10")})
    assert _sql(s, "public.users") == "(id < 10)"
    bad = _subsetter([USERS], {"public.users": TableRule("public.users", where="true) OR (select pg_sleep(1)) IS NULL OR (true")})
    with pytest.raises(RulesError, match="public.users: where"):
        bad.filter_sql("public.users")


def test_a_cycle_through_a_filtered_table_is_refused():
    a = _table("public.a", ForeignKey(["b_id"], "public.b", ["id"]))
    b = _table("public.b", ForeignKey(["a_id"], "public.a", ["id"]))
    s = _subsetter([a, b], {"public.a": TableRule("public.a", where="id < 10")})
    with pytest.raises(RulesError, match=r"public.a: foreign key \(b_id\) -> public.b closes a cycle through a filtered "
                                         r"table.*Mask the FK column with `null`"):
        s.filter_sql("public.b")


def test_a_foreign_key_through_a_source_defined_cast_is_refused():
    orders = _table("public.orders", ForeignKey(["user_id"], "public.users", ["id"]), casts=True)
    s = _subsetter([USERS, orders], {"public.users": TableRule("public.users", where="id < 10")})
    with pytest.raises(RulesError, match="compares columns through a cast running a function the source schema defined"):
        s.filter_sql("public.orders")
