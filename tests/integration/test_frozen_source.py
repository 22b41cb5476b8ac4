"""The frozen-source path the DAG maps over workers: plan, units, finalize.

Each unit opens its own connection (as a mapped task on another worker
would) and reads without a shared snapshot, so the source must be frozen.
Here the source is quiescent, which is what a paused replica guarantees;
`replica_paused` itself runs against a real streaming replica in
tests/dags/test_replica_export.py."""

import json

import pytest

from prodclone.export import PLAN, export_frozen_unit, finalize_frozen_export, plan_frozen_export, verify_and_record
from prodclone.seed import seed
from prodclone.storage import open_storage
from support import rows


@pytest.mark.parametrize("compression, suffix", [("none", ".copy"), ("zstd", ".copy.zst")])
def test_plan_units_finalize_matches_single_task_export(sample_source, new_db, tmp_path, rules, masking_key,
                                                        compression, suffix):
    src, counts = sample_source
    url = f"file://{tmp_path}/frozen"
    # split_rows tiny: big tables split into key ranges, like a 100 GB table would.
    units = plan_frozen_export(src, rules, url, mode="replica_paused", overwrite=False, split_rows=300,
                               compression=compression)
    assert len([u for u in units if u["table"] == "public.users"]) > 1
    assert json.loads((tmp_path / "frozen" / PLAN).read_text())["sequences"]
    results = [export_frozen_unit(src, rules.bind(masking_key), url, u) for u in units]
    manifest = finalize_frozen_export(src, rules.bind(masking_key), url, results)
    assert {t["name"].split(".")[1]: t["rows"] for t in manifest["tables"]} == counts
    assert manifest["compression"] == compression
    assert all(f["path"].endswith(suffix) for t in manifest["tables"] for f in t["files"])
    verify_and_record(open_storage(url), src, rules.bind(masking_key))
    target = new_db("pct_frozen")
    seed(url, target)
    assert rows(target, "SELECT count(*), count(DISTINCT email) FROM users")[0] == (counts["users"], counts["users"])


def test_finalize_refuses_when_a_unit_is_missing(sample_source, tmp_path, rules, masking_key):
    from prodclone.errors import ExportError

    src, _ = sample_source
    url = f"file://{tmp_path}/partial"
    units = plan_frozen_export(src, rules, url, mode="replica_paused", overwrite=False)
    results = [export_frozen_unit(src, rules.bind(masking_key), url, u) for u in units[1:]]
    with pytest.raises(ExportError, match="produced no result"):
        finalize_frozen_export(src, rules.bind(masking_key), url, results)
    assert not (tmp_path / "partial" / "manifest.json").exists()
