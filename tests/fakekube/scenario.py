"""A fake cluster ready for the velero driver: the example base namespace of
include/k8s/base-namespace applied as the StatefulSet controller and kubelet
would run it (fakekube.workloads: Postgres and Redis StatefulSets on PVs
whose reclaimPolicy is Retain, as many real bases are; ordinal 0 labelled for
backup by the init containers), Velero, moto's EC2, and a real Postgres
standing in for the clone's datastore (credential rotation and SQL hooks run
against it)."""

import base64
import dataclasses
import json
import uuid
from pathlib import Path
from types import SimpleNamespace

import boto3
import psycopg
import yaml

from fakekube import workloads
from fakekube.server import FakeKube
from fakekube.velero import VeleroSim
from prodclone.config import load_config
from prodclone.drivers.base import MemorySecrets
from prodclone.drivers.velero import VeleroDriver
from support import ROOT

BASE, VELERO = "prodclone-base", "velero"
EXAMPLE_BASE = ROOT / "include" / "k8s" / "base-namespace"
MERGE = "application/merge-patch+json"


def rbac_allows(call, manifests: Path = ROOT / "include" / "k8s" / "rbac.yaml") -> bool:
    """Whether a (Cluster)Role in ``manifests`` allows ``call``."""
    verb, group, plural, _sub, ns, name = call
    for doc in yaml.safe_load_all(manifests.read_text()):
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
    """A fake cluster with the example base namespace (StatefulSets on Retain PVs, as many real bases are),
    Velero, moto EC2, and the driver configured for them."""
    fk = FakeKube()
    ec2 = boto3.client("ec2", endpoint_url=s3_endpoint, aws_access_key_id="test", aws_secret_access_key="test",
                       region_name="us-east-1")
    sim = VeleroSim(fk.cluster, VELERO, ec2=ec2)
    fk.controllers.append(sim.reconcile)
    c = fk.cluster
    c.create("namespaces", {"metadata": {"name": VELERO}})
    # The example base namespace as `kubectl apply` would make it (its init containers label ordinal 0), with
    # metadata of its own that Velero must not copy into clones.
    workloads.apply(c, sorted(EXAMPLE_BASE.glob("*.yaml")), fk.url)
    c.patch("namespaces", BASE, {"metadata": {"labels": {"team": "data", "app.kubernetes.io/managed-by": "argocd"},
                                              "annotations": {"owner": "base-team"}}}, MERGE)
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
    c.patch("secrets", "postgres-credentials", {"data": {k: base64.b64encode(v.encode()).decode()
                                                         for k, v in secret.items()}}, MERGE, BASE)

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
    driver = VeleroDriver(cfg, clients, ec2, MemorySecrets(), poll=0.05)

    def close():
        fk.close()
        not_allowed = [call for call in c.calls if not rbac_allows(call)]
        assert not not_allowed, f"API calls include/k8s/rbac.yaml does not allow: {not_allowed}"
        labeler = c.calls_as.pop(workloads.service_account_token(BASE, "backup-labeler"), [])
        assert labeler and not c.calls_as, f"API calls from unexpected service accounts: {c.calls_as}"
        not_allowed = [call for call in labeler if not rbac_allows(call, EXAMPLE_BASE / "backup-labeler.yaml")]
        assert not not_allowed, f"API calls the example base's backup-labeler Role does not allow: {not_allowed}"
        with psycopg.connect(pg, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
            conn.execute(f"DROP ROLE IF EXISTS {role}")

    return SimpleNamespace(fk=fk, cluster=c, sim=sim, ec2=ec2, driver=driver, cfg=cfg, secret=secret, db=dbdsn, pg=pg,
                           role=role, kubeconfig=kubeconfig, close=close)
