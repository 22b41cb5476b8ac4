"""The ``velero`` clone driver: clones are namespaces restored from Velero
backups of the base namespace (EBS CSI snapshots), whatever the data's size.

Its record of clones is the namespaces themselves: labels and annotations
that prodclone sets before Velero restores into them. Snapshots are Velero
Backups in the Velero namespace with prodclone's labels. Every object it
creates carries ``app.kubernetes.io/managed-by=prodclone``; teardown refuses
any namespace without it, and any protected one.

The traps this code steps around (docs/velero.md has the steps): Velero
copies the base namespace's metadata unless the target exists; modifier
conditions match the *source* namespace; clone PVs inherit the base PVs'
reclaim policy; restores leave Retain VolumeSnapshotContents behind (never
switch them to Delete: that destroys the backup's snapshot); deleting a
Backup CR leaves its data (use DeleteBackupRequest); names over 63 characters
break Velero's label selectors; a backup's labelSelector applies to pods too
and hooks run only on backed-up pods, so a Completed backup is checked for
every datastore's data; startTimestamps have whole seconds; custom resources
refuse strategic merge patches.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import secrets as pysecrets
import time
from datetime import UTC, datetime, timedelta
from hashlib import sha256
from urllib.parse import quote

import yaml

from prodclone.config import Config, Datastore
from prodclone.drivers.base import (
    CloneBusy,
    CloneDriver,
    CloneError,
    Connection,
    Environment,
    Removed,
    RestoreRequest,
    SecretStore,
    Snapshot,
    extended_expiry,
    run_post_restore_sql,
    validate_env_name,
)
from prodclone.marker import K8S_LABEL as MANAGED

log = logging.getLogger(__name__)

GROUP, VERSION = "velero.io", "v1"
P = "prodclone.io/"
DONE = ("Completed", "PartiallyFailed", "Failed", "FailedValidation")
VERIFIED = P + "verified"  # on a Completed Backup: "true" once every datastore's volumes and hooks are in it
MERGE_PATCH = "application/merge-patch+json"  # custom resources refuse strategic merge, the client's default
ALWAYS_PROTECTED = ("default", "kube-system", "kube-public", "kube-node-lease")


def _now() -> datetime:
    return datetime.now(UTC)


def _rfc3339(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(ts: str | None) -> datetime | None:
    if not ts:
        return None
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


def _usable(backup: dict) -> bool:
    """Completed, and not found lacking a datastore's data (a backup made before prodclone checked is trusted)."""
    return backup.get("status", {}).get("phase") == "Completed" \
        and backup["metadata"].get("labels", {}).get(VERIFIED) != "false"


def _sequence(backup: dict) -> int:
    """The order prodclone created its Backups in (0 for one made before it wrote this annotation)."""
    value = backup["metadata"].get("annotations", {}).get(P + "sequence", "")
    return int(value) if value.isdigit() else 0


def k8s_name(*parts: str, limit: int = 63) -> str:
    """A DNS-1123 name of at most ``limit`` chars; too-long names keep a hash so they stay unique."""
    name = re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")
    if len(name) <= limit:
        return name
    digest = sha256(name.encode()).hexdigest()[:8]
    return name[: limit - 9].rstrip("-") + "-" + digest


def rotate_postgres(env: str, host: str, port: int, secret: dict, password: str, hooks: tuple[str, ...]) -> None:
    """In the clone's own Postgres, logged in with the restored Secret's credentials (the clone's own role, the
    one its users get: hooks never run with more than that): the profile's SQL hooks, then the new password as
    the last statement, in one transaction. The verifier is computed client-side so no log sees the password."""
    import psycopg
    from psycopg import sql

    from prodclone.db import connect, password_verifier

    if not secret.get("username"):
        raise CloneError(f"{env}: the datastore's Secret has no 'username'; prodclone runs hooks and rotates the "
                         f"password only as the role the Secret names (never a default superuser)")
    dsn = psycopg.conninfo.make_conninfo(host=host, port=str(port), user=secret["username"],
                                         password=secret.get("password", ""), dbname=secret.get("database", "postgres"))
    with connect(dsn, role="clone") as conn:
        run_post_restore_sql(conn, hooks, env)
        user = conn.execute("SELECT current_user").fetchone()[0]
        conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(user),
                                                                 sql.Literal(password_verifier(conn, user, password))))
        conn.commit()


