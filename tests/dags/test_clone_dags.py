"""export -> restore -> teardown through Airflow (dag.test) against a real
Postgres, with a registry of the module's own."""

import json
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
import yaml

from prodclone.db import with_dbname
from prodclone.devpg import airflow_conn_json as airflow_conn
from support import ROOT, WebhookCapture, rows


def _bag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags")).dags


@pytest.fixture(scope="module")
def stack(airflow_db, pg, sample_source, tmp_path_factory):
    """A module-wide setup: config with its own registry, connections, one export run."""
    tmp = tmp_path_factory.mktemp("clone-dags")
    tag = uuid.uuid4().hex[:8]
    cfg = yaml.safe_load((ROOT / "include" / "prodclone.yaml").read_text())
    cfg["clones"]["registry_database"] = f"pct_reg_{tag}"
    hooks = tmp / "hooks"
    hooks.mkdir()
    for profile in cfg["profiles"].values():
        profile["on_restored"] = [f'printf "%s %s" "$PRODCLONE_HOST" "$PRODCLONE_REQUESTED_BY" > {hooks}/restored-$PRODCLONE_ENV']
        profile["pre_teardown"] = [f"touch {hooks}/predestroy-$PRODCLONE_ENV", "exit 3"]  # a failing hook never blocks teardown
    cfg["alerts"] = {"slack_webhook_conn_id": "slack_test"}
    (tmp / "prodclone.yaml").write_text(yaml.safe_dump(cfg))
    slack = WebhookCapture()
    base = with_dbname(pg, f"pct_dagbase_{tag}")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PRODCLONE_CONFIG", str(tmp / "prodclone.yaml"))
        mp.setenv("AIRFLOW_CONN_PRODCLONE_SOURCE", airflow_conn(sample_source[0]))
        mp.setenv("AIRFLOW_CONN_PRODCLONE_BASE", airflow_conn(base))
        mp.setenv("PRODCLONE_STORAGE_URL", f"file://{tmp}/store")
        mp.setenv("PRODCLONE_MASKING_KEY", "test-key-" + "k" * 40)
        mp.setenv("AIRFLOW_CONN_SLACK_TEST", json.dumps({"conn_type": "slackwebhook", "password": slack.url}))
        run = _bag()["prodclone_export"].test(use_executor=False)
        assert run.state == "success"
        yield {"pg": pg, "base": base, "store": tmp / "store", "registry": with_dbname(pg, f"pct_reg_{tag}"),
               "export_run": run, "hooks": hooks, "slack": slack}
    slack.close()
    with psycopg.connect(pg, autocommit=True) as c:
        for (name,) in c.execute("SELECT datname FROM pg_database WHERE shobj_description(oid, 'pg_database') "
                                 "LIKE '%%managed-by=prodclone%%' AND (datname LIKE 'snap-%%' OR datname LIKE "
                                 "'preview-%%' OR datname LIKE 'loadtest-%%' OR datname LIKE %s)", (f"%{tag}",)).fetchall():
            if name.startswith(("preview-", "loadtest-")):
                c.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
                c.execute(f'DROP ROLE IF EXISTS "{name}"')
            elif tag in name or name.startswith("snap-"):
                c.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def _restore(**conf):
    run = _bag()["prodclone_restore"].test(run_conf=conf, use_executor=False)
    return run, {ti.task_id: ti for ti in run.get_task_instances()}


def _xcom(ti):
    return ti.xcom_pull(task_ids=ti.task_id)


def test_export_ends_with_a_snapshot_and_an_asset_event(stack):
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session

    latest = json.loads((stack["store"] / "LATEST").read_text())
    assert latest["snapshot"].startswith("snap-")
    assert rows(stack["registry"], "SELECT status FROM snapshots WHERE id = %s", (latest["snapshot"],)) == [("ready",)]
    with create_session() as s:
        event = s.query(AssetEvent).filter(AssetEvent.source_run_id == stack["export_run"].run_id).one()
    assert event.extra["snapshot"] == latest["snapshot"] and event.extra["rows"] == latest["rows"]
    assert event.extra["rules_sha256"] == latest["rules_sha256"] and len(event.extra["rules_sha256"]) == 64


def test_restore_from_pr_is_idempotent_and_teardown_removes_it(stack, sample_source):
    from airflow.models.variable import Variable

    pr = int(uuid.uuid4().int % 10**6)
    env = f"preview-pr-{pr}"
    run, tis = _restore(pr=pr, requested_by="alice")
    assert run.state == "success"
    info = _xcom(tis["connection_info"])
    assert info["env"] == env and info["user"] == env and not info["existing"]
    assert info["secret"].startswith(f"Airflow Variable prodclone_env_{env}_dsn")
    url = Variable.get(f"prodclone_env_{env}_dsn")
    password = psycopg.conninfo.conninfo_to_dict(url)["password"]
    assert password not in json.dumps(info)
    with psycopg.connect(url) as c:  # the clone's own credentials work and the data is all there
        assert c.execute("SELECT count(*) FROM users").fetchone()[0] == sample_source[1]["users"]
    registered = rows(stack["registry"], "SELECT profile, requested_by, pr, status FROM environments WHERE name = %s", (env,))
    assert registered == [("preview", "alice", pr, "ready")]

    assert (stack["hooks"] / f"restored-{env}").read_text().endswith(" alice")  # on_restored ran, with coordinates
    assert info["clone_seconds"] > 0 and info["snapshot_age_hours"] < 1 and not info["snapshot_stale"]
    (stack["hooks"] / f"restored-{env}").unlink()

    again, tis = _restore(pr=pr)  # CI retried: no failure, no second clone, same password
    assert again.state == "success" and _xcom(tis["connection_info"])["existing"]
    assert Variable.get(f"prodclone_env_{env}_dsn") == url
    assert not (stack["hooks"] / f"restored-{env}").exists()  # hooks run once per clone, not per trigger

    down = _bag()["prodclone_teardown"].test(run_conf={"env": env}, use_executor=False)
    assert down.state == "success"
    assert (stack["hooks"] / f"predestroy-{env}").exists()  # pre_teardown ran; its failure did not block
    assert not rows(stack["pg"], "SELECT 1 FROM pg_database WHERE datname = %s", (env,))
    assert not rows(stack["pg"], "SELECT 1 FROM pg_roles WHERE rolname = %s", (env,))
    assert Variable.get(f"prodclone_env_{env}_dsn", default_var=None) is None
    assert not rows(stack["registry"], "SELECT 1 FROM environments WHERE name = %s", (env,))


