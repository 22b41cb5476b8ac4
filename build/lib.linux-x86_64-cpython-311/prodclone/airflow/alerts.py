"""Failure and deadline alerts: which DAG, which stage, which env, and what
to do, sent through Airflow's notifiers (Slack webhook, SMTP) as configured
in prodclone.yaml's `alerts`. Messages carry the first line of the error
only: never a row value (database DETAIL lines, which may quote one, are
dropped)."""

from __future__ import annotations

import asyncio
import logging

from prodclone.airflow_api import ALERT_LOGGER
from prodclone.config import Config, load_config
from prodclone.drivers.base import env_for_pr

log = logging.getLogger(ALERT_LOGGER)

WHAT_TO_DO = {
    "freeze_source": "check the source connection and that its replica/snapshot can be frozen",
    "check_rules": "a column has no masking rule or a rule does not fit: run `prodclone rules check` and fix "
                   "include/masking/rules.yaml (the export fails closed)",
    "plan": "check the source connection and the rules' subsetting",
    "export_part": "check the source and storage connections; the run retries I/O errors by itself",
    "finalize": "check the storage connection",
    "verify": "the leak check found original values or a file is corrupt: fix the rule it names, then re-run",
    "seed_base": "the base was left as it was; fix the error (often a rule lacking `unique: true`) and re-run",
    "snapshot_base": "check the base server; the previous snapshot still serves restores",
    "publish": "check the storage connection",
    "resolve": "the request was refused: fix the parameters (env name, profile, ttl_hours, snapshot)",
    "clone": "check the base server and the snapshot id; a half-made clone is removed by the next teardown",
    "post_restore": "a post-restore hook failed: fix the profile's post_restore_sql; teardown removes the env",
    "lifecycle_hooks": "the env is ready but an on_restored hook failed: fix the profile's on_restored commands",
    "connection_info": "the env may not be ready; re-trigger prodclone_restore (it is idempotent)",
    "due": "check the base server; if an env was named, it is not in prodclone's registry",
    "teardown_env": "the env was not fully removed; the next hourly teardown retries it",
    "prune_snapshots": "check the base server; pruning retries next hour",
    "extend": "the env does not exist or the extension exceeds the profile's maximum",
}


def _first_line(exc) -> str:
    text = str(exc or "").strip()
    return text.splitlines()[0][:500] if text else type(exc).__name__ if exc else "unknown error"


def failure_message(context) -> str:
    ti, dag_run = context.get("ti"), context.get("dag_run")
    dag_id = getattr(ti, "dag_id", None) or getattr(dag_run, "dag_id", "?")
    task_id = getattr(ti, "task_id", "?")
    run_id = getattr(dag_run, "run_id", None) or context.get("run_id", "?")
    params = context.get("params") or {}
    env = params.get("env") or (env_for_pr(params.get("profile") or "preview", params["pr"]) if params.get("pr") else None)
    what = WHAT_TO_DO.get(task_id, "see the task log")
    return (f"prodclone: {dag_id} failed at {task_id}" + (f" for {env}" if env else "")
            + f" (run {run_id}): {_first_line(context.get('exception'))}. What to do: {what}.")


def _notifiers(cfg: Config, message: str, subject: str) -> list:
    out = []
    safe = message.replace("{{", "{ {").replace("{%", "{ %")  # notifiers render Jinja; ours is plain text
    if cfg.slack_webhook_conn_id:
        from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier

        out.append(SlackWebhookNotifier(slack_webhook_conn_id=cfg.slack_webhook_conn_id, text=safe))
    if cfg.alert_emails:
        from airflow.providers.smtp.notifications.smtp import SmtpNotifier

        out.append(SmtpNotifier(to=list(cfg.alert_emails), subject=subject, html_content=safe))
    return out


def send(message: str, subject: str, context) -> int:
    """Log the alert and send it to every configured notifier; returns how many were sent."""
    log.error("%s", message)
    sent = 0
    for notifier in _notifiers(load_config(), message, subject):
        try:
            notifier(context)
            sent += 1
        except Exception as exc:  # an alert channel being down must not hide the original failure
            log.warning("alert via %s failed: %s", type(notifier).__name__, _first_line(exc))
    return sent


def on_failure(context) -> None:
    """`on_failure_callback` of every prodclone task."""
    send(failure_message(context), "prodclone failure", context)


async def export_overdue(context=None, **kwargs) -> None:
    """Deadline callback (runs in the triggerer): the nightly export is running far past its usual time."""
    dag_run = (context or {}).get("dag_run")
    run_id = getattr(dag_run, "run_id", None) or kwargs.get("run_id", "?")
    message = (f"prodclone: prodclone_export run {run_id} is still not done {kwargs.get('minutes', '?')} minutes after "
               f"it was queued. Restores keep serving the last good snapshot. What to do: look at the running "
               f"task's log (a slow source or a stuck freeze), and at the base server's load.")
    await asyncio.to_thread(send, message, "prodclone export overdue", context or {})
