"""The Clones page and its JSON API: a FastAPI app that Airflow's api-server
mounts at /prodclone (see plugins/prodclone_plugin.py).

It reads the clone driver's registry (never Airflow's metadata DB for clone
state) and acts only by triggering prodclone's DAGs, so every extension and
teardown leaves a run in Airflow. Airflow's auth decides: reading needs read
access to prodclone_restore, acting needs permission to trigger the DAG.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path

from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_dag
from fastapi import Depends, FastAPI, HTTPException, Response
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

from prodclone.config import load_config
from prodclone.drivers.base import CloneError, max_extend_hours, validate_env_name
from prodclone.freshness import freshness

app = FastAPI(title="prodclone", description="Clones: environments and snapshots from prodclone's registry")
PAGE = Path(__file__).with_name("clones.html")


def _driver():
    from airflow.models.connection import Connection

    from prodclone.airflow.support import clone_driver, dsn_from_connection

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
    try:
        run = trigger_dag(dag_id, triggered_by=DagRunTriggeredByType.UI, triggering_user_name=user.get_name(),
                          run_id=run_id, conf=conf, note=note)
    except ValueError as exc:  # ParamValidationError: the DAG's own form bounds, without jsonschema's dump
        raise HTTPException(422, str(exc).split("\n\n")[0]) from None
    paused = DagModel.get_dagmodel(dag_id).is_paused
    return {"dag_id": dag_id, "run_id": run.run_id, "paused": paused}


@app.get("/clones", response_class=HTMLResponse, include_in_schema=False)
def page() -> str:
    return PAGE.read_text()


ACTIONS = {"prodclone_extend": "extending", "prodclone_teardown": "tearing down"}  # DAG -> transitional state


def _in_progress() -> dict[str, str]:
    """env -> "extending" / "tearing down" while such a run is queued or running, whoever triggered it."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from sqlalchemy import select

    with create_session() as session:
        runs = session.execute(select(DagRun.dag_id, DagRun.conf).where(
            DagRun.dag_id.in_(ACTIONS), DagRun.state.in_([DagRunState.QUEUED, DagRunState.RUNNING]))).all()
    return {conf["env"]: ACTIONS[dag_id] for dag_id, conf in runs if isinstance(conf, dict) and conf.get("env")}


def _max_ttl(cfg, profile_name: str) -> int:
    profile = cfg.profiles.get(profile_name)  # a profile may have left the config since
    return profile.max_ttl_hours if profile else cfg.max_ttl_hours


def _connection(driver, env) -> dict | None:
    """Where a ready env answers (never the password: `credentials_command` fetches it)."""
    if env.status != "ready":
        return None
    try:
        info = driver.connection(env.name)
    except CloneError:  # torn down or changed since it was listed
        return None
    return {"host": info.host, "port": info.port, "database": info.database, "user": info.user, "url": info.url(),
            "credentials_command": f"prodclone env credentials --env {env.name}"}


@app.get("/api/state", dependencies=[Depends(requires_access_dag("GET", param_dag_id="prodclone_restore"))])
def state(user: GetUserDep) -> dict:
    """Live environments and snapshots, newest first, the base snapshot's freshness and the profiles' limits."""
    cfg, driver = _driver()
    try:
        envs, snaps = driver.environments(), driver.snapshots()
    except CloneError as exc:
        raise HTTPException(503, str(exc)) from None
    ready = [s for s in snaps if s.status == "ready"]
    created = {s.id: s.created_at for s in snaps}
    busy = _in_progress()
    now = datetime.now(UTC)
    rows = []
    for e in envs:
        row = e.as_dict()
        snap_at = created.get(e.snapshot)
        row["snapshot_age_hours"] = round((now - snap_at).total_seconds() / 3600, 2) if snap_at else None
        row["expires_in_seconds"] = int((e.expires_at - now).total_seconds())
        row["max_ttl_hours"] = _max_ttl(cfg, e.profile)
        row["max_extend_hours"] = max_extend_hours(e.expires_at, row["max_ttl_hours"], now) if e.status == "ready" else 0
        row["activity"] = busy.get(e.name)
        row["connection"] = _connection(driver, e)
        rows.append(row)
    return {
        "now": now.isoformat(),
        "environments": rows,
        "snapshots": [s.as_dict() for s in snaps],
        "freshness": freshness(ready[0].created_at if ready else None, cfg.schedule),
        "latest_snapshot": ready[0].id if ready else None,
        "profiles": {n: {"title": p.title, "ttl_hours": p.ttl_hours, "max_ttl_hours": p.max_ttl_hours}
                     for n, p in cfg.profiles.items()},
        "can_act": _can_trigger(user, "prodclone_teardown") and _can_trigger(user, "prodclone_extend"),
        "can_restore": _can_trigger(user, "prodclone_restore"),
    }


class ExtendBody(BaseModel):
    hours: int = Field(24, ge=1, le=24 * 365)


