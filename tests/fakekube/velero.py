"""A Velero simulator for the fake API server: a controller that moves
velero.io Backups, Restores and DeleteBackupRequests through their phases
the way Velero v1.18 does, as far as the velero driver can tell (see
Velero's own documentation and source; the driver's steps are in docs/velero.md):

- Backup: New -> InProgress -> Completed (or a fault's PartiallyFailed /
  Failed / FailedValidation with failureReason and validationErrors);
  holds every kind in the included namespace that its `labelSelector`
  matches, pods included (pkg/backup/backup.go applies it to every kind:
  an unlabelled PVC is simply not in a Completed backup), and each held
  PVC's PV as a CSI snapshot (`csiVolumeSnapshotsAttempted/Completed`);
  records the pre-hooks it would exec on the pods it holds, and only those
  (exec hooks need a container, so they are logged in `hook_runs`, not run;
  `hookStatus.hooksAttempted` counts them); startTimestamp,
  completionTimestamp, expiration = start + ttl, in whole seconds as
  Velero writes them (metav1.Time), so backups started in the same second
  tie; `clock` can be stopped to make them.
- Restore: FailedValidation unless the backup exists and is Completed and the
  resource-modifier ConfigMap is in the Velero namespace with exactly one data
  key. Then it applies `namespaceMapping`; uses a pre-existing target
  namespace as it is, else creates it copying the *base* namespace's labels
  and annotations (Velero does; modifiers are not applied to it); applies
  the modifier rules (conditions match the *source* namespace; RFC 6902
  `patches` via jsonpatch, so an `add` under a missing parent such as
  /metadata/labels fails as it does in Velero's evanphx/json-patch, and a
  failing patch -> PartiallyFailed; RFC 7386 `mergePatches` with
  `patchData`) to every other object; creates PVCs Bound to new PVs that
  copy the *source PV's* reclaimPolicy and labels (v1.14+), and for each a
  cluster-scoped
  VolumeSnapshotContent with deletionPolicy Retain labelled
  velero.io/restore-name (left behind by namespace deletion, issue 9186);
  StatefulSets get Ready ordinal pods. Restores run one at a time, oldest
  first (the single restore worker, issue 487).
- DeleteBackupRequest: deletes the Backup and every Restore that references it.
- Cloud side: with an EC2 client (moto), each clone PV gets an EBS volume
  tagged from its StorageClass's tagSpecification_N parameters; when a PV
  with reclaimPolicy Delete goes, so does its volume; a Retain PV's volume
  stays `available` (the leak teardown must clean up).

Not modelled: restoring pods themselves (the StatefulSet's Ready pods stand in
for them), Velero's RoleBinding action remapping subjects' namespaces, hooks
that fail (`hooksFailed` is always 0), data movers and file-system backups
(PodVolumeBackups), native (non-CSI) volume snapshots.
"""

from __future__ import annotations

import copy
import re
import uuid
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import jsonpatch
import yaml

from fakekube.server import RESOURCES, ApiStatus, Cluster, match_labels, merge_patch

RUNNING = ("", "New", "InProgress")
NOT_RESTORED = ("pods", "persistentvolumes", "backups", "restores", "deletebackuprequests", "volumesnapshots")