class VeleroDriver(CloneDriver):
    """``kube`` offers ``core`` (CoreV1Api), ``custom`` (CustomObjectsApi) and ``storage`` (StorageV1Api);
    ``ec2`` is a boto3 EC2 client (orphaned volumes)."""

    def __init__(self, cfg: Config, kube, ec2, secrets: SecretStore, *, poll: float = 2.0):
        self.cfg, self.v = cfg, cfg.velero
        self.core, self.custom, self.storage = kube.core, kube.custom, kube.storage
        self.ec2 = ec2
        self.secrets = secrets
        self.poll = poll

    # -- helpers ----------------------------------------------------------------

    def _protected(self) -> set[str]:
        return {*ALWAYS_PROTECTED, self.v.namespace, self.v.base_namespace, *self.v.protected_namespaces,
                *self.cfg.protected}

    def _cr(self, plural: str, name: str) -> dict | None:
        from kubernetes.client import ApiException

        try:
            return self.custom.get_namespaced_custom_object(GROUP, VERSION, self.v.namespace, plural, name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def _create_cr(self, plural: str, body: dict) -> dict:
        """Create, or return the existing object of that name (a retried task)."""
        from kubernetes.client import ApiException

        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": {"backups": "Backup", "restores": "Restore",
                                                             "deletebackuprequests": "DeleteBackupRequest"}[plural],
                **body}
        try:
            return self.custom.create_namespaced_custom_object(GROUP, VERSION, self.v.namespace, plural, body)
        except ApiException as exc:
            if exc.status == 409:
                return self._cr(plural, body["metadata"]["name"])
            raise

    def _labels(self, **extra) -> dict:
        return {MANAGED[0]: MANAGED[1], **{P + k: str(v) for k, v in extra.items() if v is not None}}

    def _wait_phase(self, plural: str, name: str) -> dict:
        """Poll until the CR reaches a terminal phase (the DAGs wait in the triggerer first; then this returns at once)."""
        from kubernetes.client import ApiException
        from urllib3.exceptions import HTTPError

        deadline = time.monotonic() + self.v.wait_minutes * 60
        while True:
            try:
                obj = self._cr(plural, name)
            except (HTTPError, ApiException) as exc:  # a dropped poll or a 5xx: poll again
                if isinstance(exc, ApiException) and (exc.status or 500) < 500:
                    raise
                log.warning("polling %s %s failed (%s); retrying", plural, name, exc)
                obj = {"status": {"phase": "unknown"}}
            if obj is None:
                raise CloneError(f"Velero {plural[:-1]} {name} disappeared while waiting for it")
            if obj.get("status", {}).get("phase") in DONE:
                return obj
            if time.monotonic() > deadline:
                raise CloneError(f"Velero {plural[:-1]} {name} is still {obj.get('status', {}).get('phase') or 'New'} "
                                 f"after {self.v.wait_minutes} minutes; Velero runs restores one at a time, so check "
                                 f"its queue (`velero restore get`) and its logs")
            time.sleep(self.poll)

    @staticmethod
    def _failure(kind: str, name: str, obj: dict) -> CloneError:
        st = obj.get("status", {})
        details = [f"phase {st.get('phase')}"]
        if st.get("failureReason"):
            details.append(f"failureReason: {st['failureReason']}")
        if st.get("validationErrors"):
            details.append("validationErrors: " + "; ".join(st["validationErrors"]))
        if st.get("errors"):
            details.append(f"{st['errors']} error(s) (see `velero {kind} logs {name}`)")
        return CloneError(f"Velero {kind} {name} did not complete: " + ", ".join(details))

    def wait_spec(self, what: str, name: str) -> dict | None:
        """What the DAG's deferrable wait polls: a Velero CR and its terminal phases."""
        if what == "snapshot":
            return {"group": GROUP, "version": VERSION, "namespace": self.v.namespace, "plural": "backups",
                    "name": name, "timeout": self.v.wait_minutes * 60}
        ns = self._namespace(name)
        restore = (ns or {}).get("metadata", {}).get("annotations", {}).get(P + "restore")
        if not restore:
            return None
        return {"group": GROUP, "version": VERSION, "namespace": self.v.namespace, "plural": "restores",
                "name": restore, "timeout": self.v.wait_minutes * 60}

    # -- snapshots --------------------------------------------------------------

    def backup_ttl_hours(self) -> int:
        # Expiring a backup deletes its Restores: it must outlive the longest clone plus Velero's GC interval.
        floor = self.cfg.max_ttl_hours + 1
        return max(self.v.backup_ttl_hours or floor, floor)

    def _hooks(self) -> list[dict]:
        hooks = []
        for ds in self.v.datastores:
            if ds.pre_hook:
                command = ds.pre_hook
            elif ds.kind == "postgres":
                command = 'psql -U "${POSTGRES_USER:-postgres}" -d "${POSTGRES_DB:-postgres}" -c CHECKPOINT'
            else:  # BGSAVE, then wait until LASTSAVE moves: the dump on disk is what the snapshot holds
                command = ('before=$(redis-cli LASTSAVE); redis-cli BGSAVE; '
                           'for i in $(seq 1 120); do [ "$(redis-cli LASTSAVE)" != "$before" ] && exit 0; sleep 1; done; '
                           'echo "BGSAVE did not finish" >&2; exit 1')
            hooks.append({"name": f"prodclone-{ds.kind}", "includedNamespaces": [self.v.base_namespace],
                          "labelSelector": {"matchLabels": dict(ds.selector)},
                          "pre": [{"exec": {"container": ds.container, "command": ["/bin/sh", "-c", command],
                                            "onError": "Fail", "timeout": "120s"}}]})
        return hooks

    def begin_snapshot(self, run_id: str, export: str = "", rows: int = 0, rules_sha256: str = "") -> str:
        backups = self._backups()
        existing = [b for b in backups if b["metadata"].get("annotations", {}).get(P + "run-id") == run_id]
        if existing:
            return existing[0]["metadata"]["name"]  # a retried task
        sequence = 1 + max((_sequence(b) for b in backups), default=0)
        name = k8s_name("prodclone", self.v.base_namespace[:20], f"{_now():%Y%m%d%H%M}",
                        sha256(run_id.encode()).hexdigest()[:6])
        spec = {"includedNamespaces": [self.v.base_namespace], "snapshotVolumes": True,
                "storageLocation": self.v.storage_location, "ttl": f"{self.backup_ttl_hours()}h0m0s",
                "hooks": {"resources": self._hooks()}}
        if self.v.first_ordinal_only:
            # PVCs of ordinal 0 are labelled by the base namespace (see include/k8s/base-namespace/): replicas resync
            spec["labelSelector"] = {"matchLabels": {P + "backup": "true"}}
        self._create_cr("backups", {
            "metadata": {"name": name, "labels": self._labels(kind="base-snapshot"),
                         "annotations": {P + "run-id": run_id, P + "export": export, P + "rows": str(rows),
                                         P + "rules-sha256": rules_sha256, P + "sequence": str(sequence)}},
            "spec": spec})
        return name

    def snapshot(self, run_id: str, export: str = "", rows: int = 0, rules_sha256: str = "") -> Snapshot:
        name = self.begin_snapshot(run_id, export, rows, rules_sha256)
        backup = self._wait_phase("backups", name)
        if backup["status"]["phase"] != "Completed":
            raise self._failure("backup", name, backup)
        backup = self._verified(backup)
        if not _usable(backup):
            raise CloneError(f"Velero backup {name} is Completed but does not hold the base's data: "
                             f"{backup['metadata']['annotations'][P + 'missing']}. It is never restored; the next "
                             f"teardown's pruning deletes it")
        return self._snap(backup)

    def _verified(self, backup: dict) -> dict:
        """Velero applies the labelSelector to every kind, pods included, and runs pre-hooks only on the pods it
        backs up: a Completed backup may hold no data of a datastore. Checked once per backup, and recorded on it."""
        if backup.get("status", {}).get("phase") != "Completed" or backup["metadata"].get("labels", {}).get(VERIFIED):
            return backup
        missing = self._missing(backup)
        mark = {"metadata": {"labels": {VERIFIED: "false" if missing else "true"},
                             "annotations": {P + "missing": "; ".join(missing)} if missing else {}}}
        return self.custom.patch_namespaced_custom_object(GROUP, VERSION, self.v.namespace, "backups",
                                                          backup["metadata"]["name"], mark, _content_type=MERGE_PATCH)

    def _missing(self, backup: dict) -> list[str]:
        """What the backup lacks of the configured datastores (their pods and the PVCs those mount, by the backup's
        own labelSelector), then whether Velero's counts of volume snapshots and hooks cover them."""
        name = backup["metadata"]["name"]
        chosen = ",".join(f"{k}={v}" for k, v in
                          ((backup["spec"].get("labelSelector") or {}).get("matchLabels") or {}).items())
        held = {p.metadata.name for p in self.core.list_namespaced_persistent_volume_claim(
            self.v.base_namespace, label_selector=chosen or None).items}
        missing, claims, pods = [], set(), 0
        for ds in self.v.datastores:
            gaps, mounted, backed_up = self._datastore_gaps(ds, chosen, held)
            missing, claims, pods = missing + gaps, claims | mounted, pods + backed_up
        st = backup.get("status", {})
        snapped = st.get("csiVolumeSnapshotsCompleted", 0) + st.get("volumeSnapshotsCompleted", 0)
        if snapped < len(claims):
            missing.append(f"Velero completed {snapped} volume snapshot(s) for the datastores' {len(claims)} PVC(s) "
                           f"({', '.join(sorted(claims))}); see `velero backup describe {name} --details`")
        hooks = (st.get("hookStatus") or {}).get("hooksAttempted", 0)
        if hooks < pods:
            missing.append(f"Velero ran {hooks} pre-hook(s) for {pods} datastore pod(s); see `velero backup logs {name}`")
        return missing

    def _datastore_gaps(self, ds: Datastore, chosen: str, held: set[str]) -> tuple[list[str], set[str], int]:
        """For one datastore: what is missing, the backed-up PVCs its pods mount, and how many of its pods the
        backup holds (its pre-hook runs on each)."""
        base, own = self.v.base_namespace, ",".join(f"{k}={v}" for k, v in ds.selector)
        fix = ("label the datastore's ordinal-0 pod and its PVC prodclone.io/backup=true (the init container of "
               "include/k8s/base-namespace does) or turn velero.first_ordinal_only off")
        pods = self.core.list_namespaced_pod(base, label_selector=",".join(filter(None, (own, chosen)))).items
        if not pods and self.core.list_namespaced_pod(base, label_selector=own).items:
            return [f"no {ds.kind} pod matches the backup's labelSelector {chosen}, so its pre-hook did not run "
                    f"and its volumes are not in the backup: {fix}"], set(), 0
        if not pods:
            return [f"no {ds.kind} pod in {base} matches {own} (velero.datastores.{ds.kind}.selector); fix the "
                    f"selector, or remove {ds.kind} from velero.datastores if the base has none"], set(), 0
        gaps, mounted = [], set()
        for pod in pods:
            claims = [v.persistent_volume_claim.claim_name for v in pod.spec.volumes or [] if v.persistent_volume_claim]
            if not claims:
                gaps.append(f"{ds.kind} pod {pod.metadata.name} mounts no PersistentVolumeClaim, so no snapshot can "
                            f"hold its data")
            gaps += [f"PVC {c} of {ds.kind} pod {pod.metadata.name} is not in the backup "
                     + (f"(its labelSelector {chosen} does not match it): {fix}" if chosen else "(it does not exist)")
                     for c in claims if c not in held]
            mounted.update(c for c in claims if c in held)
        return gaps, mounted, len(pods)

    def _backups(self) -> list[dict]:
        items = self.custom.list_namespaced_custom_object(GROUP, VERSION, self.v.namespace, "backups",
                                                          label_selector=f"{MANAGED[0]}={MANAGED[1]}")["items"]
        # Velero's own rule: newest by status.startTimestamp (a backup not started yet sorts first). Its timestamps
        # have whole seconds, so a tie goes to the order prodclone created them in, never the names' random hash.
        return sorted(items, key=lambda b: (b.get("status", {}).get("startTimestamp") or "9999", _sequence(b),
                                            b["metadata"]["name"]), reverse=True)

    def _snap(self, b: dict, used_by: list[str] | None = None) -> Snapshot:
        phase = b.get("status", {}).get("phase") or "New"
        ann = b["metadata"].get("annotations", {})
        status = "ready" if _usable(b) else "creating" if phase not in DONE else "failed"
        return Snapshot(id=b["metadata"]["name"], status=status,
                        created_at=_parse(b.get("status", {}).get("startTimestamp") or b["metadata"].get("creationTimestamp"))
                        or _now(), run_id=ann.get(P + "run-id", ""), export=ann.get(P + "export", ""),
                        rows=int(ann.get(P + "rows") or 0), rules_sha256=ann.get(P + "rules-sha256", ""),
                        used_by=used_by or [])

    def snapshots(self) -> list[Snapshot]:
        users: dict[str, list[str]] = {}
        for e in self.environments():
            users.setdefault(e.snapshot, []).append(e.name)
        return [self._snap(b, users.get(b["metadata"]["name"])) for b in self._backups()]

    def prune_snapshots(self, keep: int) -> list[str]:
        keep = max(1, keep)
        in_use = {e.snapshot for e in self.environments()}
        backups = self._backups()
        ready = [b for b in backups if _usable(b)]
        failed = [b for b in backups if b.get("status", {}).get("phase") in DONE and b not in ready]
        pruned = []
        for b in ready[keep:] + failed:
            name = b["metadata"]["name"]
            if name in in_use:
                continue
            # Deleting the Backup CR alone leaves its data behind: ask Velero to delete it.
            self._create_cr("deletebackuprequests", {"metadata": {"name": k8s_name("delete", name),
                                                                  "labels": self._labels()},
                                                     "spec": {"backupName": name}})
            pruned.append(name)
        return pruned

    # -- environments -------------------------------------------------------------

    def _namespace(self, env: str) -> dict | None:
        from kubernetes.client import ApiException

        try:
            return self.core.api_client.sanitize_for_serialization(self.core.read_namespace(env))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def _env(self, ns: dict) -> Environment:
        meta = ns["metadata"]
        labels, ann = meta.get("labels", {}), meta.get("annotations", {})
        status = ann.get(P + "status", "creating")
        if ns.get("status", {}).get("phase") == "Terminating":
            status = "deleting"
        created = _parse(ann.get(P + "created-at")) or _parse(meta.get("creationTimestamp")) or _now()
        return Environment(name=meta["name"], profile=labels.get(P + "profile", ""), snapshot=ann.get(P + "snapshot", ""),
                           status=status, requested_by=ann.get(P + "requested-by", ""),
                           pr=int(labels[P + "pr"]) if labels.get(P + "pr", "").isdigit() else None,
                           created_at=created, expires_at=_parse(ann.get(P + "expires-at")) or created,
                           run_id=ann.get(P + "run-id", ""), updated_at=_parse(ann.get(P + "updated-at")))

    def environments(self) -> list[Environment]:
        spaces = self.core.list_namespace(label_selector=f"{MANAGED[0]}={MANAGED[1]},{P}env")
        envs = [self._env(self.core.api_client.sanitize_for_serialization(n)) for n in spaces.items]
        return sorted(envs, key=lambda e: e.created_at, reverse=True)

    def _annotate(self, env: str, **values) -> None:
        values["updated-at"] = _rfc3339(_now())
        self.core.patch_namespace(env, {"metadata": {"annotations": {P + k: str(v) for k, v in values.items()}}})

    def _refuse(self, env: str, ns: dict | None) -> None:
        if env in self._protected() or env.startswith("kube-"):
            raise CloneError(f"namespace {env!r} is protected; prodclone never touches it")
        if ns is not None and ns["metadata"].get("labels", {}).get(MANAGED[0]) != MANAGED[1]:
            raise CloneError(f"namespace {env!r} exists but is not labelled {MANAGED[0]}={MANAGED[1]}; "
                             f"prodclone did not create it and will not touch it")

    def _resolve_snapshot(self, wanted: str) -> dict:
        backups = self._backups()
        if wanted == "latest":
            for b in backups:  # never a PartiallyFailed one, nor one without a datastore's data
                if _usable(b) and _usable(self._verified(b)):
                    return b
            raise CloneError("there is no Completed backup of the base that holds every datastore's data yet: "
                             "run prodclone_export first")
        b = next((b for b in backups if b["metadata"]["name"] == wanted), None)
        if b is None:
            ready = [x["metadata"]["name"] for x in backups if _usable(x)][:5]
            raise CloneError(f"snapshot {wanted!r} does not exist; ready snapshots: {', '.join(ready) or 'none'} "
                             f"(or use 'latest')")
        phase = b.get("status", {}).get("phase") or "New"
        if phase not in DONE:
            raise CloneBusy(f"snapshot {wanted!r} is still {phase}; retry when it is Completed, or use 'latest'")
        if phase != "Completed":
            raise CloneError(f"snapshot {wanted!r} is {phase} and cannot be restored; use 'latest'")
        b = self._verified(b)
        if not _usable(b):
            raise CloneError(f"snapshot {wanted!r} does not hold the base's data "
                             f"({b['metadata']['annotations'][P + 'missing']}); use 'latest'")
        return b

    def begin_restore(self, req: RestoreRequest, run_id: str) -> Environment:
        """Steps 1-4: labelled namespace, StorageClass, resource-modifier ConfigMap, Restore. Each is idempotent."""
        env = validate_env_name(req.env)
        ns = self._namespace(env)
        self._refuse(env, ns)
        if ns is not None:
            current = self._env(ns)
            if current.status == "ready" and not req.replace and ns.get("status", {}).get("phase") == "Active":
                return current  # idempotent: a healthy env is left as it is
            if current.run_id != run_id or req.replace or current.status in ("failed", "deleting"):
                if current.status == "creating" and current.run_id != run_id and not req.replace:
                    age = _now() - (current.updated_at or current.created_at)
                    if age < timedelta(minutes=self.cfg.stale_minutes):
                        raise CloneBusy(f"{env} is being created by run {current.run_id}; retry when it finishes")
                self.teardown(env, reason="replaced")
        backup = self._resolve_snapshot(req.snapshot)
        snap = backup["metadata"]["name"]
        restore = k8s_name(env[:50], sha256(f"{env}/{run_id}".encode()).hexdigest()[:8])
        expires = _now() + timedelta(hours=req.ttl_hours)
        labels = self._labels(env=env, profile=req.profile, pr=req.pr)
        annotations = {P + "expires-at": _rfc3339(expires), P + "requested-by": req.requested_by,
                       P + "snapshot": snap, P + "status": "creating", P + "run-id": run_id, P + "restore": restore,
                       P + "created-at": _rfc3339(_now()), P + "updated-at": _rfc3339(_now())}
        # 1. Our namespace first: Velero would otherwise copy the base namespace's labels and annotations.
        self._ensure(lambda: self.core.create_namespace({"metadata": {"name": env, "labels": labels,
                                                                      "annotations": annotations}}))
        created = self._namespace(env)  # never let Velero create it (it would copy the base's metadata)
        if created is None or created["metadata"].get("labels", {}).get(MANAGED[0]) != MANAGED[1] \
                or created["metadata"].get("annotations", {}).get(P + "run-id") != run_id:
            raise CloneError(f"namespace {env} is not the one prodclone just created (another run or tool made it); "
                             f"nothing was restored into it")
        # 2. A StorageClass per env: every volume is tagged with the env, and goes with its PV.
        sc = k8s_name("prodclone", env)
        profile = self.cfg.profile(req.profile)
        params = {"csi.storage.k8s.io/fstype": "ext4", **dict(self.v.volume), **dict(profile.volume),
                  "tagSpecification_1": f"prodclone-env={env}"}
        self._ensure(lambda: self.storage.create_storage_class({
            "metadata": {"name": sc, "labels": self._labels(env=env)}, "provisioner": "ebs.csi.aws.com",
            "reclaimPolicy": "Delete", "volumeBindingMode": "Immediate", "allowVolumeExpansion": True,
            "parameters": params}))
        # 3. The resource modifier: exactly one data key; conditions match the *source* namespace.
        # A JSON merge patch (Velero >= 1.13), not JSON patch ops: `add /metadata/labels/<k>` fails on a PVC
        # without labels and `replace /spec/storageClassName` on one without a class (the restore ends
        # PartiallyFailed); a merge patch creates what is missing.
        patch = {"metadata": {"labels": {MANAGED[0]: MANAGED[1], P + "env": env}}, "spec": {"storageClassName": sc}}
        rules = {"version": "v1", "resourceModifierRules": [{
            "conditions": {"groupResource": "persistentvolumeclaims", "namespaces": [self.v.base_namespace]},
            "mergePatches": [{"patchData": json.dumps(patch)}]}]}
        self._ensure(lambda: self.core.create_namespaced_config_map(self.v.namespace, {
            "metadata": {"name": restore, "labels": self._labels(env=env)},
            "data": {"modifiers.yaml": yaml.safe_dump(rules, sort_keys=False)}}))
        # 4. The Restore.
        self._create_cr("restores", {
            "metadata": {"name": restore, "labels": self._labels(env=env)},
            "spec": {"backupName": snap, "includedNamespaces": [self.v.base_namespace],
                     "namespaceMapping": {self.v.base_namespace: env}, "restorePVs": True,
                     "existingResourcePolicy": "none", "resourceModifier": {"kind": "ConfigMap", "name": restore}}})
        return self._env(self._namespace(env))

    @staticmethod
    def _ensure(create) -> None:
        from kubernetes.client import ApiException

        try:
            create()
        except ApiException as exc:
            if exc.status != 409:  # already there: a retried task
                raise

    def finish_restore(self, env: str, run_id: str, hooks: tuple[str, ...] = ()) -> Environment:
        """Steps 5-7 after the Restore: PVCs Bound and pods Ready, new credentials, the profile's hooks."""
        ns = self._namespace(env)
        if ns is None:
            raise CloneError(f"{env} does not exist; its restore did not start or it was torn down")
        self._refuse(env, ns)
        current = self._env(ns)
        if current.status == "ready":
            return current
        if current.run_id != run_id:
            raise CloneBusy(f"{env} was taken over by run {current.run_id}")
        restore = ns["metadata"]["annotations"][P + "restore"]
        if hooks and not any(ds.kind == "postgres" and ds.secret for ds in self.v.datastores):
            raise CloneError("the profile has post_restore_sql but velero.datastores has no postgres with a secret "
                             "to run it with; add one or remove the hooks")
        try:
            obj = self._wait_phase("restores", restore)
            if obj["status"]["phase"] != "Completed":
                raise self._failure("restore", restore, obj)
            self._wait_ready(env)
            self._rotate(env, hooks)
        except BaseException:
            self._annotate(env, status="failed")
            raise
        self._annotate(env, status="ready")
        return self._env(self._namespace(env))

    def _wait_ready(self, env: str) -> None:
        deadline = time.monotonic() + self.v.wait_minutes * 60
        while True:
            pvcs = self.core.list_namespaced_persistent_volume_claim(env).items
            pods = [p for ds in self.v.datastores for p in self.core.list_namespaced_pod(
                env, label_selector=",".join(f"{k}={v}" for k, v in ds.selector)).items]
            pending = [f"PVC {p.metadata.name} is {p.status.phase if p.status else 'Pending'}" for p in pvcs
                       if not p.status or p.status.phase != "Bound"]
            pending += [f"pod {p.metadata.name} is not Ready" for p in pods
                        if not any(c.type == "Ready" and c.status == "True" for c in (p.status.conditions or []))]
            if not pending and (pods or not self.v.datastores):
                return
            if time.monotonic() > deadline:
                raise CloneError(f"{env} is not ready after {self.v.wait_minutes} minutes: "
                                 + ("; ".join(pending) or "no datastore pods found"))
            time.sleep(self.poll)

    def _rotate(self, env: str, hooks: tuple[str, ...]) -> None:
        """Steps 6-7, per Postgres datastore: the hooks and then a new password in its database (as the Secret's
        role), then the new password in its Secret; the secret store gets a URL only once every datastore is
        done. Should the Secret's update fail, the database gets the Secret's password back, so the two agree
        and a retry starts over."""
        url = None
        for ds in self.v.datastores:
            if ds.kind != "postgres" or not ds.secret:
                continue
            secret = self.core.read_namespaced_secret(ds.secret, env)
            data = {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}
            password = pysecrets.token_urlsafe(24)
            host = self.v.host_template.format(service=ds.service, namespace=env)
            rotate_postgres(env, host, ds.port, data, password, hooks)
            try:
                self.core.patch_namespaced_secret(ds.secret, env, {"data": {
                    "password": base64.b64encode(password.encode()).decode()}})
            except BaseException:
                rotate_postgres(env, host, ds.port, {**data, "password": password}, data.get("password", ""), ())
                raise
            url = url or f"postgresql://{quote(data['username'])}:{quote(password, safe='')}@{host}:{ds.port}/" \
                         f"{quote(data.get('database', 'postgres'))}"
        if url:
            self.secrets.put(env, url)

    def connection(self, env: str) -> Connection:
        ns = self._namespace(env)
        if ns is None or self._env(ns).status != "ready":
            raise CloneError(f"{env} is not a ready environment")
        e = self._env(ns)
        pg = next((d for d in self.v.datastores if d.kind == "postgres"), None)
        user, db = "postgres", "postgres"
        if pg and pg.secret:
            data = self.core.read_namespaced_secret(pg.secret, env).data or {}
            user = base64.b64decode(data.get("username", "")).decode() or user
            db = base64.b64decode(data.get("database", "")).decode() or db
        return Connection(env=env, host=self.v.host_template.format(service=pg.service if pg else "", namespace=env),
                          port=pg.port if pg else 5432, database=db, user=user,
                          secret=f"Kubernetes Secret {env}/{pg.secret if pg else ''}; {self.secrets.location(env)}",
                          expires_at=_rfc3339(e.expires_at), snapshot=e.snapshot)

    def extend(self, env: str, hours: int, max_hours: int) -> Environment:
        ns = self._namespace(env)
        self._refuse(env, ns)
        if ns is None or self._env(ns).status != "ready":
            raise CloneError(f"{env} is not a ready environment; nothing to extend")
        wanted = extended_expiry(self._env(ns), hours, max_hours, _now())
        self._annotate(env, **{"expires-at": _rfc3339(wanted)})
        return self._env(self._namespace(env))

    def due_for_teardown(self) -> list[tuple[str, str]]:
        out, now = [], _now()
        for e in self.environments():
            if e.status == "failed":
                out.append((e.name, "failed"))
            elif e.expires_at < now:
                out.append((e.name, "expired"))
            elif e.status in ("creating", "deleting") and (e.updated_at or e.created_at) < now - timedelta(
                    minutes=self.cfg.stale_minutes):
                out.append((e.name, f"stuck {e.status}"))
        return out

    # -- teardown -----------------------------------------------------------------

    def teardown(self, env: str, reason: str = "requested") -> Removed:
        """In the order docs/velero.md gives (its teardown row); every step is safe to repeat."""
        from kubernetes.client import ApiException

        validate_env_name(env)
        ns = self._namespace(env)
        self._refuse(env, ns)
        removed = Removed(env=env, reason=reason)
        restore = (ns or {}).get("metadata", {}).get("annotations", {}).get(P + "restore")
        # 1. Clone PVs may carry the base's Retain policy: switch them to Delete before the namespace goes.
        for pv in self.core.list_persistent_volume().items:
            ref = pv.spec.claim_ref
            if ref and ref.namespace == env and pv.spec.persistent_volume_reclaim_policy != "Delete":
                self.core.patch_persistent_volume(pv.metadata.name, [
                    {"op": "replace", "path": "/spec/persistentVolumeReclaimPolicy", "value": "Delete"}])
                removed.objects.append(f"PV {pv.metadata.name} set to reclaimPolicy Delete")
        # 2. The namespace, waited for; a stuck one is reported, never force-finalized.
        stuck = None
        if ns is not None:
            try:
                self.core.delete_namespace(env)
            except ApiException as exc:
                if exc.status != 404:
                    raise
            stuck = self._wait_gone(env)
            if stuck is None:
                removed.objects.append(f"namespace {env}")
        # 3. The restore's VolumeSnapshotContents (Retain, pointing at the backup's snapshot): delete as they are.
        if restore:
            vscs = self.custom.list_cluster_custom_object("snapshot.storage.k8s.io", "v1", "volumesnapshotcontents",
                                                          label_selector=f"velero.io/restore-name={restore}")["items"]
            for vsc in vscs:
                self._delete(lambda n=vsc["metadata"]["name"]: self.custom.delete_cluster_custom_object(
                    "snapshot.storage.k8s.io", "v1", "volumesnapshotcontents", n))
                removed.objects.append(f"VolumeSnapshotContent {vsc['metadata']['name']}")
            # 4. The Restore CR, the modifier ConfigMap, the StorageClass.
            if self._delete(lambda: self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.v.namespace,
                                                                                "restores", restore)):
                removed.objects.append(f"Restore {restore}")
            if self._delete(lambda: self.core.delete_namespaced_config_map(restore, self.v.namespace)):
                removed.objects.append(f"ConfigMap {self.v.namespace}/{restore}")
        sc = k8s_name("prodclone", env)
        if self._delete(lambda: self.storage.delete_storage_class(sc)):
            removed.objects.append(f"StorageClass {sc}")
        # 5. Volumes that outlived their PV (a Retain policy, a crash): found by the env's tag.
        if self.ec2 is not None:
            found = self.ec2.describe_volumes(Filters=[{"Name": "tag:prodclone-env", "Values": [env]},
                                                       {"Name": "status", "Values": ["available"]}])["Volumes"]
            for vol in found:
                self.ec2.delete_volume(VolumeId=vol["VolumeId"])
                removed.objects.append(f"EBS volume {vol['VolumeId']}")
        if self.secrets.delete(env):
            removed.objects.append(f"secret {self.secrets.location(env)}")
        if stuck:
            raise CloneError(f"namespace {env} is stuck Terminating: {stuck}. prodclone never forces /finalize "
                             f"(that leaks volumes); fix what holds it, the next teardown finishes the job")
        return removed

    def _delete(self, call) -> bool:
        from kubernetes.client import ApiException

        try:
            call()
            return True
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise

    def _wait_gone(self, env: str) -> str | None:
        deadline = time.monotonic() + self.v.wait_minutes * 60
        while True:
            ns = self._namespace(env)
            if ns is None:
                return None
            if time.monotonic() > deadline:
                # The namespace controller keeps five conditions; only the True ones say what holds it.
                blocking = [c for c in ns.get("status", {}).get("conditions") or [] if c.get("status") == "True"]
                return "; ".join(f"{c.get('type')}: {c.get('message')}" for c in blocking) \
                    or "no condition is True (see `kubectl get namespace -o yaml` and the namespace controller's logs)"
            time.sleep(self.poll)
