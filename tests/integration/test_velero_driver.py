"""The velero driver against the in-repo fake Kubernetes API server and Velero
simulator (tests/fakekube: what they model and what not is in their
docstrings), through the real `kubernetes` client built by KubernetesHook
from a kubeconfig, with moto's EC2 for the EBS volumes and a real Postgres
standing in for the clone's datastore (credential rotation, SQL hooks).
Every API call a test makes is checked against include/k8s/rbac.yaml."""

import base64
import dataclasses
import json
import uuid
from types import SimpleNamespace

import boto3
import psycopg
import pytest
import yaml
from fakekube.server import FakeKube
from fakekube.velero import VeleroSim

from prodclone.config import load_config
from prodclone.drivers.base import CloneError, MemorySecrets, RestoreRequest
from prodclone.drivers.velero import VeleroDriver, k8s_name, rotate_postgres
from support import ROOT

BASE, VELERO = "prodclone-base", "velero"


def _rbac_allows(call) -> bool:
    verb, group, plural, _sub, ns, name = call
    for doc in yaml.safe_load_all((ROOT / "include" / "k8s" / "rbac.yaml").read_text()):
        if doc["kind"] not in ("ClusterRole", "Role"):
            continue
        if doc["kind"] == "Role" and ns != doc["metadata"]["namespace"]:
            continue
        for rule in doc["rules"]:
            if group in rule["apiGroups"] and plural in rule["resources"] and verb in rule["verbs"] \
                    and (not rule.get("resourceNames") or name in rule["resourceNames"]):
                return True
    return False


