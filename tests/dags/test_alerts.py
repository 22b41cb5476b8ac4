"""Alert messages and the export's deadline alert (opt-in)."""

import asyncio
import json
import types

import yaml

from support import ROOT, WebhookCapture


def test_failure_message_names_dag_stage_env_and_what_to_do_but_no_row_values():
    exc = Exception('duplicate key value violates unique constraint "users_email_key"\n'
                    "DETAIL:  Key (email)=(jane@example.org) already exists.")
    ctx = {"ti": types.SimpleNamespace(dag_id="prodclone_restore", task_id="post_restore"),
           "dag_run": types.SimpleNamespace(run_id="r1"), "params": {"pr": 42, "profile": "preview"}, "exception": exc}
    from prodclone.airflow.alerts import failure_message

    msg = failure_message(ctx)
    assert msg.startswith("prodclone: prodclone_restore failed at post_restore for preview-pr-42 (run r1)")
    assert "post_restore_sql" in msg and "jane@example.org" not in msg


def test_deadline_is_opt_in_and_its_callback_alerts(airflow_db, tmp_path, monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    from prodclone.airflow.alerts import export_overdue

    cfg = yaml.safe_load((ROOT / "include" / "prodclone.yaml").read_text())
    assert not cfg["export"]["deadline_minutes"]  # off by default (see the config's comment)
    cfg["export"]["deadline_minutes"] = 90
    cfg["alerts"] = {"slack_webhook_conn_id": "slack_deadline", "email": []}
    (tmp_path / "prodclone.yaml").write_text(yaml.safe_dump(cfg))
    monkeypatch.setenv("PRODCLONE_CONFIG", str(tmp_path / "prodclone.yaml"))
    dag = DagBag(dag_folder=str(ROOT / "dags")).dags["prodclone_export"]
    [alert] = dag.deadline
    assert alert.interval.total_seconds() == 90 * 60 and alert.callback.kwargs == {"minutes": 90}
    slack = WebhookCapture()
    try:
        monkeypatch.setenv("AIRFLOW_CONN_SLACK_DEADLINE", json.dumps({"conn_type": "slackwebhook", "password": slack.url}))
        asyncio.run(export_overdue({"dag_run": types.SimpleNamespace(run_id="scheduled__x")}, minutes=90))
    finally:
        slack.close()
    assert "prodclone_export run scheduled__x is still not done 90 minutes" in slack.posts[0]["text"]
