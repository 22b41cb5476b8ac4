"""prodclone_extend: push an environment's expiry out, within its profile's maximum.

Triggered by `prodclone env extend` and the Clones page, so every extension
leaves a run (who, when, how long) in Airflow.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import Param, dag, get_current_context, task

from prodclone.airflow.alerts import on_failure
from prodclone.config import load_config
from prodclone.drivers.base import ENV_PATTERN, MAX_NAME

CFG = load_config()


@dag(
    dag_id="prodclone_extend",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params={
        "env": Param(type="string", pattern=ENV_PATTERN, maxLength=MAX_NAME, title="Environment"),
        "hours": Param(24, type="integer", minimum=1, maximum=CFG.max_ttl_hours, title="Hours to add",
                       description="Added to the current expiry; the result stays within the profile's "
                                   "max_ttl_hours from now."),
    },
    default_args={"on_failure_callback": on_failure},
    tags=["prodclone"],
    doc_md=__doc__,
)
def prodclone_extend():
    @task(multiple_outputs=False)
    def extend() -> dict:
        """The cap is the env's own profile's max_ttl_hours; the driver reads it."""
        from prodclone.airflow import support as af

        _, driver = af.config_and_driver()
        params = get_current_context()["params"]
        with af.fail_fast():
            env = driver.extend(params["env"], params["hours"])
        print(f"{env.name} now expires {env.expires_at:%Y-%m-%d %H:%M} UTC")
        return env.as_dict()

    extend()


prodclone_extend()
