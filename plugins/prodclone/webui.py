"""The Clones page and its JSON API: a FastAPI app that Airflow's api-server
mounts at /prodclone (see plugins/prodclone_plugin.py).

It reads the clone driver's registry (never Airflow's metadata DB for clone
state) and acts only by triggering prodclone's DAGs, so every extension and
teardown leaves a run in Airflow. Airflow's auth decides: reading needs read
access to prodclone_restore, acting needs permission to trigger the DAG.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_dag
from fastapi import Depends, FastAPI, HTTPException, Response
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

from prodclone.config import load_config
from prodclone.drivers.base import CloneError, validate_env_name
from prodclone.freshness import freshness

app = FastAPI(title="prodclone", description="Clones: environments and snapshots from prodclone's registry")
PAGE = Path(__file__).with_name("clones.html")


def _driver():
    from airflow.models.connection import Connection

    from prodclone.airflow_support import clone_driver, dsn_from_connection

    cfg = load_config()
    if cfg.driver == "velero":  # its record is the namespaces: no base DSN needed
        return cfg, clone_driver(cfg)
    return cfg, clone_driver(cfg, dsn_from_connection(Connection.get_connection_from_secrets(cfg.base_conn_id)))


def _can_trigger(user, dag_id: str) -> bool:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails

    return get_auth_manager().is_authorized_dag(method="POST", access_entity=DagAccessEntity.RUN,
                                                details=DagDetails(id=dag_id), user=user)


def _trigger(dag_id: str, conf: dict, user, note: str) -> dict:
    from airflow.api.common.trigger_dag import trigger_dag
    from airflow.models.dag import DagModel
    from airflow.utils.types import DagRunTriggeredByType

    run_id = f"clones-page__{conf['env']}__{datetime.now(UTC):%Y%m%dT%H%M%S%f}"
    run = trigger_dag(dag_id, triggered_by=DagRunTriggeredByType.UI, triggering_user_name=user.get_name(),
                      run_id=run_id, conf=conf, note=note)
    paused = DagModel.get_dagmodel(dag_id).is_paused
    return {"dag_id": dag_id, "run_id": run.run_id, "paused": paused}


@app.get("/clones", response_class=HTMLResponse, include_in_schema=False)
def page() -> str:
    return PAGE.read_text()


@app.get("/api/state", dependencies=[Depends(requires_access_dag("GET", param_dag_id="prodclone_restore"))])
def state(user: GetUserDep) -> dict:
    """Live environments and snapshots, newest first, and the base snapshot's freshness."""
    cfg, driver = _driver()
    try:
        envs, snaps = driver.environments(), driver.snapshots()
    except CloneError as exc:
        raise HTTPException(503, str(exc)) from None
    ready = [s for s in snaps if s.status == "ready"]
    created = {s.id: s.created_at for s in snaps}
    now = datetime.now(UTC)
    rows = []
    for e in envs:
        row = e.as_dict()
        snap_at = created.get(e.snapshot)
        row["snapshot_age_hours"] = round((now - snap_at).total_seconds() / 3600, 2) if snap_at else None
        row["expires_in_seconds"] = int((e.expires_at - now).total_seconds())
        profile = cfg.profiles.get(e.profile)  # a profile may have left the config since
        row["max_ttl_hours"] = profile.max_ttl_hours if profile else cfg.max_ttl_hours
        rows.append(row)
    return {
        "now": now.isoformat(),
        "environments": rows,
        "snapshots": [s.as_dict() for s in snaps],
        "freshness": freshness(ready[0].created_at if ready else None, cfg.schedule),
        "latest_snapshot": ready[0].id if ready else None,
        "can_act": _can_trigger(user, "prodclone_teardown") and _can_trigger(user, "prodclone_extend"),
    }


class ExtendBody(BaseModel):
    hours: int = Field(24, ge=1, le=24 * 365)


def _checked(env: str) -> str:
    try:
        return validate_env_name(env)
    except CloneError as exc:
        raise HTTPException(422, str(exc)) from None


@app.post("/api/environments/{env}/extend",
          dependencies=[Depends(requires_access_dag("POST", DagAccessEntity.RUN, "prodclone_extend"))])
def extend(env: str, body: ExtendBody, user: GetUserDep) -> dict:
    """Triggers prodclone_extend; the run checks the profile's maximum."""
    return _trigger("prodclone_extend", {"env": _checked(env), "hours": body.hours}, user,
                    f"Extend {env} by {body.hours}h from the Clones page")


@app.get("/api/environments/{env}/credentials")
def credentials(env: str, user: GetUserDep, response: Response) -> dict:
    """The clone's connection URL, password included, for users allowed to read its Variable.
    Airflow redacts the Variable in its own API (the key says `dsn`); this is the deliberate way to get it."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import VariableDetails
    from airflow.models.variable import Variable

    from prodclone.airflow_support import VariableSecrets

    key = VariableSecrets.key(_checked(env))
    if not get_auth_manager().is_authorized_variable(method="GET", details=VariableDetails(key=key), user=user):
        raise HTTPException(403, f"you may not read the Variable {key}")
    value = Variable.get(key, default_var=None)
    if value is None:
        raise HTTPException(404, f"no credentials for {env}: it does not exist or is not ready yet")
    response.headers["Cache-Control"] = "no-store"
    return {"env": env, "url": value}


@app.post("/api/environments/{env}/teardown",
          dependencies=[Depends(requires_access_dag("POST", DagAccessEntity.RUN, "prodclone_teardown"))])
def teardown(env: str, user: GetUserDep) -> dict:
    """Triggers prodclone_teardown for this env."""
    return _trigger("prodclone_teardown", {"env": _checked(env)}, user, f"Tear down {env} from the Clones page")
