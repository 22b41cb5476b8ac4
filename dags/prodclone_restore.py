"""prodclone_restore: clone the base snapshot into a `preview-*` or `loadtest-*` environment.

Trigger it from the UI form or the REST API (`POST /api/v2/dags/prodclone_restore/dagRuns`).

resolve (check the request) -> clone (snapshot -> env, own role and password)
-> wait_clone (a Velero restore, waited for in the triggerer) -> post_restore
(the profile's SQL hooks, then ready) -> lifecycle_hooks (the profile's
on_restored commands) -> connection_info.

Re-triggering for an env that exists and is healthy changes nothing and
reports its connection again; `replace: true` re-clones from the newest
snapshot. The password is never printed: it is in the Airflow Variable
`prodclone_env_<env>_dsn` (the full connection URL).
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta

from airflow.sdk import Param, dag, get_current_context, task

from prodclone import clone_tasks
from prodclone.airflow.alerts import on_failure
from prodclone.airflow.operators import WaitForClone
from prodclone.config import load_config
from prodclone.drivers.base import ENV_PATTERN, MAX_NAME, SNAPSHOT_PATTERN, Environment, RestoreRequest

CFG = load_config()  # the form's bounds come from the profiles

# Airflow's trigger form opens only its default section ("Run Parameters", for params without a
# `section`); the environment's fields go there, so the form opens on them. The rest stay folded.


PARAMS = {
    "env": Param(None, type=["null", "string"], pattern=ENV_PATTERN, maxLength=MAX_NAME, title="Environment name",
                 description="preview-<name> or loadtest-<name>: lowercase letters, digits and dashes, at most 63 "
                             "characters. Leave empty to use <profile>-pr-<PR>."),
    "pr": Param(None, type=["null", "integer"], minimum=1, title="Pull request",
                description="The PR this environment is for; names it when Environment name is empty."),
    "profile": Param("preview", type="string", enum=list(CFG.profiles), title="Profile",
                     values_display={name: p.title for name, p in CFG.profiles.items()},
                     description="Lifetime bounds, post-restore hooks and resources (include/prodclone.yaml)."),
    "ttl_hours": Param(None, type=["null", "integer"], minimum=1, maximum=CFG.max_ttl_hours, title="Lifetime (hours)",
                       description="Empty = the profile's default. Maximum: "
                                   + ", ".join(f"{n} {p.max_ttl_hours}h" for n, p in CFG.profiles.items()) + ".",
                       section="Lifetime"),
    "snapshot": Param("latest", type="string", pattern=SNAPSHOT_PATTERN, title="Snapshot",
                      description="`latest` (the newest good one) or a snapshot id: snap-20261121-0200-3f2a9c (postgres "
                                  "driver), prodclone-prodclone-base-202611210200-3f2a9c (velero driver).",
                      section="Data"),
    "replace": Param(False, type="boolean", title="Replace",
                     description="Re-clone an existing environment from the newest snapshot (its data is lost).",
                     section="Data"),
    "requested_by": Param(None, type=["null", "string"], maxLength=200, title="Requested by",
                          description="Who asked (defaults to the triggering user).", section="Audit"),
}


@dag(
    dag_id="prodclone_restore",
    schedule=None,  # UI form and REST API only; params are validated at trigger time
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=8,  # different envs clone in parallel; one env is serialised by the driver's lock
    params=PARAMS,
    default_args={"retries": 2, "retry_delay": timedelta(seconds=20), "on_failure_callback": on_failure},
    tags=["prodclone"],
    doc_md=__doc__,
)
def prodclone_restore():
    @task(multiple_outputs=False)
    def resolve() -> dict:
        """Check the request against the profile (TTL bounds, name) before anything is touched."""
        from prodclone.airflow import support as af
        from prodclone.restore_request import resolve_request

        ctx = get_current_context()
        with af.fail_fast():
            user = getattr(ctx["dag_run"], "triggering_user_name", None)
            return dataclasses.asdict(resolve_request(dict(ctx["params"]), load_config(), user))

    @task(multiple_outputs=True)  # wait_clone takes its "name"; the next tasks take the whole env
    def clone(request: dict) -> dict:
        from prodclone.airflow import support as af

        _, driver = af.config_and_driver()
        with af.fail_fast():
            return driver.begin_restore(RestoreRequest(**request), get_current_context()["run_id"]).as_dict()

    @task(multiple_outputs=False)
    def post_restore(env: dict) -> dict:
        """The profile's post_restore_sql (e.g. disable non-test logins), then the env is marked ready."""
        from prodclone.airflow import support as af

        _, driver = af.config_and_driver()
        with af.fail_fast():
            return driver.finish_restore(env["name"], env["run_id"]).as_dict()

    @task(multiple_outputs=False)
    def lifecycle_hooks(env: dict) -> int:
        """The profile's on_restored commands (e.g. comment on the PR); skipped when the env already existed."""
        from prodclone.airflow import support as af

        cfg, driver = af.config_and_driver()
        with af.fail_fast():
            return clone_tasks.on_restored(cfg, driver, Environment.from_dict(env), get_current_context()["run_id"])

    @task(multiple_outputs=False)
    def connection_info(env: dict) -> dict:
        """Where the clone answers, and how old its data is; never the password (see the secret's location)."""
        from prodclone.airflow import support as af

        cfg, driver = af.config_and_driver()
        with af.fail_fast():
            return clone_tasks.connection_report(cfg, driver, Environment.from_dict(env),
                                                 get_current_context()["run_id"])

    request = resolve()
    cloned = clone(request)
    # Velero restores run one at a time: the pool (1 slot, counting deferred tasks) makes that queue visible.
    wait = WaitForClone(task_id="wait_clone", what="restore", name=cloned["name"],
                        **({"pool": CFG.velero.pool} if CFG.driver == "velero" else {}))
    ready = post_restore(cloned)
    wait >> ready
    hooks = lifecycle_hooks(ready)
    hooks >> connection_info(ready)


prodclone_restore()
