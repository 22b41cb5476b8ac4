"""prodclone_export: nightly masked export of production into the base.

discover (freeze source) -> check rules (fail closed) -> plan -> export (mapped)
-> finalize manifest -> verify (checksums + leak check) -> seed base
-> snapshot the base (clone driver; a Velero backup is waited for in the
triggerer) -> publish: `LATEST` and the Asset event
"base snapshot" (snapshot id, rows, rules hash).

Thin wiring only: every step is a call into plugins/prodclone.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import AsyncCallback, DeadlineAlert, DeadlineReference, dag, get_current_context, task

from prodclone.airflow.alerts import export_overdue, on_failure
from prodclone.airflow.operators import WaitForClone
from prodclone.airflow.support import BASE_SNAPSHOT
from prodclone.config import load_config

CFG = load_config()  # one small YAML read: the schedule must be known at parse time


def _ctx():
    """Config, export URL for this run, and S3 options: resolved at run time."""
    from prodclone.airflow import support as af

    cfg = load_config()
    run = af.run_key(get_current_context()["run_id"])
    return cfg, f"{cfg.storage_url}/exports/{run}", af.s3_options(cfg), run


@dag(
    dag_id="prodclone_export",
    schedule=CFG.schedule,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,  # one export at a time: they share the base and the storage prefix
    default_args={"retries": 2, "retry_delay": timedelta(minutes=1), "retry_exponential_backoff": 2.0,
                  "on_failure_callback": on_failure},
    # Alert when the nightly run is far past its usual time; restores keep serving the last snapshot meanwhile.
    # Opt-in (export.deadline_minutes): Airflow 3.3.2's dag.test() fails on DAGs with a deadline.
    deadline=DeadlineAlert(reference=DeadlineReference.DAGRUN_QUEUED_AT,
                           interval=timedelta(minutes=CFG.export_deadline_minutes),
                           callback=AsyncCallback(export_overdue, kwargs={"minutes": CFG.export_deadline_minutes}))
    if CFG.export_deadline_minutes else None,
    tags=["prodclone"],
    doc_md=__doc__,
)
def prodclone_export():
    @task(multiple_outputs=False)
    def freeze_source() -> dict:
        from prodclone import source
        from prodclone.airflow import support as af

        cfg, _, _, run = _ctx()
        if cfg.source_mode == "replica_paused":
            return source.pause_replica(af.dsn_for(cfg.source_conn_id)).as_dict()
        if cfg.source_mode == "rds_snapshot":
            from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

            rds = AwsBaseHook(aws_conn_id=cfg.rds.get("aws_conn_id", cfg.aws_conn_id), client_type="rds").conn
            return source.restore_rds_snapshot(rds, cfg.rds, run).as_dict()
        return source.Frozen(mode="live").as_dict()

    @task
    def thaw_source(frozen: dict) -> None:
        from prodclone import source
        from prodclone.airflow import support as af

        cfg, *_ = _ctx()
        if frozen and frozen["mode"] == "replica_paused":
            source.resume_replica(af.dsn_for(cfg.source_conn_id))
        elif frozen and frozen["mode"] == "rds_snapshot":
            from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

            rds = AwsBaseHook(aws_conn_id=cfg.rds.get("aws_conn_id", cfg.aws_conn_id), client_type="rds").conn
            source.delete_rds_instance(rds, frozen["instance"])

    @task(multiple_outputs=False)
    def check_rules(frozen: dict) -> dict:
        """Fail closed: a column no rule covers stops the run here, before any data moves."""
        from prodclone.airflow import support as af
        from prodclone.catalog import load_catalog
        from prodclone.db import connect
        from prodclone.masking.coverage import ensure_covered
        from prodclone.masking.rules import load_rules
        from prodclone.source import Frozen

        cfg, *_ = _ctx()
        with af.fail_fast(), connect(Frozen(**frozen).dsn(af.dsn_for(cfg.source_conn_id)), role="source") as conn:
            report = ensure_covered(load_catalog(conn), load_rules(cfg.rules_path))
        return {"masked_columns": report.masked_columns, "kept_columns": report.kept_columns}

    @task
    def plan(frozen: dict) -> list[dict]:
        from prodclone.airflow import support as af
        from prodclone.export import plan_frozen_export
        from prodclone.masking.rules import load_rules
        from prodclone.source import Frozen

        cfg, url, s3, _ = _ctx()
        if frozen["mode"] == "live":  # an exported snapshot cannot outlive its task: one task, `jobs` workers
            return [{"live": True}]
        with af.fail_fast():
            return plan_frozen_export(Frozen(**frozen).dsn(af.dsn_for(cfg.source_conn_id)), load_rules(cfg.rules_path), url,
                                      mode=frozen["mode"], overwrite=True, s3_options=s3, split_rows=cfg.split_rows)

    @task(multiple_outputs=False, max_active_tis_per_dagrun=8)
    def export_part(unit: dict, frozen: dict) -> dict:
        from prodclone.airflow import support as af
        from prodclone.export import export_frozen_unit, run_export
        from prodclone.masking.rules import load_rules
        from prodclone.source import Frozen

        cfg, url, s3, _ = _ctx()
        dsn = Frozen(**frozen).dsn(af.dsn_for(cfg.source_conn_id))
        with af.fail_fast():
            rules, key = load_rules(cfg.rules_path), af.masking_key(cfg)
            if unit.get("live"):
                manifest = run_export(dsn, rules, key, url, jobs=cfg.jobs, overwrite=True, s3_options=s3)
                return {"manifest_totals": manifest["totals"]}
            return export_frozen_unit(dsn, rules, key, url, unit, s3)

    @task(multiple_outputs=False)
    def finalize(results: list[dict], frozen: dict) -> dict:
        from prodclone.airflow import support as af
        from prodclone.export import finalize_frozen_export
        from prodclone.masking.rules import load_rules
        from prodclone.source import Frozen

        if frozen["mode"] == "live":
            return results[0]["manifest_totals"]
        cfg, url, s3, _ = _ctx()
        dsn = Frozen(**frozen).dsn(af.dsn_for(cfg.source_conn_id))
        manifest = finalize_frozen_export(dsn, load_rules(cfg.rules_path), af.masking_key(cfg), url, list(results), s3)
        return manifest["totals"]

    @task(multiple_outputs=False)
    def verify(frozen: dict) -> dict:
        """Checksums against the manifest, and the leak check on sampled originals; only when both pass is
        the export recorded as verified, which seed_base requires."""
        from prodclone.airflow import support as af
        from prodclone.export import verify_and_record
        from prodclone.masking.rules import load_rules
        from prodclone.source import Frozen
        from prodclone.storage import open_storage

        cfg, url, s3, _ = _ctx()
        with af.fail_fast():
            record = verify_and_record(open_storage(url, s3), Frozen(**frozen).dsn(af.dsn_for(cfg.source_conn_id)),
                                       load_rules(cfg.rules_path), af.masking_key(cfg), sample_size=cfg.leak_sample)
        return {k: record[k] for k in ("files", "rows", "columns_checked", "samples")}

    @task(multiple_outputs=False)
    def seed_base() -> dict:
        from prodclone.airflow import support as af
        from prodclone.seed import seed

        cfg, url, s3, run = _ctx()
        with af.fail_fast():
            r = seed(url, af.dsn_for(cfg.base_conn_id), overwrite=True, s3_options=s3, labels=f"run={run}")
        return {"database": r.database, "tables": r.tables, "rows": r.rows, "seconds": r.seconds}

    @task
    def start_snapshot(totals: dict) -> str:
        """Start the snapshot of the freshly seeded base (a Velero Backup returns before it is done)."""
        from prodclone.airflow import support as af
        from prodclone.export import read_manifest
        from prodclone.storage import open_storage

        cfg, url, s3, _ = _ctx()
        rules_sha = read_manifest(open_storage(url, s3))["rules_sha256"]
        with af.fail_fast():
            return af.clone_driver(cfg).begin_snapshot(get_current_context()["run_id"], export=url,
                                                       rows=totals["rows"], rules_sha256=rules_sha)

    @task(multiple_outputs=False)
    def snapshot_base() -> dict:
        """The finished snapshot, found by run id (its metadata was recorded when it started)."""
        from prodclone.airflow import support as af

        _, driver = af.config_and_driver()
        with af.fail_fast():
            return driver.finish_snapshot(get_current_context()["run_id"]).as_dict()

    @task(multiple_outputs=False, outlets=[BASE_SNAPSHOT])
    def publish(totals: dict, seeded: dict, snap: dict) -> dict:
        """Point `LATEST` at this export and announce the snapshot (Asset event)."""
        import json

        from prodclone.storage import open_storage

        cfg, url, s3, run = _ctx()
        latest = {"export": url, "run": run, "rows": totals["rows"], "seeded": seeded["database"],
                  "snapshot": snap["id"], "rules_sha256": snap["rules_sha256"]}
        open_storage(cfg.storage_url, s3).write_bytes("LATEST", json.dumps(latest).encode())
        get_current_context()["outlet_events"][BASE_SNAPSHOT].extra = {
            "snapshot": snap["id"], "rows": totals["rows"], "tables": seeded["tables"],
            "rules_sha256": snap["rules_sha256"], "export": url, "masked_columns": totals.get("masked_columns"),
            "export_seconds": totals.get("seconds"), "seed_seconds": seeded["seconds"]}
        return latest

    frozen = freeze_source()
    checked = check_rules(frozen)
    p = plan(frozen)
    checked >> p
    parts = export_part.partial(frozen=frozen).expand(unit=p)
    totals = finalize(parts, frozen)
    verified = verify(frozen)
    totals >> verified
    seeded = seed_base()
    verified >> seeded
    started = start_snapshot(totals)
    seeded >> started
    wait = WaitForClone(task_id="wait_snapshot", what="snapshot", name=started)
    snap = snapshot_base()
    wait >> snap
    publish(totals, seeded, snap)
    verified >> thaw_source(frozen).as_teardown(setups=frozen)


prodclone_export()