@pytest.fixture
def kube(pg, s3_endpoint, tmp_path, monkeypatch, new_db):
    """A fake cluster with a base namespace (a Postgres StatefulSet on a Retain PV, as many real bases
    are), Velero, moto EC2, and the driver configured for them."""
    fk = FakeKube()
    ec2 = boto3.client("ec2", endpoint_url=s3_endpoint, aws_access_key_id="test", aws_secret_access_key="test",
                       region_name="us-east-1")
    sim = VeleroSim(fk.cluster, VELERO, ec2=ec2)
    fk.controllers.append(sim.reconcile)
    c = fk.cluster
    c.create("namespaces", {"metadata": {"name": VELERO}})
    c.create("namespaces", {"metadata": {"name": BASE, "labels": {"team": "data", "app.kubernetes.io/managed-by": "argocd"},
                                         "annotations": {"owner": "base-team"}}})
    c.create("persistentvolumes", {"metadata": {"name": "pv-base-0", "labels": {"tier": "db"}}, "spec": {
        "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "gp3",
        "claimRef": {"namespace": BASE, "name": "data-postgres-0"}}})
    c.create("persistentvolumeclaims", {"metadata": {"name": "data-postgres-0", "labels": {"app": "postgres"}},
                                        "spec": {"storageClassName": "gp3", "volumeName": "pv-base-0",
                                                 "resources": {"requests": {"storage": "10Gi"}}},
                                        "status": {"phase": "Bound"}}, BASE)
    c.create("statefulsets", {"metadata": {"name": "postgres"}, "spec": {
        "replicas": 1, "template": {"metadata": {"labels": {"app": "postgres"}}}}}, BASE)
    c.create("pods", {"metadata": {"name": "postgres-0", "labels": {"app": "postgres"}}}, BASE)
    # The clone's Postgres: a real database whose role the rotation changes (all clones share it here).
    role, password = f"pct_vel_{uuid.uuid4().hex[:8]}", "base-password-123"
    dbdsn = new_db("pct_vel")
    dbname = psycopg.conninfo.conninfo_to_dict(dbdsn)["dbname"]
    with psycopg.connect(pg, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        conn.execute(f'CREATE DATABASE "{dbname}" OWNER {role}')
    with psycopg.connect(dbdsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE users (id int, is_test_account bool, password_hash text); ALTER TABLE users OWNER TO {role}; "
                     "INSERT INTO users VALUES (1, true, 'x'), (2, false, 'y')")
    secret = {"username": role, "password": password, "database": dbname}
    c.create("secrets", {"metadata": {"name": "postgres-credentials"},
                         "data": {k: base64.b64encode(v.encode()).decode() for k, v in secret.items()}}, BASE)
    c.create("services", {"metadata": {"name": "postgres"}, "spec": {"ports": [{"port": 5432}]}}, BASE)

    kubeconfig = tmp_path / "kubeconfig.yaml"
    kubeconfig.write_text(yaml.safe_dump(fk.kubeconfig()))
    monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", json.dumps(
        {"conn_type": "kubernetes", "extra": {"kube_config_path": str(kubeconfig)}}))
    from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook
    from kubernetes import client

    hook = KubernetesHook(conn_id="kubernetes_default")
    clients = SimpleNamespace(core=hook.core_v1_client, custom=hook.custom_object_client,
                              storage=client.StorageV1Api(hook.api_client))
    p = psycopg.conninfo.conninfo_to_dict(pg)
    base_cfg = load_config()
    velero = dataclasses.replace(base_cfg.velero, wait_minutes=0.1, host_template=p.get("host") or "127.0.0.1",
                                 datastores=tuple(dataclasses.replace(d, port=int(p.get("port") or 5432))
                                                  for d in base_cfg.velero.datastores))
    cfg = dataclasses.replace(base_cfg, driver="velero", velero=velero)
    driver = VeleroDriver(cfg, clients, ec2, MemorySecrets(), database=rotate_postgres, poll=0.05)
    yield SimpleNamespace(fk=fk, cluster=c, sim=sim, ec2=ec2, driver=driver, cfg=cfg, secret=secret, db=dbdsn, pg=pg,
                          role=role)
    fk.close()
    not_allowed = [call for call in c.calls if not _rbac_allows(call)]
    assert not not_allowed, f"API calls include/k8s/rbac.yaml does not allow: {not_allowed}"
    with psycopg.connect(pg, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        conn.execute(f"DROP ROLE IF EXISTS {role}")


def _req(env, **kw):
    return RestoreRequest(env=env, profile=env.split("-")[0], ttl_hours=kw.pop("ttl_hours", 24),
                          snapshot=kw.pop("snapshot", "latest"), requested_by="pytest", **kw)


def _up(k, env, run="run-1", **kw):
    k.driver.begin_restore(_req(env, **kw), run)
    return k.driver.finish_restore(env, run, ("UPDATE users SET password_hash = '!' WHERE NOT is_test_account",))


def test_snapshot_is_a_labelled_backup_with_hooks_and_a_long_enough_ttl(kube):
    snap = kube.driver.snapshot("export-run-1", export="s3://x/e", rows=12, rules_sha256="ab" * 32)
    assert snap.status == "ready" and len(snap.id) <= 63 and snap.rows == 12
    b = kube.cluster.get("backups", snap.id, VELERO)
    assert b["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "prodclone"
    assert b["spec"]["includedNamespaces"] == [BASE] and b["spec"]["ttl"] == "169h0m0s"  # loadtest max 168h + 1h
    assert any(pod == "postgres-0" and "CHECKPOINT" in cmd[-1] for _, pod, _, cmd in kube.sim.hook_runs)
    assert kube.driver.snapshot("export-run-1").id == snap.id  # a retried task reuses its backup


def test_restore_clones_into_a_prelabelled_namespace_with_new_credentials(kube):
    snap = kube.driver.snapshot("r1")
    env = "preview-pr-7"
    made = _up(kube, env, pr=7)
    assert made.status == "ready" and made.snapshot == snap.id and made.pr == 7
    ns = kube.cluster.get("namespaces", env)
    labels, ann = ns["metadata"]["labels"], ns["metadata"]["annotations"]
    # Ours, not the base's (Velero would have copied "team" and managed-by=argocd into a namespace it created).
    assert labels["app.kubernetes.io/managed-by"] == "prodclone" and "team" not in labels and "owner" not in ann
    assert ann["prodclone.io/expires-at"].endswith("Z") and ann["prodclone.io/requested-by"] == "pytest"
    sc = kube.cluster.get("storageclasses", k8s_name("prodclone", env))
    assert sc["reclaimPolicy"] == "Delete" and sc["parameters"]["tagSpecification_1"] == f"prodclone-env={env}"
    restore = ann["prodclone.io/restore"]
    cm = kube.cluster.get("configmaps", restore, VELERO)
    assert len(cm["data"]) == 1
    r = kube.cluster.get("restores", restore, VELERO)
    assert r["spec"]["namespaceMapping"] == {BASE: env} and r["status"]["phase"] == "Completed"
    pvc = kube.cluster.get("persistentvolumeclaims", "data-postgres-0", env)
    assert pvc["spec"]["storageClassName"] == sc["metadata"]["name"]  # the modifier matched the source namespace
    assert pvc["metadata"]["labels"]["prodclone.io/env"] == env
    # Credentials rotated: the Secret and the database agree on a new password; the base's no longer works.
    data = kube.cluster.get("secrets", "postgres-credentials", env)["data"]
    new = base64.b64decode(data["password"]).decode()
    assert new != kube.secret["password"]
    dsn = psycopg.conninfo.make_conninfo(kube.db, user=kube.role, password=new)
    with psycopg.connect(dsn) as c:
        assert c.execute("SELECT count(*) FROM users WHERE password_hash <> '!'").fetchone()[0] == 1  # hook ran
    info = kube.driver.connection(env)
    assert info.user == kube.role and new not in info.text() and "Kubernetes Secret preview-pr-7/postgres-credentials" in info.secret
    again = kube.driver.begin_restore(_req(env, pr=7), "run-2")  # idempotent: healthy env untouched
    assert again.run_id == "run-1" and again.status == "ready"


def test_latest_good_snapshot_skips_partially_failed(kube):
    good = kube.driver.snapshot("r1")
    kube.sim.faults.backup_result = "PartiallyFailed"
    with pytest.raises(CloneError, match="phase PartiallyFailed, failureReason: injected failure"):
        kube.driver.snapshot("r2")
    newest = kube.driver.snapshots()[0]
    assert newest.status == "failed" and newest.id != good.id
    assert kube.driver.latest_snapshot().id == good.id
    made = _up(kube, "preview-latest")
    assert made.snapshot == good.id


@pytest.mark.parametrize("fault,message", [("PartiallyFailed", "phase PartiallyFailed"),
                                           ("FailedValidation", "validationErrors: injected validation failure")])
def test_failed_restore_leaves_no_healthy_env_and_teardown_cleans_up(kube, fault, message):
    kube.driver.snapshot("r1")
    env = f"preview-f{uuid.uuid4().hex[:6]}"
    kube.driver.begin_restore(_req(env), "run-1")
    kube.sim.faults.restore_result = fault
    with pytest.raises(CloneError, match=message):
        kube.driver.finish_restore(env, "run-1")
    assert [e.status for e in kube.driver.environments()] == ["failed"]
    assert kube.driver.due_for_teardown() == [(env, "failed")]
    kube.driver.teardown(env, reason="failed")
    assert kube.driver.environments() == []


def test_teardown_leaves_nothing_and_never_touches_the_backup_snapshot(kube):
    kube.driver.snapshot("r1")
    env = "loadtest-bf"
    _up(kube, env)
    restore = kube.cluster.get("namespaces", env)["metadata"]["annotations"]["prodclone.io/restore"]
    [pv] = [p for p in kube.cluster.find("persistentvolumes") if p["spec"]["claimRef"]["namespace"] == env]
    assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Retain"  # inherited from the base PV: the trap
    volume = pv["spec"]["csi"]["volumeHandle"]
    orphan = kube.ec2.create_volume(AvailabilityZone="us-east-1a", Size=1, TagSpecifications=[
        {"ResourceType": "volume", "Tags": [{"Key": "prodclone-env", "Value": env}]}])["VolumeId"]
    foreign = kube.ec2.create_volume(AvailabilityZone="us-east-1a", Size=1)["VolumeId"]
    removed = kube.driver.teardown(env, reason="expired")
    assert f"namespace {env}" in removed.objects and f"Restore {restore}" in removed.objects
    assert not kube.cluster.find("persistentvolumes", labels=f"velero.io/restore-name={restore}")
    assert not kube.cluster.find("volumesnapshotcontents", labels=f"velero.io/restore-name={restore}")
    assert not [c for c in kube.cluster.calls if c[0] == "patch" and c[2] == "volumesnapshotcontents"]
    assert not kube.cluster.find("storageclasses") and not kube.cluster.find("restores", VELERO)
    assert [c["metadata"]["name"] for c in kube.cluster.find("configmaps", VELERO)] == []
    live = {v["VolumeId"] for v in kube.ec2.describe_volumes()["Volumes"]}
    assert volume not in live and orphan not in live and foreign in live  # only env-tagged volumes go
    assert kube.cluster.find("backups", VELERO)  # the backup and its data stay


def test_refuses_unmanaged_and_protected_namespaces(kube):
    kube.cluster.create("namespaces", {"metadata": {"name": "preview-theirs"}})
    with pytest.raises(CloneError, match="not labelled app.kubernetes.io/managed-by=prodclone"):
        kube.driver.teardown("preview-theirs")
    with pytest.raises(CloneError, match="not labelled"):
        kube.driver.begin_restore(_req("preview-theirs"), "x")
    kube.driver.cfg = dataclasses.replace(kube.driver.cfg, protected=("preview-shared",))
    with pytest.raises(CloneError, match="protected"):
        kube.driver.teardown("preview-shared")
    assert kube.cluster.get("namespaces", "preview-theirs")["status"]["phase"] == "Active"


def test_stuck_namespace_is_reported_never_finalized(kube):
    kube.driver.snapshot("r1")
    env = "preview-stuck"
    _up(kube, env)
    kube.cluster.faults.stuck_namespaces.add(env)
    with pytest.raises(CloneError, match="stuck Terminating: NamespaceContentRemaining"):
        kube.driver.teardown(env)
    assert not [c for c in kube.cluster.calls if c[3] == "finalize"]
    kube.cluster.faults.stuck_namespaces.clear()
    kube.driver.teardown(env)  # the next teardown finishes the job
    assert kube.driver.environments() == []


def test_steps_are_retry_safe_under_api_errors_and_dropped_polls(kube):
    kube.driver.snapshot("r1")
    env = "preview-flaky"
    kube.cluster.faults.fail_next("POST", r"/restores$", 500)
    from kubernetes.client import ApiException

    with pytest.raises(ApiException):
        kube.driver.begin_restore(_req(env), "run-1")
    kube.driver.begin_restore(_req(env), "run-1")  # the task's retry: namespace, SC and ConfigMap already there
    kube.cluster.faults.fail_next("GET", r"/restores/", 0, 500)  # a dropped connection, then a 500, while polling
    assert kube.driver.finish_restore(env, "run-1").status == "ready"


def test_prune_uses_delete_backup_requests_and_keeps_what_is_in_use(kube):
    s1 = kube.driver.snapshot("r1")
    _up(kube, "preview-uses-s1")
    s2, s3 = kube.driver.snapshot("r2"), kube.driver.snapshot("r3")
    assert kube.driver.prune_snapshots(keep=1) == [s2.id]
    dbr = kube.cluster.find("deletebackuprequests", VELERO)
    assert [d["spec"]["backupName"] for d in dbr] == [s2.id]
    import time

    time.sleep(0.3)  # the simulator processes the request
    assert {b["metadata"]["name"] for b in kube.cluster.find("backups", VELERO)} == {s1.id, s3.id}
