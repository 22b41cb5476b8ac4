"""`prodclone env up|down|list|extend`: previews for CI over Airflow's REST API.

Configuration: flags, else PRODCLONE_AIRFLOW_URL, PRODCLONE_AIRFLOW_TOKEN or
PRODCLONE_AIRFLOW_USERNAME + PRODCLONE_AIRFLOW_PASSWORD, PRODCLONE_TIMEOUT.
Run ids are deterministic (repo, PR/env, commit), so a retried CI job
attaches to its run instead of starting another.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import uuid
from datetime import UTC, datetime

from prodclone.airflow_api import EXIT_FAILED, EXIT_OK, EXIT_USAGE, AirflowAPI, ApiError
from prodclone.drivers.base import CloneError, connection_url, env_for_pr, validate_env_name
from prodclone.errors import ProdcloneError

RESTORE, TEARDOWN, EXTEND = "prodclone_restore", "prodclone_teardown", "prodclone_extend"


def duration(text: str) -> float:
    """'15m', '90s', '1h', '600' -> seconds."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([smh]?)", str(text).strip())
    if not m:
        raise ValueError(f"not a duration: {text!r} (use e.g. 90s, 15m, 1h)")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def _pr_number(text: str) -> int:
    """--pr: a pull request number, so a positive integer; said plainly rather than as a name error later."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a pull request number (a positive integer), not {text!r}")
    return value


def _connection_flags(p) -> None:
    g = p.add_argument_group("Airflow (flags, else the environment variables named)")
    g.add_argument("--airflow-url", default=os.environ.get("PRODCLONE_AIRFLOW_URL"),
                   help="Airflow's base URL, e.g. https://airflow.example.com ($PRODCLONE_AIRFLOW_URL)")
    g.add_argument("--username", default=os.environ.get("PRODCLONE_AIRFLOW_USERNAME"),
                   help="Airflow user ($PRODCLONE_AIRFLOW_USERNAME)")
    g.add_argument("--password", default=os.environ.get("PRODCLONE_AIRFLOW_PASSWORD"),
                   help="its password ($PRODCLONE_AIRFLOW_PASSWORD)")
    g.add_argument("--token", default=os.environ.get("PRODCLONE_AIRFLOW_TOKEN"),
                   help="a ready access token instead of username/password ($PRODCLONE_AIRFLOW_TOKEN)")
    p.add_argument("--json", action="store_true", help="machine-readable output; errors too, as {\"error\": ...}")


def _target_flags(p) -> None:
    p.add_argument("--pr", type=_pr_number, help="the pull request; the env is <profile>-pr-<PR>")
    p.add_argument("--env", help="the env name (preview-<name> or loadtest-<name>), instead of --pr")
    p.add_argument("--profile", help="preview or loadtest (default: the --env name's prefix, else preview)")


def _run_flags(p) -> None:
    g = p.add_argument_group("the DAG run")
    g.add_argument("--timeout", type=duration, default=duration(os.environ.get("PRODCLONE_TIMEOUT", "15m")),
                   help="how long to wait for the run, e.g. 90s, 15m ($PRODCLONE_TIMEOUT, default 15m)")
    g.add_argument("--wait", dest="wait", action="store_true", default=True, help="wait for the run (default)")
    g.add_argument("--no-wait", dest="wait", action="store_false", help="trigger and return")
    g.add_argument("--unpause", action="store_true", help="unpause the DAG if it is paused")
    g.add_argument("--run-id", help="the Airflow run id (default: derived from repo, env and commit)")
    g.add_argument("--commit", default=os.environ.get("GITHUB_SHA") or os.environ.get("CI_COMMIT_SHA"),
                   help="the commit the run is for; a retry with the same commit attaches to its run "
                        "($GITHUB_SHA / $CI_COMMIT_SHA)")
    g.add_argument("--repo", default=os.environ.get("GITHUB_REPOSITORY") or os.environ.get("CI_PROJECT_PATH"),
                   help="the repository, part of the run id ($GITHUB_REPOSITORY / $CI_PROJECT_PATH)")


def _command(esub, name: str, fn, help_text: str, *, target: bool = True, run: bool = True):
    p = esub.add_parser(name, help=help_text, description=help_text)
    if target:
        _target_flags(p)
    if run:
        _run_flags(p)
    _connection_flags(p)
    p.set_defaults(fn=_reported(fn))
    return p


def add_parser(sub) -> None:
    env = sub.add_parser("env", help="preview/load-test environments through Airflow's REST API (for CI)")
    esub = env.add_subparsers(dest="env_command", required=True)
    p = _command(esub, "up", up, "create (or find) the environment and print its connection info")
    p.add_argument("--ttl", type=int, help="lifetime in hours (default: the profile's; at most its max_ttl_hours)")
    p.add_argument("--snapshot", default="latest", help="'latest' (default) or a snapshot id")
    p.add_argument("--replace", action="store_true", help="re-clone an existing env from the newest snapshot")
    p.add_argument("--requested-by", default=os.environ.get("GITHUB_ACTOR") or os.environ.get("GITLAB_USER_LOGIN"),
                   help="who asked, for the Clones page and audit ($GITHUB_ACTOR / $GITLAB_USER_LOGIN)")
    _command(esub, "down", down, "tear the environment down now (succeeds when it is already gone)")
    p = _command(esub, "extend", extend, "push the expiry out, within the profile's maximum")
    p.add_argument("--hours", type=int, required=True, help="hours to add to the current expiry")
    _command(esub, "credentials", credentials,
             "print the env's connection URL, password included (for a deploy step)", run=False)
    _command(esub, "list", list_envs, "environments with profile, snapshot, age, expiry and requester",
             target=False, run=False)


def _reported(fn):
    """With --json, an error is a JSON object on stdout too, so a pipeline parsing the output sees it."""
    def run(a) -> int:
        try:
            return fn(a)
        except ProdcloneError as exc:
            if not a.json:
                raise
            code = getattr(exc, "exit_code", EXIT_FAILED)
            print(json.dumps({"error": str(exc), "exit_code": code}))
            print(f"prodclone: error: {exc}", file=sys.stderr)
            return code

    return run


def _api(a) -> AirflowAPI:
    return AirflowAPI(a.airflow_url, username=a.username, password=a.password, token=a.token)


def _env_name(a) -> str:
    if (a.pr is None) == (a.env is None):
        raise ApiError("give exactly one of --pr or --env", EXIT_USAGE)
    name = a.env or env_for_pr(a.profile or "preview", a.pr)
    try:
        return validate_env_name(name)
    except CloneError as exc:
        raise ApiError(str(exc), EXIT_USAGE) from None


def _run_id(a, action: str, env: str) -> str:
    if a.run_id:
        return a.run_id
    if not a.commit:  # nothing stable to key on: a fresh run each time
        return f"prodclone-{action}-{env}-{uuid.uuid4().hex[:8]}"
    repo = re.sub(r"[^A-Za-z0-9_.-]+", "_", a.repo or "local")
    return f"prodclone-{action}-{repo}-{env}-{a.commit[:12]}"


def _run(a, api: AirflowAPI, dag_id: str, action: str, env: str, conf: dict) -> tuple[str, dict | None]:
    """Trigger (or attach to) the run; wait unless --no-wait. Raises with the failing task's log on failure."""
    api.ensure_unpaused(dag_id, a.unpause)
    run_id = _run_id(a, action, env)
    run, created = api.trigger(dag_id, run_id, conf, note=f"prodclone env {action} {env}")
    if not created:
        _say(a, f"{dag_id} run {run_id} already exists ({run['state']}); attaching to it")
        if run["state"] == "failed":
            _say(a, "it failed before: retrying its failed tasks")
            api.retry_failed(dag_id, run_id)
    else:
        _say(a, f"triggered {dag_id} run {run_id}")
    if not a.wait:
        return run_id, None
    run = api.wait(dag_id, run_id, a.timeout)
    if run["state"] != "success":
        raise ApiError(f"{dag_id} run {run_id} {api.failure(dag_id, run_id)}", EXIT_FAILED)
    return run_id, run