def _ts(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")  # metav1.Time: RFC 3339 in whole seconds, so backups can tie


def _duration(text: str) -> timedelta:
    total = 0.0
    for value, unit in re.findall(r"(\d+(?:\.\d+)?)([hms])", text or "720h"):
        total += float(value) * {"h": 3600, "m": 60, "s": 1}[unit]
    return timedelta(seconds=total)


@dataclass
class VeleroFaults:
    backup_result: str | None = None  # e.g. "PartiallyFailed": the next backup ends so
    restore_result: str | None = None  # e.g. "PartiallyFailed" or "FailedValidation"
    backup_message: str = "injected failure"


@dataclass
class VeleroSim:
    cluster: Cluster
    namespace: str = "velero"
    ec2: object | None = None  # boto3 EC2 client (moto) for the volumes behind PVs
    faults: VeleroFaults = field(default_factory=VeleroFaults)
    hook_runs: list = field(default_factory=list)  # (backup, pod, container, command)
    contents: dict = field(default_factory=dict)  # backup name -> list of (plural, object) it holds
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)  # Velero's; a test may stop it

    def __post_init__(self):
        self.cluster.on_pv_deleted.append(self._pv_deleted)

    # -- controller -----------------------------------------------------------

    def reconcile(self) -> None:
        c = self.cluster
        with c.lock:
            for b in c.find("backups", self.namespace):
                if b.get("status", {}).get("phase", "") in RUNNING:
                    self._backup(b)
            pending = [r for r in c.find("restores", self.namespace) if r.get("status", {}).get("phase", "") in RUNNING]
            if pending:  # one at a time, oldest first
                self._restore(min(pending, key=lambda r: (r["metadata"]["creationTimestamp"], r["metadata"]["name"])))
            for d in c.find("deletebackuprequests", self.namespace):
                if d.get("status", {}).get("phase") != "Processed":
                    self._delete_backup(d)

    def _set_status(self, plural: str, obj: dict, **status) -> None:
        obj.setdefault("status", {}).update(status)
        self.cluster.replace(plural, obj, self.namespace)

    # -- backups --------------------------------------------------------------

    def _backup(self, b: dict) -> None:
        spec, name = b.get("spec", {}), b["metadata"]["name"]
        if b.get("status", {}).get("phase", "") in ("", "New"):
            missing = [ns for ns in spec.get("includedNamespaces", []) if not self.cluster.find("namespaces", None)
                       or not any(n["metadata"]["name"] == ns for n in self.cluster.find("namespaces"))]
            if missing:
                return self._set_status("backups", b, phase="FailedValidation",
                                        validationErrors=[f"namespace {ns} not found" for ns in missing])
            return self._set_status("backups", b, phase="InProgress", startTimestamp=_ts(self.clock()))
        held, hooks = [], 0
        selector = _selector(spec.get("labelSelector"))
        for ns in spec.get("includedNamespaces", []):
            for plural, (group, *_, namespaced) in RESOURCES.items():
                if not namespaced or group == "velero.io":
                    continue
                for obj in self.cluster.find(plural, ns, selector):  # the label selector limits every kind, pods too
                    if plural == "pods":  # pre-hooks run only on the pods the backup holds (pkg/backup/backup.go)
                        hooks += self._pre_hooks(name, spec, obj)
                    held.append((plural, obj))
                    if plural == "persistentvolumeclaims" and obj.get("spec", {}).get("volumeName"):
                        held.append(("persistentvolumes", self.cluster.get("persistentvolumes", obj["spec"]["volumeName"])))
            held.append(("namespaces", self.cluster.get("namespaces", ns)))
        self.contents[name] = copy.deepcopy(held)
        start = datetime.strptime(b["status"]["startTimestamp"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        phase = self.faults.backup_result or "Completed"
        self.faults.backup_result = None
        status = {"phase": phase, "completionTimestamp": _ts(self.clock()), "expiration": _ts(start + _duration(spec.get("ttl"))),
                  "progress": {"totalItems": len(held), "itemsBackedUp": len(held)},
                  "hookStatus": {"hooksAttempted": hooks, "hooksFailed": 0}}
        volumes = sum(1 for plural, _ in held if plural == "persistentvolumes")  # each PVC's PV: a CSI snapshot
        if volumes:  # Velero leaves zero counts out (omitempty)
            status.update(csiVolumeSnapshotsAttempted=volumes, csiVolumeSnapshotsCompleted=volumes)
        if phase != "Completed":
            status.update(failureReason=self.faults.backup_message, errors=1)
        self._set_status("backups", b, **status)

    def _pre_hooks(self, backup: str, spec: dict, pod: dict) -> int:
        """Record the pre-hooks whose selector and namespaces match this (backed-up) pod; returns how many ran."""
        ran = 0
        for hook in (spec.get("hooks") or {}).get("resources", []):
            if hook.get("includedNamespaces") and pod["metadata"]["namespace"] not in hook["includedNamespaces"]:
                continue
            if not match_labels(pod["metadata"].get("labels"), _selector(hook.get("labelSelector"))):
                continue
            for pre in hook.get("pre", []):
                ex = pre["exec"]
                self.hook_runs.append((backup, pod["metadata"]["name"], ex.get("container"), ex["command"]))
                ran += 1
        return ran

    # -- restores -------------------------------------------------------------

    def _restore(self, r: dict) -> None:
        spec, name = r.get("spec", {}), r["metadata"]["name"]
        errors = []
        backup = next((b for b in self.cluster.find("backups", self.namespace)
                       if b["metadata"]["name"] == spec.get("backupName")), None)
        if backup is None or backup.get("status", {}).get("phase") != "Completed":
            errors.append(f"backup {spec.get('backupName')} not found or not Completed")
        rules = []
        if spec.get("resourceModifier"):
            cm_name = spec["resourceModifier"].get("name")
            cm = next((c for c in self.cluster.find("configmaps", self.namespace) if c["metadata"]["name"] == cm_name), None)
            if cm is None:
                errors.append(f"resource modifier configmap {cm_name} not found in namespace {self.namespace}")
            elif len(cm.get("data") or {}) != 1:
                errors.append(f"resource modifier configmap {cm_name} must have exactly one data key")
            else:
                rules = yaml.safe_load(next(iter(cm["data"].values()))).get("resourceModifierRules", [])
        if self.faults.restore_result == "FailedValidation":
            errors.append("injected validation failure")
            self.faults.restore_result = None
        if errors:
            return self._set_status("restores", r, phase="FailedValidation", validationErrors=errors)
        if r.get("status", {}).get("phase", "") in ("", "New"):
            return self._set_status("restores", r, phase="InProgress", startTimestamp=_ts(self.clock()))
        mapping = spec.get("namespaceMapping") or {}
        patch_errors = 0
        for plural, obj in copy.deepcopy(self.contents.get(spec["backupName"], [])):
            source_ns = obj["metadata"].get("namespace") or obj["metadata"]["name"]
            if plural == "namespaces":
                target = mapping.get(source_ns, source_ns)
                if not any(n["metadata"]["name"] == target for n in self.cluster.find("namespaces")):
                    meta = obj["metadata"]  # Velero copies the base namespace's labels and annotations
                    self.cluster.create("namespaces", {"metadata": {"name": target, "labels": meta.get("labels", {}),
                                                                    "annotations": meta.get("annotations", {})}})
        for plural, obj in copy.deepcopy(self.contents.get(spec["backupName"], [])):
            if plural in NOT_RESTORED or plural == "namespaces":
                continue
            source_ns = obj["metadata"]["namespace"]
            target = mapping.get(source_ns, source_ns)
            obj, failed = _modify(obj, plural, source_ns, rules)
            patch_errors += failed
            meta = obj["metadata"]
            for k in ("uid", "resourceVersion", "creationTimestamp", "namespace"):
                meta.pop(k, None)
            meta.setdefault("labels", {}).update({"velero.io/restore-name": name[:63], "velero.io/backup-name": spec["backupName"][:63]})
            if plural == "persistentvolumeclaims":
                self._restore_pvc(obj, source_ns, target, name, spec["backupName"])
            else:
                obj.pop("status", None)
                self._create(plural, obj, target)
            if plural == "statefulsets":
                for i in range(obj.get("spec", {}).get("replicas", 1)):
                    self._create("pods", {"metadata": {"name": f"{meta['name']}-{i}", "labels": {
                        **(obj["spec"].get("template", {}).get("metadata", {}).get("labels", {})),
                        "statefulset.kubernetes.io/pod-name": f"{meta['name']}-{i}"}},
                        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}, target)
        phase = self.faults.restore_result or ("PartiallyFailed" if patch_errors else "Completed")
        self.faults.restore_result = None
        status = {"phase": phase, "completionTimestamp": _ts(self.clock())}
        if phase != "Completed":
            status.update(errors=max(1, patch_errors), failureReason="" if patch_errors else "injected failure")
        self._set_status("restores", r, **status)

    def _create(self, plural: str, obj: dict, namespace: str | None) -> None:
        try:
            self.cluster.create(plural, obj, namespace)
        except ApiStatus as exc:  # existing resources are skipped, as existingResourcePolicy: none does
            if exc.code != 409:
                raise

    def _restore_pvc(self, pvc: dict, source_ns: str, target: str, restore: str, backup: str) -> None:
        source_pv = next((o for p, o in self.contents[backup] if p == "persistentvolumes"
                          and o["spec"].get("claimRef", {}).get("name") == pvc["metadata"]["name"]
                          and o["spec"]["claimRef"].get("namespace") == source_ns), None)
        pv_name = f"pvc-{uuid.uuid4()}"
        sc = pvc.get("spec", {}).get("storageClassName")
        pv = {"metadata": {"name": pv_name, "labels": {**(source_pv or {}).get("metadata", {}).get("labels", {}),
                                                       "velero.io/restore-name": restore[:63]}},
              "spec": {"storageClassName": sc, "capacity": pvc.get("spec", {}).get("resources", {}).get("requests", {}),
                       "persistentVolumeReclaimPolicy": (source_pv or {}).get("spec", {}).get(
                           "persistentVolumeReclaimPolicy", "Delete"),  # copied from the source PV (v1.14+)
                       "claimRef": {"namespace": target, "name": pvc["metadata"]["name"]}},
              "status": {"phase": "Bound"}}
        if self.ec2 is not None:
            pv["spec"]["csi"] = {"driver": "ebs.csi.aws.com", "volumeHandle": self._volume(sc)}
        self.cluster.create("persistentvolumes", pv)
        pvc = copy.deepcopy(pvc)
        pvc.setdefault("spec", {})["volumeName"] = pv_name
        pvc["status"] = {"phase": "Bound"}
        self._create("persistentvolumeclaims", pvc, target)
        self.cluster.create("volumesnapshotcontents", {
            "metadata": {"name": f"velero-{pvc['metadata']['name']}-{uuid.uuid4().hex[:5]}",
                         "labels": {"velero.io/restore-name": restore[:63]}},
            "spec": {"deletionPolicy": "Retain", "driver": "ebs.csi.aws.com",
                     "source": {"snapshotHandle": f"snap-{backup[:20]}"}}})

    def _volume(self, storage_class: str | None) -> str:
        tags = []
        params = {}
        with suppress(ApiStatus):  # no such StorageClass: an untagged volume
            params = self.cluster.get("storageclasses", storage_class).get("parameters", {}) if storage_class else {}
        for k, v in params.items():
            if k.startswith("tagSpecification_"):
                key, _, value = v.partition("=")
                tags.append({"Key": key, "Value": value})
        kw = {"TagSpecifications": [{"ResourceType": "volume", "Tags": tags}]} if tags else {}
        return self.ec2.create_volume(AvailabilityZone="us-east-1a", Size=1, VolumeType=params.get("type", "gp3"),
                                      **kw)["VolumeId"]

    def _pv_deleted(self, pv: dict) -> None:
        handle = pv.get("spec", {}).get("csi", {}).get("volumeHandle")
        if self.ec2 is not None and handle and pv["spec"].get("persistentVolumeReclaimPolicy") == "Delete":
            self.ec2.delete_volume(VolumeId=handle)

    def _delete_backup(self, d: dict) -> None:
        name = d["spec"]["backupName"]
        for r in self.cluster.find("restores", self.namespace):
            if r.get("spec", {}).get("backupName") == name:
                self.cluster.delete("restores", r["metadata"]["name"], self.namespace)
        with suppress(ApiStatus):  # already gone
            self.cluster.delete("backups", name, self.namespace)
        self.contents.pop(name, None)
        self._set_status("deletebackuprequests", d, phase="Processed")


def _selector(sel: dict | None) -> str | None:
    if not sel:
        return None
    return ",".join(f"{k}={v}" for k, v in (sel.get("matchLabels") or {}).items()) or None


def _modify(obj: dict, plural: str, source_ns: str, rules: list) -> tuple[dict, int]:
    """Apply the resource-modifier rules whose conditions match; returns (object, failed patches)."""
    failed = 0
    group = {"persistentvolumeclaims": "persistentvolumeclaims", "statefulsets": "statefulsets.apps"}.get(plural, plural)
    for rule in rules:
        cond = rule.get("conditions", {})
        if cond.get("groupResource") not in (group, plural):
            continue
        if cond.get("namespaces") and source_ns not in cond["namespaces"]:
            continue
        if cond.get("resourceNameRegex") and not re.search(cond["resourceNameRegex"], obj["metadata"]["name"]):
            continue
        if cond.get("labelSelector") and not match_labels(obj["metadata"].get("labels"),
                                                          _selector(cond["labelSelector"])):
            continue
        for patch in rule.get("patches", []):  # Velero's keys: operation, path, value (and from)
            op = {"op": patch.get("operation"), "path": patch.get("path")}
            op.update({k: patch[k] for k in ("value", "from") if k in patch})
            if isinstance(op.get("value"), str) and op["value"].strip().startswith(("{", "[")):
                with suppress(yaml.YAMLError):  # Velero accepts JSON/YAML documents as string values
                    op["value"] = yaml.safe_load(op["value"])
            try:
                obj = jsonpatch.apply_patch(obj, [op])
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException):
                failed += 1
        for mp in rule.get("mergePatches", []):  # Velero's JSONMergePatch: patchData, a JSON or YAML document
            obj = merge_patch(obj, yaml.safe_load(mp["patchData"]))
    return obj, failed
