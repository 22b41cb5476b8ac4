"""prodclone_export: nightly masked export of production into the base.

live (source.mode: live):
    check_rules -> export (one task, its workers share one snapshot) -> verify -> seed_base
frozen (replica_paused, rds_snapshot):
    freeze_source -> check_rules -> plan -> export_part (mapped) -> finalize -> verify -> seed_base,
    and thaw_source (a teardown: it runs even when the run fails)
then: start_snapshot -> wait_snapshot (deferrable) -> snapshot_base -> publish (`LATEST` and the
Asset event "base snapshot": snapshot id, rows, rules hash).

The shape is chosen here, at parse time, from the config. Thin wiring only: every task is a call into
prodclone.exportrun.ExportRun, built by prodclone.airflow.support.export_run.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import AsyncCallback, DeadlineAlert, DeadlineReference, dag, get_current_context, task

from prodclone.airflow import support as af
from prodclone.airflow.alerts import export_overdue, on_failure
from prodclone.airflow.operators import WaitForClone
from prodclone.airflow.rds import FreezeRdsSource
from prodclone.airflow.support import BASE_SNAPSHOT
from prodclone.config import load_config

CFG = load_config()  # one small YAML read: the schedule and the shape must be known at parse time


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
    @task(task_id="freeze_source", multiple_outputs=False)
    def pause_replica() -> dict:
        return af.export_run().freeze().as_dict()

    @task
    def thaw_source(frozen: dict) -> None:
        af.export_run(frozen).thaw()

    @task(multiple_outputs=False)
    def check_rules(frozen: dict | None = None) -> dict:
        """Fail closed: a column no rule covers stops the run here, before any data moves."""
        with af.fail_fast():
            return af.export_run(frozen).check_rules()

    @task(multiple_outputs=False)
    def export() -> dict:
        with af.fail_fast():
            return af.export_run().export()

    @task
    def plan(frozen: dict) -> list[dict]:
        with af.fail_fast():
            return af.export_run(frozen).plan()

    @task(multiple_outputs=False, max_active_tis_per_dagrun=8)
    def export_part(unit: dict, frozen: dict) -> dict:
        with af.fail_fast():
            return af.export_run(frozen).export_part(unit)

    @task(multiple_outputs=False)
    def finalize(results: list[dict], frozen: dict) -> dict:
        return af.export_run(frozen).finalize(results)

    @task(multiple_outputs=False)
    def verify(frozen: dict | None = None) -> dict:
        """Checksums and the leak check (only when both pass is the export seedable), and the masked columns'
        statistics against the source's (outside bounds: a warning in the record)."""
        with af.fail_fast():
            return af.export_run(frozen).verify(summary=True)

    @task(multiple_outputs=False)
    def seed_base() -> dict:
        with af.fail_fast():
            return af.export_run().seed()

    @task
    def start_snapshot(totals: dict) -> str:
        with af.fail_fast():
            return af.export_run().begin_snapshot(totals["rows"])

    @task(multiple_outputs=False)
    def snapshot_base() -> dict:
        with af.fail_fast():
            return af.export_run().snapshot()

    @task(multiple_outputs=False, outlets=[BASE_SNAPSHOT])
    def publish(totals: dict, seeded: dict, snap: dict) -> dict:
        latest, extra = af.export_run().publish(totals, seeded, snap)
        get_current_context()["outlet_events"][BASE_SNAPSHOT].extra = extra
        return latest

    if CFG.source_mode == "live":  # an exported snapshot cannot outlive its task: one task, `jobs` workers
        frozen = None
        totals = export()
        check_rules() >> totals
    else:
        frozen = FreezeRdsSource(task_id="freeze_source").output if CFG.source_mode == "rds_snapshot" \
            else pause_replica()
        units = plan(frozen)
        check_rules(frozen) >> units
        totals = finalize(export_part.partial(frozen=frozen).expand(unit=units), frozen)
    verified = verify(frozen)
    totals >> verified
    if frozen is not None:
        verified >> thaw_source(frozen).as_teardown(setups=frozen)
    seeded = seed_base()
    verified >> seeded
    started = start_snapshot(totals)
    seeded >> started
    wait = WaitForClone(task_id="wait_snapshot", what="snapshot", name=started)
    snap = snapshot_base()
    wait >> snap
    publish(totals, seeded, snap)


prodclone_export()