def _say(a, text: str) -> None:
    print(text, file=sys.stderr if a.json else sys.stdout, flush=True)


def up(a) -> int:
    env = _env_name(a)
    conf = {"env": env, "profile": a.profile or env.split("-", 1)[0], "snapshot": a.snapshot, "replace": a.replace}
    for key, value in (("pr", a.pr), ("ttl_hours", a.ttl), ("requested_by", a.requested_by)):
        if value is not None:
            conf[key] = value
    api = _api(a)
    api.check("restore", conf)  # a mistake is refused here, not by a red run and an alert
    run_id, run = _run(a, api, RESTORE, "up", env, conf)
    if run is None:
        print(json.dumps({"env": env, "run_id": run_id}) if a.json else f"{env}: run {run_id} triggered")
        return EXIT_OK
    info = api.xcom(RESTORE, run_id, "connection_info")
    if a.json:
        print(json.dumps({**info, "run_id": run_id}))
    else:
        print(f"{info['env']} is ready{' (it already existed)' if info.get('existing') else ''}\n"
              f"  host:     {info['host']}\n  port:     {info['port']}\n  database: {info['database']}\n"
              f"  user:     {info['user']}\n  password: in {info['secret']}\n"
              f"  url:      {connection_url(info['host'], info['port'], info['database'], info['user'])}\n"
              f"  snapshot: {info['snapshot']}\n  expires:  {info['expires_at']}")
    return EXIT_OK


