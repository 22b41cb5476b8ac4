"""The export with the compiled kernel: byte-identical to the Python path, reading COPY in blocks, and
splitting big tables (by key, or by pages when there is no integer key) so every worker stays busy."""

import pytest

from prodclone.export import run_export, verify_and_record
from prodclone.masking import kernel
from prodclone.seed import seed
from prodclone.storage import open_storage
from support import rows

pytestmark = pytest.mark.skipif(not kernel.enabled(), reason="the kernel is not built here")


def _files(tmp_path, name: str) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((tmp_path / name / "data").iterdir())}


def _lines_by_table(files: dict[str, bytes]) -> dict[str, list[bytes]]:
    out: dict[str, list[bytes]] = {}
    for name, data in files.items():
        out.setdefault(name.rsplit(".", 2)[0], []).extend(data.splitlines())
    return {t: sorted(lines) for t, lines in out.items()}


def test_the_export_is_byte_identical_with_and_without_the_kernel(sample_source, tmp_path, rules, masking_key, monkeypatch):
    src, _ = sample_source
    assert kernel.libpq_functions() is not None  # here the kernel reads COPY itself, not row by row through psycopg
    fast = run_export(src, rules.bind(masking_key), f"file://{tmp_path}/kernel")
    monkeypatch.setenv(kernel.ENV, "0")
    slow = run_export(src, rules.bind(masking_key), f"file://{tmp_path}/python")
    assert _files(tmp_path, "kernel") == _files(tmp_path, "python")
    assert [t["files"] for t in fast["tables"]] == [t["files"] for t in slow["tables"]]
    assert fast["totals"]["rows"] == slow["totals"]["rows"] > 1000


def test_live_export_splits_big_tables_by_pages_on_the_shared_snapshot(sample_source, new_db, tmp_path, rules,
                                                                                 masking_key):
    src, counts = sample_source
    whole = run_export(src, rules.bind(masking_key), f"file://{tmp_path}/whole")
    split = run_export(src, rules.bind(masking_key), f"file://{tmp_path}/split", jobs=2, split_rows=150)
    files = {t["name"]: t["files"] for t in split["tables"]}
    assert len(files["public.users"]) > 1 and len(files["public.order_items"]) > 1  # page ranges, keys or not
    assert {t["name"]: t["rows"] for t in split["tables"]} == {t["name"]: t["rows"] for t in whole["tables"]}
    # The same rows, masked the same, however the table was cut.
    assert _lines_by_table(_files(tmp_path, "split")) == _lines_by_table(_files(tmp_path, "whole"))
    target = new_db("pct_split")
    verify_and_record(open_storage(f"file://{tmp_path}/split"), src, rules.bind(masking_key))
    seed(f"file://{tmp_path}/split", target)
    assert rows(target, "SELECT count(*) FROM order_items")[0][0] == counts["order_items"]
