"""`kubectl apply` of manifests into the fake cluster, with what Kubernetes'
controllers and the kubelet then do for a StatefulSet, as far as the velero
driver can tell:

- the StatefulSet controller: for each ordinal, one PVC per volumeClaimTemplate
  named `<template>-<statefulset>-<ordinal>` with the template's labels, then
  the pod `<statefulset>-<ordinal>` with the pod template's labels plus
  `statefulset.kubernetes.io/pod-name` and `apps.kubernetes.io/pod-index`,
  its service account and its volumes pointing at those PVCs;
- the EBS CSI provisioner: each PVC Bound to a new PV with the StorageClass's
  reclaimPolicy (`Delete` by default) and a `csi` source;
- the kubelet: init containers run in order, for real, through `/bin/sh` with
  `HOSTNAME` set to the pod's name and the `kubectl` of ./bin on the PATH
  (only `kubectl label`), authenticated as the pod's service account; a failing
  init container stops here, as the pod would never start. Then the pod is
  Running and Ready.
- a Secret's `stringData` is stored base64-encoded in `data`.

Not modelled: the image's own binaries (only `/bin/sh` commands), probes,
rolling updates, scaling after apply.
"""

from __future__ import annotations

import base64
import os
import subprocess
import uuid
from pathlib import Path

import yaml

from fakekube.server import RESOURCES, Cluster

BIN = Path(__file__).parent / "bin"
PLURAL = {kind: plural for plural, (_, _, kind, _) in RESOURCES.items()}


def apply(cluster: Cluster, files: list[Path], api_url: str) -> None:
    docs = [d for f in files for d in yaml.safe_load_all(f.read_text()) if d]
    for doc in sorted(docs, key=lambda d: d["kind"] != "Namespace"):  # namespaces first, as kubectl needs
        if doc["kind"] == "Secret" and "stringData" in doc:
            doc = {**doc, "data": {**doc.get("data", {}), **{k: base64.b64encode(str(v).encode()).decode()
                                                             for k, v in doc.pop("stringData").items()}}}
        cluster.create(PLURAL[doc["kind"]], doc, doc["metadata"].get("namespace"))
    for doc in docs:
        if doc["kind"] == "StatefulSet":
            for ordinal in range(doc["spec"].get("replicas", 1)):
                _start(cluster, doc, ordinal, api_url)


def _start(cluster: Cluster, sts: dict, ordinal: int, api_url: str) -> None:
    ns, name = sts["metadata"]["namespace"], f"{sts['metadata']['name']}-{ordinal}"
    template = sts["spec"]["template"]
    volumes = [_claim(cluster, ns, t, f"{t['metadata']['name']}-{name}") for t in sts["spec"].get("volumeClaimTemplates", [])]
    pod = cluster.create("pods", {
        "metadata": {"name": name, "labels": {**template["metadata"].get("labels", {}),
                                              "statefulset.kubernetes.io/pod-name": name,
                                              "apps.kubernetes.io/pod-index": str(ordinal)}},
        "spec": {**template["spec"], "volumes": volumes},
        "status": {"phase": "Pending"}}, ns)
    for init in template["spec"].get("initContainers", []):
        _run(init, pod, api_url)
    pod = cluster.get("pods", name, ns)  # what the init containers made of it (labels)
    pod["status"] = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
    cluster.replace("pods", pod, ns)


def _claim(cluster: Cluster, ns: str, template: dict, pvc: str) -> dict:
    sc = template["spec"].get("storageClassName")
    policy = cluster.get("storageclasses", sc).get("reclaimPolicy", "Delete") if sc else "Delete"
    pv = f"pvc-{uuid.uuid4()}"
    cluster.create("persistentvolumes", {
        "metadata": {"name": pv},
        "spec": {"storageClassName": sc, "persistentVolumeReclaimPolicy": policy,
                 "capacity": template["spec"].get("resources", {}).get("requests", {}),
                 "csi": {"driver": "ebs.csi.aws.com", "volumeHandle": f"vol-{uuid.uuid4().hex[:17]}"},
                 "claimRef": {"namespace": ns, "name": pvc}},
        "status": {"phase": "Bound"}})
    cluster.create("persistentvolumeclaims", {
        "metadata": {"name": pvc, "labels": dict(template["metadata"].get("labels", {}))},
        "spec": {**template["spec"], "volumeName": pv}, "status": {"phase": "Bound"}}, ns)
    return {"name": template["metadata"]["name"], "persistentVolumeClaim": {"claimName": pvc}}


def _run(container: dict, pod: dict, api_url: str) -> None:
    command = [*container.get("command", []), *container.get("args", [])]
    if command[:1] != ["/bin/sh"]:
        raise NotImplementedError(f"fakekube runs only /bin/sh init containers, not {command}")
    meta = pod["metadata"]
    env = {"PATH": f"{BIN}:{os.environ['PATH']}", "HOSTNAME": meta["name"], "KUBERNETES_API": api_url,
           "KUBERNETES_NAMESPACE": meta["namespace"],
           "KUBERNETES_TOKEN": service_account_token(meta["namespace"], pod["spec"].get("serviceAccountName", "default"))}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=30)
    if done.returncode:
        raise RuntimeError(f"init container {container['name']} of pod {meta['name']} failed: {done.stderr}")


def service_account_token(namespace: str, name: str) -> str:
    """The bearer token fakekube's pods call the API with: the calls are recorded under it (Cluster.calls_as)."""
    return f"system:serviceaccount:{namespace}:{name}"