def down(a) -> int:
    env = _env_name(a)
    api = _api(a)
    run_id, run = _run(a, api, TEARDOWN, "down", env, {"env": env, "missing_ok": True})
    if run is None:
        print(json.dumps({"env": env, "run_id": run_id}) if a.json else f"{env}: teardown run {run_id} triggered")
        return EXIT_OK
    summary = api.xcom(TEARDOWN, run_id, "summary") or {}
    gone = env in (summary.get("environments") or [])
    if a.json:
        print(json.dumps({"env": env, "removed": gone, "run_id": run_id}))
    else:
        print(f"{env}: removed" if gone else f"{env}: already gone; nothing to remove")
    return EXIT_OK


def extend(a) -> int:
    env = _env_name(a)
    api = _api(a)
    api.check("extend", {"env": env, "hours": a.hours})
    run_id, run = _run(a, api, EXTEND, f"extend{a.hours}h", env, {"env": env, "hours": a.hours})
    if run is None:
        print(json.dumps({"env": env, "run_id": run_id}) if a.json else f"{env}: extend run {run_id} triggered")
        return EXIT_OK
    result = api.xcom(EXTEND, run_id, "extend")
    print(json.dumps({**result, "run_id": run_id}) if a.json else f"{env} now expires {result['expires_at']}")
    return EXIT_OK


def credentials(a) -> int:
    """The one command that prints a password: asked for explicitly, authorised by Airflow."""
    env = _env_name(a)
    url = _api(a).credentials(env)
    print(json.dumps({"env": env, "url": url}) if a.json else url)
    return EXIT_OK


def _age(hours: float | None) -> str:
    if hours is None:
        return "?"
    if hours < 1:
        return f"{int(hours * 60)}m"
    return f"{hours / 24:.1f}d" if hours >= 48 else f"{int(hours)}h{int(hours * 60) % 60:02d}m"


def list_envs(a) -> int:
    state = _api(a).state()
    print(json.dumps(state["environments"]) if a.json else list_text(state, datetime.now(UTC)))
    return EXIT_OK


def list_text(state: dict, now: datetime) -> str:
    """`env list`'s table (a run at work on an env shows as its status, e.g. "tearing down"), then freshness."""
    head = ("ENV", "PROFILE", "SNAPSHOT", "AGE", "EXPIRES IN", "REQUESTED BY", "PR", "STATUS")
    rows = [head]
    for e in state["environments"]:
        age = (now - datetime.fromisoformat(e["created_at"])).total_seconds() / 3600
        left = e["expires_in_seconds"] / 3600
        rows.append((e["name"], e["profile"], e["snapshot"], _age(age), "expired" if left <= 0 else _age(left),
                     e["requested_by"], str(e["pr"] or ""), e.get("activity") or e["status"]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    f = state["freshness"]
    return "\n".join(lines if len(rows) > 1 else ["no environments"]) + \
        f"\n\nbase snapshot {state['latest_snapshot'] or '(none)'}: {f['message']}"
