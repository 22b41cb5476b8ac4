"""prodclone_teardown: remove environments past their TTL, and old snapshots.

Hourly (clones.teardown_schedule): every environment past its expiry, every
failed restore and every clone stuck half-made is removed: its database,
role, secret and registry entry. Trigger it with `env` to remove one now.
Then snapshots beyond clones.keep_snapshots are pruned, never one that a
live environment still uses. Only what prodclone's registry created is ever
removed.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, dag, get_current_context, task

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
        from prodclone.drivers.base import CloneError

        _, driver = af.config_and_driver()
        params = get_current_context()["params"]
        env = params.get("env")
        with af.fail_fast():
            if env:
                if env not in {e.name for e in driver.environments()}:
                    if params.get("missing_ok"):
                        print(f"{env} is already gone; nothing to do")
                        return []
                    raise CloneError(f"{env} is not in prodclone's registry; nothing to tear down "
                                     f"(prodclone removes only what it created)")
                return [{"env": env, "reason": "requested"}]
            return [{"env": name, "reason": reason} for name, reason in driver.due_for_teardown()]

    @task(multiple_outputs=False, max_active_tis_per_dagrun=4)
    def teardown_env(item: dict) -> dict:
        import dataclasses

        from prodclone.airflow import support as af
        from prodclone.lifecycle import hook_env, run_hooks

        cfg, driver = af.config_and_driver()
        env = {e.name: e for e in driver.environments()}.get(item["env"])
        profile = cfg.profiles.get(env.profile) if env else None  # a profile may have left the config since
        if env and env.status == "ready" and profile and profile.pre_teardown:
            try:  # a failing hook must not keep an expired env alive
                run_hooks("pre_teardown", profile.pre_teardown,
                          hook_env(dataclasses.asdict(driver.connection(env.name)), env.as_dict()))
            except Exception as exc:
                print(f"WARNING: {exc}; tearing down anyway")
        with af.fail_fast():
            removed = driver.teardown(item["env"], reason=item["reason"])
        print(f"{removed.env} ({removed.reason}): removed " + ", ".join(removed.objects))
        return dataclasses.asdict(removed)

    @task(trigger_rule="all_done")  # prune even if one teardown failed: pruning is safe on its own
    def prune_snapshots() -> list[str]:
        from prodclone.airflow import support as af

        cfg, driver = af.config_and_driver()
        pruned = driver.prune_snapshots(cfg.keep_snapshots)
        print(f"pruned {len(pruned)} snapshot(s): {', '.join(pruned) or 'none'}")
        return pruned

    @task(multiple_outputs=False, trigger_rule="none_failed")  # fails the run (upstream_failed) when any teardown failed
    def summary(pruned: list[str]) -> dict:
        removed = get_current_context()["ti"].xcom_pull(task_ids="teardown_env") or []
        removed = [r for r in ([removed] if isinstance(removed, dict) else removed) if r]
        print(f"removed {len(removed)} environment(s): {', '.join(r['env'] for r in removed) or 'none'}; "
              f"pruned {len(pruned)} snapshot(s)")
        return {"environments": [r["env"] for r in removed], "snapshots": pruned}

    removed = teardown_env.expand(item=due())
    pruned = prune_snapshots()
    removed >> pruned
    removed >> summary(pruned)


prodclone_teardown()
