"""`prodclone env` without an Airflow: its flags, its refusals of bad usage, its list table and how it
reads a failed task's log (records in the shape Airflow 3.3's log API returns)."""

import json
from datetime import UTC, datetime, timedelta

import pytest

from prodclone.airflow_api import failure_reason
from prodclone.cli import main, parser
from prodclone.envcli import _age, list_text


@pytest.mark.parametrize("pr", ["0", "-42", "forty-two"])
def test_pr_must_be_a_pull_request_number(pr, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["env", "down", "--pr", pr, "--airflow-url", "http://127.0.0.1:9"])
    assert exc.value.code == 2
    assert f"--pr: must be a pull request number (a positive integer), not '{pr}'" in capsys.readouterr().err


def test_json_errors_are_a_json_object_on_stdout(capsys, monkeypatch):
    monkeypatch.delenv("PRODCLONE_AIRFLOW_URL", raising=False)
    assert main(["env", "list", "--json"]) == 2
    out = json.loads(capsys.readouterr().out)
    assert out == {"error": "no Airflow URL: set PRODCLONE_AIRFLOW_URL or pass --airflow-url", "exit_code": 2}


def _options(command: str) -> dict:
    env = next(a for a in parser()._subparsers._group_actions[0].choices["env"]._subparsers._group_actions)
    return {o: act for act in env.choices[command]._actions for o in act.option_strings}


def test_every_flag_has_help_and_credentials_lists_only_what_it_uses():
    for command in ("up", "down", "extend", "credentials", "list"):
        assert all(act.help for act in _options(command).values()), command
    assert not {"--timeout", "--wait", "--no-wait", "--unpause", "--commit", "--repo", "--run-id"} & set(
        _options("credentials"))
    assert {"--pr", "--env", "--airflow-url", "--json"} <= set(_options("credentials"))


def test_age_shows_minutes_under_an_hour():
    assert [_age(0), _age(0.2), _age(5.25), _age(50)] == ["0m", "12m", "5h15m", "2.1d"]


def _state(*envs) -> dict:
    return {"environments": list(envs), "latest_snapshot": "snap-1", "freshness": {"message": "exported 2h ago"}}


def test_list_says_no_environments_rather_than_a_bare_header():
    assert list_text(_state(), datetime.now(UTC)) == "no environments\n\nbase snapshot snap-1: exported 2h ago"


def test_list_shows_a_run_at_work_as_the_status():
    now = datetime.now(UTC)
    env = {"name": "preview-pr-7", "profile": "preview", "snapshot": "snap-1", "requested_by": "ci", "pr": 7,
           "created_at": (now - timedelta(minutes=12, seconds=5)).isoformat(), "expires_in_seconds": 3600 * 30,
           "status": "ready", "activity": "tearing down"}
    head, row = list_text(_state(env), now).splitlines()[:2]
    assert head.split() == ["ENV", "PROFILE", "SNAPSHOT", "AGE", "EXPIRES", "IN", "REQUESTED", "BY", "PR", "STATUS"]
    assert row.split() == ["preview-pr-7", "preview", "snap-1", "12m", "30h00m", "ci", "7", "tearing", "down"]


RECORDS = [  # trimmed from a real failed `clone` task's log, as GET .../logs/1?full_content=true returns it
    {"event": "::group::Log message source details"},
    {"event": "/opt/airflow/logs/dag_id=prodclone_restore/run_id=r/task_id=clone/attempt=1.log"},
    {"event": "::endgroup::"},
    {"event": "DAG bundles loaded: dags-folder", "level": "info", "logger": "airflow.dag_processing"},
    {"event": "Worker startup parse complete", "level": "info", "logger": "task"},
    {"event": "Task failed with exception", "level": "error", "logger": "task", "error_detail": [
        {"exc_type": "AirflowFailException", "exc_value": "snapshot 'snap-0' does not exist; ready snapshots: snap-1",
         "is_cause": False},
        {"exc_type": "CloneError", "exc_value": "snapshot 'snap-0' does not exist; ready snapshots: snap-1",
         "is_cause": True}]},
    {"event": "prodclone: prodclone_restore failed at clone for preview-pr-1 (run r): snapshot 'snap-0' does not "
              "exist; ready snapshots: snap-1. What to do: check the base server and the snapshot id.",
     "level": "error", "logger": "prodclone.alerts"},
]


def test_failure_reason_is_the_error_once_and_what_to_do():
    assert failure_reason(RECORDS) == {"error": "snapshot 'snap-0' does not exist; ready snapshots: snap-1",
                                       "what_to_do": "check the base server and the snapshot id"}


def test_failure_reason_without_an_exception_names_the_error_line_or_says_so():
    assert failure_reason([{"event": "Killed by the OOM killer", "level": "error"}])["error"] == \
        "Killed by the OOM killer"
    assert "no error in the task's log" in failure_reason(RECORDS[:5])["error"]
