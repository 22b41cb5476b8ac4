"""ExportRun: one object per export run, reading what it needs from outside once, and only when a step needs it."""

import json
from collections import Counter

import pytest

from prodclone.db import dbname_of
from prodclone.errors import ProdcloneError
from prodclone.exportrun import ExportRun, run_key
from prodclone.source import Frozen
from support import RULES


def _run(tmp_path, dsn: str, key: bytes, calls: Counter, **kw) -> ExportRun:
    def counted(name, value):
        def get():
            calls[name] += 1
            return value
        return get

    return ExportRun(url=f"file://{tmp_path}/store/exports/r1", root=f"file://{tmp_path}/store", rules_path=RULES,
                     source_dsn=counted("source", dsn), masking_key=counted("key", key),
                     storage_options=counted("s3", None), run_id="manual__2026-11-22T05:00:00+00:00", **kw)


def test_steps_read_the_source_key_and_credentials_once(sample_source, tmp_path, masking_key):
    src, counts = sample_source
    calls = Counter()
    run = _run(tmp_path, src, masking_key, calls, stats_rows=100)
    assert run.check_rules()["masked_columns"] > 0
    assert calls == {"source": 1}  # checking coverage needs neither the key nor storage
    totals = run.export()
    record = run.verify()
    assert totals["rows"] == sum(counts.values()) and record["leak_check"] == "passed"
    assert record["statistics"]["sample_rows"] == 100
    assert calls == {"source": 1, "key": 1, "s3": 1}
    assert src not in repr(run) and masking_key.decode() not in repr(run)


def test_publish_writes_latest_without_the_source_or_key(tmp_path):
    calls = Counter()
    run = _run(tmp_path, "dbname=never", b"k" * 32, calls)
    latest, extra = run.publish({"rows": 7, "masked_columns": 2, "seconds": 1.0},
                                {"database": "base", "tables": 3, "seconds": 2.0},
                                {"id": "snap-1", "rules_sha256": "abc"})
    assert json.loads((tmp_path / "store" / "LATEST").read_text()) == latest
    assert latest["run"] == run_key(run.run_id) == "manual__2026-11-22T05_00_00_00_00"
    assert latest["export"] == run.url and extra["snapshot"] == "snap-1" and extra["tables"] == 3
    assert "source" not in calls and "key" not in calls


def test_replica_paused_on_a_primary_is_refused(sample_source, tmp_path, masking_key):
    run = _run(tmp_path, sample_source[0], masking_key, Counter(), mode="replica_paused")
    with pytest.raises(ProdcloneError, match="not a replica"):
        run.freeze()


def test_frozen_steps_plan_parts_finalize_verify_seed(sample_source, tmp_path, masking_key, new_db):
    """What the frozen shape's tasks call, in order, each on its own ExportRun as each task builds one (the
    sample source is quiescent, which is what a paused replica guarantees)."""
    src, counts = sample_source
    base = new_db("pct_exportrun")
    frozen = Frozen(mode="replica_paused", lsn="0/0").as_dict()

    def task_run() -> ExportRun:
        run = _run(tmp_path, src, masking_key, Counter(), mode="replica_paused", frozen=Frozen(**frozen),
                   split_rows=300, stats_rows=100)
        run.base_dsn = lambda: base
        return run

    units = task_run().plan()
    assert len([u for u in units if u["table"] == "public.users"]) > 1  # key ranges, one mapped task each
    totals = task_run().finalize([task_run().export_part(u) for u in units])
    assert totals["rows"] == sum(counts.values())
    assert task_run().verify()["leak_check"] == "passed"
    seeded = task_run().seed()
    assert seeded["rows"] == sum(counts.values()) and seeded["database"] == dbname_of(base)
