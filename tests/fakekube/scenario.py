"""A fake cluster ready for the velero driver: a base namespace with a Postgres
StatefulSet on a PV whose reclaimPolicy is Retain (as many real bases are),
Velero, moto's EC2, and a real Postgres standing in for the clone's
datastore (credential rotation and SQL hooks run against it)."""

import base64
import dataclasses
import json
import uuid
from types import SimpleNamespace

import boto3
import psycopg
import yaml

from fakekube.server import FakeKube
from fakekube.velero import VeleroSim
from prodclone.config import load_config
from prodclone.drivers.base import MemorySecrets
from prodclone.drivers.velero import VeleroDriver, rotate_postgres
from support import ROOT

BASE, VELERO = "prodclone-base", "velero"


def rbac_allows(call) -> bool:
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


def build(pg, s3_endpoint, tmp_path, monkeypatch, new_db):
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

    def close():
        fk.close()
        not_allowed = [call for call in c.calls if not rbac_allows(call)]
        assert not not_allowed, f"API calls include/k8s/rbac.yaml does not allow: {not_allowed}"
        with psycopg.connect(pg, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
            conn.execute(f"DROP ROLE IF EXISTS {role}")

    return SimpleNamespace(fk=fk, cluster=c, sim=sim, ec2=ec2, driver=driver, cfg=cfg, secret=secret, db=dbdsn, pg=pg,
                           role=role, kubeconfig=kubeconfig, close=close)
