"""prodclone_teardown: remove environments past their TTL, and old snapshots.

Hourly (clones.teardown_schedule): every environment past its expiry, every
failed restore and every clone stuck half-made is removed: its database,
role, secret and registry entry. Trigger it with `env` to remove one now.
Then snapshots beyond clones.keep_snapshots are pruned, never one that a
live environment still uses. Only what prodclone's registry created is ever
removed.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta

from airflow.sdk import Param, dag, get_current_context, task

from prodclone import clone_tasks
from prodclone.airflow.alerts import on_failure
from prodclone.config import load_config
from prodclone.drivers.base import ENV_PATTERN, MAX_NAME

CFG = load_config()


@dag(
    dag_id="prodclone_teardown",
    schedule=CFG.teardown_schedule,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,  # one sweep at a time; a manual teardown queues behind it for seconds
    params={
        "env": Param(None, type=["null", "string"], pattern=ENV_PATTERN, maxLength=MAX_NAME, title="Environment",
                     description="Remove this environment now. Empty = remove every expired one."),
        "missing_ok": Param(False, type="boolean", title="Missing is fine",
                            description="Succeed when the environment is already gone (CI's `env down` retries)."),
    },
    default_args={"retries": 2, "retry_delay": timedelta(seconds=30), "on_failure_callback": on_failure},
    tags=["prodclone"],
    doc_md=__doc__,
)
def prodclone_teardown():
    @task
    def due() -> list[dict]:
        from prodclone.airflow import support as af

        _, driver = af.config_and_driver()
        params = get_current_context()["params"]
        with af.fail_fast():
            return clone_tasks.teardown_targets(driver, params.get("env"), params.get("missing_ok"))

    @task(multiple_outputs=False, max_active_tis_per_dagrun=4)
    def teardown_env(item: dict) -> dict:
        from prodclone.airflow import support as af

        cfg, driver = af.config_and_driver()
        with af.fail_fast():
            return dataclasses.asdict(clone_tasks.teardown(cfg, driver, item["env"], item["reason"]))

    @task(trigger_rule="all_done")  # prune even if one teardown failed: pruning is safe on its own
    def prune_snapshots() -> list[str]:
        from prodclone.airflow import support as af

        cfg, driver = af.config_and_driver()
        pruned = driver.prune_snapshots(cfg.keep_snapshots)
        print(f"pruned {len(pruned)} snapshot(s): {', '.join(pruned) or 'none'}")
        return pruned

    @task(multiple_outputs=False, trigger_rule="none_failed")  # fails the run (upstream_failed) when any teardown failed
    def summary(removed: list[dict], pruned: list[str]) -> dict:
        return clone_tasks.teardown_summary(removed, pruned)

    removed = teardown_env.expand(item=due())
    pruned = prune_snapshots()
    removed >> pruned
    summary(removed, pruned)


prodclone_teardown()