class ExtendCheck(ExtendBody):
    env: str


def _checked(env: str) -> str:
    try:
        return validate_env_name(env)
    except CloneError as exc:
        raise HTTPException(422, str(exc)) from None


def _refuse_extend(env: str, hours: int) -> None:
    """The run's own checks, made before triggering it, so a mistake is a refusal (422), not a failed run."""
    _checked(env)
    cfg, driver = _driver()
    current = next((e for e in driver.environments() if e.name == env), None)
    if current is None:
        raise HTTPException(422, f"{env} does not exist (it may have expired or been torn down); nothing to extend")
    if current.status != "ready":
        raise HTTPException(422, f"{env} is {current.status}, not ready; only a ready environment can be extended")
    cap = _max_ttl(cfg, current.profile)
    allowed = max_extend_hours(current.expires_at, cap, datetime.now(UTC))
    if hours > allowed:
        raise HTTPException(422, f"{env} can be extended by at most {allowed}h now: the {current.profile} profile's "
                                 f"max_ttl_hours is {cap}h from now" + ("" if allowed else "; it is already there"))


def _refuse_restore(params: dict, user) -> dict:
    from prodclone.restore_request import resolve_request

    try:
        req = resolve_request(params, load_config(), user.get_name())
    except CloneError as exc:
        raise HTTPException(422, str(exc)) from None
    return dataclasses.asdict(req)


@app.post("/api/check/restore", dependencies=[Depends(requires_access_dag("GET", param_dag_id="prodclone_restore"))])
def check_restore(params: dict, user: GetUserDep) -> dict:
    """What prodclone_restore would do with these params (the resolved request), or 422 with why it would refuse."""
    return _refuse_restore(params, user)


@app.post("/api/check/extend", dependencies=[Depends(requires_access_dag("GET", param_dag_id="prodclone_extend"))])
def check_extend(body: ExtendCheck) -> dict:
    """200 when prodclone_extend would accept this, else 422 with the limit it would hit."""
    _refuse_extend(body.env, body.hours)
    return {"env": body.env, "hours": body.hours}


@app.post("/api/restore",
          dependencies=[Depends(requires_access_dag("POST", DagAccessEntity.RUN, "prodclone_restore"))])
def restore(params: dict, user: GetUserDep) -> dict:
    """The page's New clone form: checked like the CLI's request, then a prodclone_restore run."""
    req = _refuse_restore(params, user)
    return _trigger("prodclone_restore", {**params, "env": req["env"]}, user,
                    f"New clone {req['env']} from the Clones page")


@app.post("/api/environments/{env}/extend",
          dependencies=[Depends(requires_access_dag("POST", DagAccessEntity.RUN, "prodclone_extend"))])
def extend(env: str, body: ExtendBody, user: GetUserDep) -> dict:
    """Triggers prodclone_extend after the checks it would make (the run makes them again, under a lock)."""
    _refuse_extend(env, body.hours)
    return _trigger("prodclone_extend", {"env": env, "hours": body.hours}, user,
                    f"Extend {env} by {body.hours}h from the Clones page")


@app.get("/api/runs/{dag_id}/{run_id}", dependencies=[Depends(requires_access_dag("GET", DagAccessEntity.RUN))])
def run_outcome(dag_id: str, run_id: str) -> dict:
    """A run the page started: its state and, once failed, the failed task and its error (never the log)."""
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    if dag_id not in (*ACTIONS, "prodclone_restore"):
        raise HTTPException(404, f"{dag_id} is not one of prodclone's DAGs")
    with create_session() as session:
        run = session.scalar(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id))
        if run is None:
            raise HTTPException(404, f"no run {run_id} of {dag_id}")
        out = {"dag_id": dag_id, "run_id": run_id, "state": str(run.state)}
        if run.state == "failed":
            ti = session.scalars(select(TaskInstance).where(TaskInstance.dag_id == dag_id, TaskInstance.run_id ==
                                                            run_id, TaskInstance.state == "failed")).first()
            out.update(_task_failure(ti) if ti else {"task_id": None, "error": "the run was marked failed by hand",
                                                    "what_to_do": None})
    return out


def _task_failure(ti) -> dict:
    import json

    from airflow.utils.log.log_reader import TaskLogReader

    from prodclone.airflow_api import failure_reason

    records = [json.loads(line) for line in TaskLogReader().read_log_stream(ti, ti.try_number, {})]
    return {"task_id": ti.task_id, **failure_reason(records)}


@app.get("/api/environments/{env}/credentials")
def credentials(env: str, user: GetUserDep, response: Response) -> dict:
    """The clone's connection URL, password included, for users allowed to read its Variable.
    Airflow redacts the Variable in its own API (the key says `dsn`); this is the deliberate way to get it."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import VariableDetails
    from airflow.models.variable import Variable

    from prodclone.airflow.support import VariableSecrets

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
