"""`prodclone env` against a real Airflow (api-server, scheduler, dag-processor,
triggerer) over the REST API v2: up, idempotent up, list, extend, down, and
the errors a CI user meets."""

import json
import uuid

import psycopg
import pytest

from prodclone.airflow_api import AirflowAPI, ApiError
from support import rows


def _pr() -> str:
    return str(uuid.uuid4().int % 10**7)


def test_up_is_idempotent_then_list_extend_down(airflow_server, unpaused, cli):
    pr = _pr()
    env = f"preview-pr-{pr}"
    code, out, err = cli("up", "--pr", pr, "--commit", "abc123def456", "--repo", "acme/shop", "--wait", "--json",
                         "--timeout", "3m")
    assert code == 0, err
    info = json.loads(out)
    assert info["env"] == env and info["user"] == env and info["port"] > 0 and not info["existing"]
    assert info["secret"].startswith(f"Airflow Variable prodclone_env_{env}_dsn")
    assert info["run_id"] == f"prodclone-up-acme_shop-{env}-abc123def456"
    # The password is in the Variable, redacted by Airflow's own API; `env credentials` is the way to it.
    assert unpaused._send("GET", f"/api/v2/variables/prodclone_env_{env}_dsn").body["value"] == "***"
    code, url, _ = cli("credentials", "--pr", pr)
    password = psycopg.conninfo.conninfo_to_dict(url.strip())["password"]
    assert code == 0 and len(password) >= 24 and password not in out + err
    with psycopg.connect(url.strip()) as c:  # they work, and the clone has the data
        assert c.execute("SELECT current_user, count(*) FROM users GROUP BY 1").fetchone()[0] == env

    created = rows(airflow_server["registry"], "SELECT created_at FROM environments WHERE name = %s", (env,))
    code, out, err = cli("up", "--pr", pr, "--commit", "abc123def456", "--repo", "acme/shop", "--json")
    assert code == 0 and "already exists" in err  # a retried CI job attaches to its run (409)
    code, out, _ = cli("up", "--pr", pr, "--commit", "fff999", "--json")  # a new commit: new run, same env
    assert code == 0 and json.loads(out)["existing"]
    assert rows(airflow_server["registry"], "SELECT created_at FROM environments WHERE name = %s", (env,)) == created

    code, out, _ = cli("list")
    assert code == 0
    line = next(ln for ln in out.splitlines() if ln.startswith(env))
    assert "preview" in line and airflow_server["snapshot"] in line and "ready" in line and pr in line
    assert "base snapshot" in out

    code, out, err = cli("extend", "--pr", pr, "--hours", "24")
    assert code == 0, err
    assert "now expires" in out
    runs = _runs(unpaused, "prodclone_extend")
    code, out, err = cli("extend", "--pr", pr, "--hours", "100")
    assert code == 2 and "refused before triggering" in err and "extend by at most" in err \
        and "beyond the preview profile's maximum of 72h from now" in err
    assert _runs(unpaused, "prodclone_extend") == runs  # refused: no red run, no alert

    code, out, err = cli("down", "--pr", pr)
    assert code == 0 and f"{env}: removed" in out, err
    assert not rows(airflow_server["pg"], "SELECT 1 FROM pg_database WHERE datname = %s", (env,))
    code, out, _ = cli("down", "--pr", pr)
    assert code == 0 and "already gone" in out


def _runs(api, dag_id: str) -> int:
    return api._send("GET", f"/api/v2/dags/{dag_id}/dagRuns?limit=1").body["total_entries"]


@pytest.mark.parametrize(("args", "says"), [
    (("up", "--env", "preview-bad-ttl", "--ttl", "500"), "ttl_hours=500 is outside the preview profile's bounds: 1 to 72"),
    (("up", "--env", "preview-bad-ttl", "--ttl", "0"), "ttl_hours=0 is outside the preview profile's bounds: 1 to 72"),
    (("up", "--env", "loadtest-x", "--profile", "preview"), "does not match profile 'preview'"),
    (("extend", "--env", "preview-never-made", "--hours", "2"), "preview-never-made does not exist"),
])
def test_mistakes_are_refused_before_any_run(unpaused, cli, args, says):
    runs = {dag: _runs(unpaused, dag) for dag in ("prodclone_restore", "prodclone_extend")}
    code, out, err = cli(*args)
    assert code == 2, err
    assert says in err and err.count(says) == 1 and "Failed validating" not in err
    assert {dag: _runs(unpaused, dag) for dag in runs} == runs


@pytest.mark.parametrize("pr", ["0", "-42"])
def test_pr_must_be_a_pull_request_number(cli, pr):
    with pytest.raises(SystemExit) as exc:
        cli("up", "--pr", pr)
    assert exc.value.code == 2


def test_json_errors_are_json(unpaused, cli):
    code, out, _ = cli("extend", "--env", "preview-never-made", "--hours", "2", "--json")
    assert code == 2 and json.loads(out) == {"exit_code": 2, "error": json.loads(out)["error"]}
    assert "preview-never-made does not exist" in json.loads(out)["error"]


def test_failed_run_says_once_what_failed_and_what_to_do(unpaused, cli):
    code, _, err = cli("up", "--pr", _pr(), "--snapshot", "snap-00000000-0000-000000")
    assert code == 1
    assert "failed at task clone: snapshot 'snap-00000000-0000-000000' does not exist" in err
    assert err.count("does not exist") == 1 and "What to do: " in err and "/tasks/clone" in err
    assert "DAG bundles loaded" not in err and "Worker startup" not in err  # no start-up noise


def test_bad_credentials_and_timeout(unpaused, cli):
    code, _, err = cli("list", password="wrong-password")
    assert code == 3 and "rejected the username/password" in err
    pr = _pr()
    code, _, err = cli("up", "--pr", pr, "--timeout", "0s")
    assert code == 5 and "goes on in Airflow" in err
    assert cli("down", "--pr", pr)[0] == 0


def test_viewer_sees_but_cannot_act(airflow_server, unpaused):
    viewer = AirflowAPI(airflow_server["url"], username="viewer", password=airflow_server["users"]["viewer"])
    state = viewer.state()
    assert state["can_act"] is False and state["latest_snapshot"] == airflow_server["snapshot"]
    with pytest.raises(ApiError, match="403"):
        viewer._send("POST", "/prodclone/api/environments/preview-x/teardown", {})
    with pytest.raises(ApiError, match="403"):
        viewer.credentials("preview-x")
    assert unpaused.state()["can_act"] is True
