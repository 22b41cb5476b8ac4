"""A small client for Airflow's REST API v2 and prodclone's /prodclone API,
for `prodclone env` in CI. Standard library only, so a CI job needs nothing
but Python to use it."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from prodclone.errors import ProdcloneError
from prodclone.poll import Poll, WaitTimeout

# Exit codes of `prodclone env` (documented in the README).
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_AUTH, EXIT_PAUSED, EXIT_TIMEOUT, EXIT_UNREACHABLE = 0, 1, 2, 3, 4, 5, 6
# The logger prodclone's failure alerts are written to (prodclone/airflow/alerts.py): failure_reason finds
# their "What to do" by it in task logs, old runs' included, so it stays fixed wherever that module lives.
ALERT_LOGGER = "prodclone.alerts"


class ApiError(ProdcloneError):
    """What happened and what to do, with the exit code that says which."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED, status: int | None = None, detail=None):
        super().__init__(message)
        self.exit_code = exit_code
        self.status = status
        self.detail = detail


@dataclass
class Response:
    status: int
    body: object


class AirflowAPI:
    def __init__(self, url: str, *, username: str | None = None, password: str | None = None,
                 token: str | None = None, request_timeout: float = 30.0):
        if not url:
            raise ApiError("no Airflow URL: set PRODCLONE_AIRFLOW_URL or pass --airflow-url", EXIT_USAGE)
        self.url = url.rstrip("/")
        self.username, self.password, self.token = username, password, token
        self.request_timeout = request_timeout

    # -- transport ------------------------------------------------------------

    def _send(self, method: str, path: str, body=None, *, accept: str = "application/json",
              auth: bool = True) -> Response:
        headers = {"Accept": accept}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if auth:
            headers["Authorization"] = f"Bearer {self._token()}"
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.request_timeout) as r:
                raw = r.read()
                status = r.status
        except urllib.error.HTTPError as exc:
            raw, status = exc.read(), exc.code
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ApiError(f"cannot reach Airflow at {self.url}: {reason}. Check PRODCLONE_AIRFLOW_URL and that "
                           f"the api-server is up.", EXIT_UNREACHABLE) from None
        text = raw.decode(errors="replace")
        try:
            parsed = json.loads(text) if accept == "application/json" and text else text
        except json.JSONDecodeError:
            parsed = text
        if status in (401, 403) and auth:
            raise ApiError(f"Airflow refused the request ({status}): " + (
                "the token is invalid or expired; check PRODCLONE_AIRFLOW_TOKEN or the username/password"
                if status == 401 else "this user may not do that; it needs permission to trigger prodclone's DAGs"),
                EXIT_AUTH, status)
        return Response(status, parsed)

    def _token(self) -> str:
        if self.token:
            return self.token
        if not (self.username and self.password):
            raise ApiError("no Airflow credentials: set PRODCLONE_AIRFLOW_TOKEN, or PRODCLONE_AIRFLOW_USERNAME and "
                           "PRODCLONE_AIRFLOW_PASSWORD", EXIT_USAGE)
        r = self._send("POST", "/auth/token", {"username": self.username, "password": self.password}, auth=False)
        if r.status not in (200, 201) or not isinstance(r.body, dict) or "access_token" not in r.body:
            raise ApiError(f"Airflow rejected the username/password for {self.username!r} ({r.status}); check "
                           f"PRODCLONE_AIRFLOW_USERNAME and PRODCLONE_AIRFLOW_PASSWORD", EXIT_AUTH, r.status)
        self.token = r.body["access_token"]
        return self.token

    def _ok(self, r: Response, what: str):
        if r.status >= 400:
            raise ApiError(f"{what} failed ({r.status}): {_detail(r.body)}", EXIT_FAILED, r.status, r.body)
        return r.body

    # -- Airflow REST API v2 ----------------------------------------------------

    def ensure_unpaused(self, dag_id: str, unpause: bool) -> None:
        dag = self._ok(self._send("GET", f"/api/v2/dags/{dag_id}"), f"reading DAG {dag_id}")
        if not dag.get("is_paused"):
            return
        if not unpause:
            raise ApiError(f"DAG {dag_id} is paused, so the run would wait forever. Unpause it in the Airflow UI, "
                           f"or pass --unpause.", EXIT_PAUSED)
        self._ok(self._send("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False}), f"unpausing {dag_id}")

    def trigger(self, dag_id: str, run_id: str, conf: dict, note: str = "") -> tuple[dict, bool]:
        """(run, created). A 409 means the run exists: attach to it (a retried CI job)."""
        body = {"logical_date": None, "dag_run_id": run_id, "conf": conf}
        if note:
            body["note"] = note
        r = self._send("POST", f"/api/v2/dags/{dag_id}/dagRuns", body)
        if r.status == 409:
            return self.run(dag_id, run_id), False
        if r.status in (400, 422):
            first = _detail(r.body).split("\n\n")[0]  # a param error is followed by a jsonschema dump
            raise ApiError(f"Airflow rejected the parameters: {first}", EXIT_USAGE, r.status, r.body)
        return self._ok(r, f"triggering {dag_id}"), True

    def run(self, dag_id: str, run_id: str) -> dict:
        return self._ok(self._send("GET", f"/api/v2/dags/{dag_id}/dagRuns/{_q(run_id)}"), f"reading run {run_id}")

    def retry_failed(self, dag_id: str, run_id: str) -> None:
        """Clear the failed tasks of a finished run so they run again (a CI retry after a failure)."""
        self._ok(self._send("POST", f"/api/v2/dags/{dag_id}/dagRuns/{_q(run_id)}/clear",
                            {"dry_run": False, "only_failed": True}), f"retrying run {run_id}")

    def wait(self, dag_id: str, run_id: str, timeout: float, poll: float = 2.0) -> dict:
        def finished() -> dict | None:
            last[0] = self.run(dag_id, run_id)
            return last[0] if last[0]["state"] in ("success", "failed") else None

        last = [{"state": "queued"}]
        try:
            return Poll(f"run {run_id} of {dag_id}", timeout=timeout, every=poll).run(finished)
        except WaitTimeout:
            raise ApiError(f"run {run_id} of {dag_id} is still {last[0]['state']} after {timeout:.0f}s; it goes on in "
                           f"Airflow: {self.url}/dags/{dag_id}/runs/{_q(run_id)}", EXIT_TIMEOUT) from None

    def xcom(self, dag_id: str, run_id: str, task_id: str):
        r = self._send("GET", f"/api/v2/dags/{dag_id}/dagRuns/{_q(run_id)}/taskInstances/{task_id}/xcomEntries/"
                              f"return_value?deserialize=true")
        value = self._ok(r, f"reading {task_id}'s result").get("value")
        return json.loads(value) if isinstance(value, str) and value[:1] in "{[" else value

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        """Every task instance of the run, mapped ones included."""
        return self._ok(self._send("GET", f"/api/v2/dags/{dag_id}/dagRuns/{_q(run_id)}/taskInstances?limit=1000"),
                        "reading task instances")["task_instances"]

    def failure(self, dag_id: str, run_id: str) -> str:
        """One message: the failing task, its error and what to do (never the log's start-up noise)."""
        tis = self.task_instances(dag_id, run_id)
        failed = [t for t in tis if t["state"] == "failed"]
        if not failed:
            return "failed, but no task did (the run was marked failed by hand or timed out)"
        ti = failed[0]
        index = f"&map_index={ti['map_index']}" if ti.get("map_index", -1) >= 0 else ""
        r = self._send("GET", f"/api/v2/dags/{dag_id}/dagRuns/{_q(run_id)}/taskInstances/{ti['task_id']}/logs/"
                              f"{ti['try_number']}?full_content=true{index}")
        content = r.body.get("content") if r.status < 400 and isinstance(r.body, dict) else None
        reason = failure_reason(content if isinstance(content, list) else [])
        text = f"failed at task {ti['task_id']}: {reason['error']}"
        if reason["what_to_do"]:
            text += f"\nWhat to do: {reason['what_to_do']}"
        return text + f"\nLog: {self.url}/dags/{dag_id}/runs/{_q(run_id)}/tasks/{ti['task_id']}"

    # -- prodclone's API (the Clones page's plugin) -----------------------------

    def credentials(self, env: str) -> str:
        r = self._send("GET", f"/prodclone/api/environments/{env}/credentials")
        if r.status == 404:
            raise ApiError(_detail(r.body), EXIT_FAILED, 404)
        return self._ok(r, f"reading {env}'s credentials")["url"]

    def check(self, action: str, request: dict) -> dict:
        """Ask prodclone (its profiles, its registry) whether a restore or extend would be refused; raises
        with its reason (exit 2) so a mistake never becomes a failed run."""
        r = self._send("POST", f"/prodclone/api/check/{action}", request)
        if r.status == 422 and isinstance(r.body, dict) and isinstance(r.body.get("detail"), str):
            raise ApiError(f"refused before triggering anything: {r.body['detail']}", EXIT_USAGE, r.status)
        return self._ok(r, f"checking the {action} request")

    def state(self) -> dict:
        r = self._send("GET", "/prodclone/api/state")
        if r.status == 404:
            raise ApiError("this Airflow has no /prodclone API: is prodclone's plugin (plugins/prodclone_plugin.py) "
                           "installed?", EXIT_FAILED, 404)
        return self._ok(r, "reading prodclone's environments")


def _q(run_id: str) -> str:
    return urllib.parse.quote(run_id, safe="")


def _detail(body) -> str:
    if isinstance(body, dict) and "detail" in body:
        d = body["detail"]
        if isinstance(d, list):  # FastAPI validation errors
            return "; ".join(f"{'.'.join(str(x) for x in e.get('loc', []))}: {e.get('msg')}" for e in d)
        return d if isinstance(d, str) else json.dumps(d)
    return str(body)[:500]


def failure_reason(records: list) -> dict:
    """From a failed task's structured log records: its error (the exception's first line) and the
    "What to do" of prodclone's failure alert (airflow/alerts.py), when there is one."""
    error, what = None, None
    for rec in records:
        if not isinstance(rec, dict):
            continue
        for err in rec.get("error_detail") or []:
            if isinstance(err, dict) and error is None:  # the outermost exception of the first record with one
                error = str(err.get("exc_value") or err.get("exc_type") or "").strip().split("\n")[0]
        event = str(rec.get("event", ""))
        if rec.get("logger") == ALERT_LOGGER and "What to do: " in event:
            what = event.rsplit("What to do: ", 1)[1].rstrip(".")
        elif error is None and rec.get("level") in ("error", "critical"):
            error = event.split("\n")[0]
    return {"error": error or "no error in the task's log (it may have been killed); see its log in Airflow",
            "what_to_do": what}
