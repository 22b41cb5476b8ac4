"""How a live export cuts its work for several workers: by masking work (rows times masked columns), not rows,
so a small but heavily masked table is spread over the workers and a big one that only keeps is not; the
heaviest units first."""

import psycopg
from test_export_kernel import _files, _lines_by_table

from prodclone import export
from prodclone.catalog import load_catalog
from prodclone.export import plan_units, run_export


def _plan(src, rules, workers):
    with psycopg.connect(src) as conn:
        catalog = load_catalog(conn)
        return catalog, plan_units(conn, catalog, rules, workers=workers)


def test_units_follow_masking_work_not_rows(sample_source, rules, monkeypatch):
    src, counts = sample_source
    monkeypatch.setattr(export, "MIN_UNIT_ROWS", 1)  # the sample is small: let it cut as a big source would
    catalog, units = _plan(src, rules, workers=2)
    parts = {}
    for u in units:
        parts.setdefault(u.table, []).append(u)
    assert counts["order_items"] > 4 * counts["users"]
    # users: 14x the work per row of order_items, which only keeps: cut finer though it has 1/5 of the rows
    assert len(parts["public.users"]) >= 2 * len(parts["public.order_items"]) >= 2
    # events is partitioned with a composite key (id, occurred_at): cut on the key's integer first column
    assert len(parts["public.events"]) > 1 and {u.by for u in parts["public.events"]} == {"key"}
    cost = [catalog.tables[u.table].est_rows * export._mask_weight(rules.tables[u.table]) / len(parts[u.table])
            for u in units]
    assert cost == sorted(cost, reverse=True)
    # One worker: only tables over split_rows are cut, as before.
    _, alone = _plan(src, rules, workers=1)
    assert sorted(u.table for u in alone) == sorted(parts)


def test_units_of_a_heavy_table_read_every_row_once(sample_source, tmp_path, rules, masking_key, monkeypatch):
    src, _ = sample_source
    whole = run_export(src, rules.bind(masking_key), f"file://{tmp_path}/whole")
    monkeypatch.setattr(export, "MIN_UNIT_ROWS", 1)
    split = run_export(src, rules.bind(masking_key), f"file://{tmp_path}/split", jobs=2)
    files = {t["name"]: t["files"] for t in split["tables"]}
    assert len(files["public.users"]) >= 3 and len(files["public.events"]) > 1
    assert {t["name"]: t["rows"] for t in split["tables"]} == {t["name"]: t["rows"] for t in whole["tables"]}
    assert _lines_by_table(_files(tmp_path, "split")) == _lines_by_table(_files(tmp_path, "whole"))