@pytest.mark.parametrize("conf,field", [
    ({"env": "prod-main"}, "env"),
    ({"env": "preview-" + "x" * 60}, "env"),
    ({"env": "preview-x", "profile": "gold"}, "profile"),
    ({"env": "loadtest-x", "profile": "loadtest", "ttl_hours": 500}, "ttl_hours"),
    ({"pr": 0}, "pr"),
])
def test_invalid_params_are_refused_at_trigger_time(stack, conf, field):
    from airflow.sdk.definitions.param import ParamValidationError

    with pytest.raises(ParamValidationError, match=field):
        _restore(**conf)


@pytest.mark.parametrize("conf,message", [
    ({"env": "preview-toolong", "ttl_hours": 100}, "outside the preview profile's bounds: 1 to 72 hours"),
    ({"env": "loadtest-x"}, "does not match profile 'preview'"),
    ({}, "give `env`"),
    ({"env": "preview-nosnap", "snapshot": "snap-00000000-0000-000000"}, "does not exist; ready snapshots: snap-"),
])
def test_bad_requests_fail_clearly_and_touch_nothing(stack, conf, message, capfd):
    run, tis = _restore(**conf)
    assert run.state == "failed"
    failed = [t for t, ti in tis.items() if ti.state == "failed"]
    assert failed in (["resolve"], ["clone"])
    out, err = capfd.readouterr()
    assert message in out + err
    alert = stack["slack"].posts[-1]["text"]  # the failure alert went out through the Slack notifier
    assert alert.startswith(f"prodclone: prodclone_restore failed at {failed[0]}") and message in alert
    assert "What to do:" in alert
    assert not rows(stack["registry"], "SELECT 1 FROM environments WHERE name = %s", (conf.get("env", ""),))
    assert not rows(stack["pg"], "SELECT 1 FROM pg_database WHERE datname = %s", (conf.get("env", ""),))


def test_hourly_teardown_removes_only_expired_envs_and_prunes(stack):
    keep, gone = f"loadtest-k{uuid.uuid4().hex[:6]}", f"loadtest-g{uuid.uuid4().hex[:6]}"
    for env in (keep, gone):
        assert _restore(env=env, profile="loadtest", ttl_hours=100)[0].state == "success"
    with psycopg.connect(stack["registry"], autocommit=True) as c:
        c.execute("UPDATE environments SET expires_at = %s WHERE name = %s", (datetime.now(UTC) - timedelta(hours=1), gone))
    run = _bag()["prodclone_teardown"].test(use_executor=False)
    assert run.state == "success"
    envs = {r[0] for r in rows(stack["registry"], "SELECT name FROM environments")}
    assert keep in envs and gone not in envs
    assert not rows(stack["pg"], "SELECT 1 FROM pg_database WHERE datname = %s", (gone,))
    assert rows(stack["pg"], "SELECT 1 FROM pg_database WHERE datname = %s", (keep,))
    unknown = _bag()["prodclone_teardown"].test(run_conf={"env": "preview-never-made"}, use_executor=False)
    assert unknown.state == "failed"


def test_teardown_summary_and_missing_ok(stack):
    """The summary lists what the mapped teardowns removed; a sweep with nothing to do (no mapped instance)
    and `missing_ok` for an env that is gone both succeed and say so."""
    env = f"preview-s{uuid.uuid4().hex[:6]}"
    assert _restore(env=env)[0].state == "success"
    run = _bag()["prodclone_teardown"].test(run_conf={"env": env}, use_executor=False)
    assert run.state == "success"
    assert _xcom({ti.task_id: ti for ti in run.get_task_instances()}["summary"])["environments"] == [env]
    again = _bag()["prodclone_teardown"].test(run_conf={"env": env, "missing_ok": True}, use_executor=False)
    assert again.state == "success"
    assert _xcom({ti.task_id: ti for ti in again.get_task_instances()}["summary"]) == {
        "environments": [], "snapshots": []}


def test_extend_dag_caps_at_the_profile_maximum(stack):
    """The extend DAG passes no cap: the driver reads the env's profile (preview: 72h from now)."""
    env = f"preview-x{uuid.uuid4().hex[:6]}"
    assert _restore(env=env, ttl_hours=24)[0].state == "success"
    run = _bag()["prodclone_extend"].test(run_conf={"env": env, "hours": 24}, use_executor=False)
    assert run.state == "success"
    (expires,) = rows(stack["registry"], "SELECT expires_at FROM environments WHERE name = %s", (env,))[0]
    assert timedelta(hours=47) < expires - datetime.now(UTC) <= timedelta(hours=48)
    refused = _bag()["prodclone_extend"].test(run_conf={"env": env, "hours": 48}, use_executor=False)
    assert refused.state == "failed"
    assert rows(stack["registry"], "SELECT expires_at FROM environments WHERE name = %s", (env,))[0][0] == expires
    assert _bag()["prodclone_teardown"].test(run_conf={"env": env}, use_executor=False).state == "success"
