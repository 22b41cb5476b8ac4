"""The velero driver against the in-repo fake Kubernetes API server and Velero
simulator (tests/fakekube: what they model and what not is in their
docstrings), through the real `kubernetes` client built by KubernetesHook
from a kubeconfig, with moto's EC2 for the EBS volumes and a real Postgres
standing in for the clone's datastore (credential rotation, SQL hooks).
Every API call a test makes is checked against include/k8s/rbac.yaml."""

import base64
import dataclasses
import uuid
from datetime import UTC, datetime
from hashlib import sha256

import psycopg
import pytest

from prodclone.drivers.base import CloneError, RestoreRequest
from prodclone.drivers.velero import k8s_name

BASE, VELERO = "prodclone-base", "velero"


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


def test_a_base_pvc_without_labels_or_class_is_still_restored_onto_the_envs_class(kube):
    """Velero applies JSON patch ops as evanphx/json-patch does: `add /metadata/labels/<k>` fails on a PVC with no
    labels and the restore ends PartiallyFailed. The driver's merge patch creates what is missing."""
    from fakekube.velero import _modify

    bare = {"metadata": {"name": "data-postgres-0", "namespace": BASE}, "spec": {}}
    add = [{"conditions": {"groupResource": "persistentvolumeclaims"},
            "patches": [{"operation": "add", "path": "/metadata/labels/prodclone.io~1env", "value": "x"}]}]
    assert _modify(bare, "persistentvolumeclaims", BASE, add)[1] == 1  # the fake fails as Velero does
    kube.cluster.patch("persistentvolumeclaims", "data-postgres-0", [
        {"op": "remove", "path": "/metadata/labels"}, {"op": "remove", "path": "/spec/storageClassName"}],
        "application/json-patch+json", BASE)
    kube.driver.snapshot("r1")
    env = "preview-bare-pvc"
    assert _up(kube, env).status == "ready"
    restore = kube.cluster.get("namespaces", env)["metadata"]["annotations"]["prodclone.io/restore"]
    assert kube.cluster.get("restores", restore, VELERO)["status"]["phase"] == "Completed"
    pvc = kube.cluster.get("persistentvolumeclaims", "data-postgres-0", env)
    assert pvc["spec"]["storageClassName"] == k8s_name("prodclone", env)
    assert pvc["metadata"]["labels"]["prodclone.io/env"] == env
    assert pvc["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "prodclone"


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
        kube.driver.finish_restore(env, "run-1", ())
    assert [e.status for e in kube.driver.environments()] == ["failed"]
    assert kube.driver.due_for_teardown() == [(env, "failed")]
    kube.driver.teardown(env, reason="failed")
    assert kube.driver.environments() == []


def test_teardown_leaves_nothing_and_never_touches_the_backup_snapshot(kube):
    kube.driver.snapshot("r1")
    env = "loadtest-bf"
    _up(kube, env)
    restore = kube.cluster.get("namespaces", env)["metadata"]["annotations"]["prodclone.io/restore"]
    pvs = [p for p in kube.cluster.find("persistentvolumes") if p["spec"]["claimRef"]["namespace"] == env]
    assert {p["spec"]["claimRef"]["name"] for p in pvs} == {"data-postgres-0", "data-redis-0", "data-redis-1"}
    assert {p["spec"]["persistentVolumeReclaimPolicy"] for p in pvs} == {"Retain"}  # inherited from the base PVs
    volumes = {p["spec"]["csi"]["volumeHandle"] for p in pvs}
    orphan = kube.ec2.create_volume(AvailabilityZone="us-east-1a", Size=1, TagSpecifications=[
        {"ResourceType": "volume", "Tags": [{"Key": "prodclone-env", "Value": env}]}])["VolumeId"]
    foreign = kube.ec2.create_volume(AvailabilityZone="us-east-1a", Size=1)["VolumeId"]
    removed = kube.driver.teardown(env, reason="expired")
    assert f"namespace {env}" in removed.objects and f"Restore {restore}" in removed.objects
    assert not kube.cluster.find("persistentvolumes", labels=f"velero.io/restore-name={restore}")
    assert not kube.cluster.find("volumesnapshotcontents", labels=f"velero.io/restore-name={restore}")
    assert not [c for c in kube.cluster.calls if c[0] == "patch" and c[2] == "volumesnapshotcontents"]
    assert not kube.cluster.find("storageclasses", labels="app.kubernetes.io/managed-by=prodclone")
    assert not kube.cluster.find("restores", VELERO)
    assert [c["metadata"]["name"] for c in kube.cluster.find("configmaps", VELERO)] == []
    live = {v["VolumeId"] for v in kube.ec2.describe_volumes()["Volumes"]}
    assert not volumes & live and orphan not in live and foreign in live  # only env-tagged volumes go
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
    with pytest.raises(CloneError, match="stuck Terminating: NamespaceContentRemaining") as err:
        kube.driver.teardown(env)
    # Of the namespace controller's five conditions, only the True ones say what holds it.
    conditions = kube.cluster.get("namespaces", env)["status"]["conditions"]
    assert len(conditions) == 5 and [c["status"] for c in conditions].count("True") == 2
    assert "NamespaceFinalizersRemaining: Some content in the namespace has finalizers remaining" in str(err.value)
    assert "successfully" not in str(err.value) and "Discovery" not in str(err.value)
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
    assert kube.driver.finish_restore(env, "run-1", ()).status == "ready"


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


def _held(kube, backup, plural):
    return sorted(o["metadata"]["name"] for p, o in kube.sim.contents[backup] if p == plural)


def test_first_ordinal_only_backs_up_ordinal_zero_and_runs_its_hooks(kube):
    """Braze's way: replicas resync from the primary. Velero's labelSelector applies to every kind, pods included,
    and pre-hooks run only on the pods it backs up: the example base's init containers label ordinal 0's pod and
    PVC, so the backup holds Postgres's and Redis's data, and CHECKPOINT and BGSAVE ran there (not on replicas)."""
    kube.driver.v = dataclasses.replace(kube.driver.v, first_ordinal_only=True)
    snap = kube.driver.snapshot("r1")
    backup = kube.cluster.get("backups", snap.id, VELERO)
    assert backup["spec"]["labelSelector"] == {"matchLabels": {"prodclone.io/backup": "true"}}
    assert backup["metadata"]["labels"]["prodclone.io/verified"] == "true"
    assert _held(kube, snap.id, "persistentvolumeclaims") == ["data-postgres-0", "data-redis-0"]
    assert _held(kube, snap.id, "pods") == ["postgres-0", "redis-0"]
    assert sorted((pod, container) for _, pod, container, _ in kube.sim.hook_runs) == [
        ("postgres-0", "postgres"), ("redis-0", "redis")]
    _up(kube, "preview-ordinal")
    clone = [p["metadata"]["name"] for p in kube.cluster.find("persistentvolumeclaims", "preview-ordinal")]
    assert sorted(clone) == ["data-postgres-0", "data-redis-0"]


@pytest.mark.parametrize("unlabel,reason", [
    ("persistentvolumeclaims/data-postgres-0", "PVC data-postgres-0 of postgres pod postgres-0 is not in the backup"),
    ("pods/redis-0", "no redis pod matches the backup's labelSelector prodclone.io/backup=true, so its pre-hook did "
                     "not run")])
def test_a_completed_backup_without_a_datastores_data_fails_and_is_never_restored(kube, unlabel, reason):
    """What the old example base did (its Postgres PVC and pods unlabelled): Velero ends the backup Completed with
    no Postgres volume and no CHECKPOINT. The driver fails the snapshot, marks the backup (a merge patch: custom
    resources refuse the client's strategic merge default), and neither `latest` nor its id restores it."""
    from kubernetes.client import ApiException

    good = kube.driver.snapshot("r1")  # everything in it
    plural, name = unlabel.split("/")
    kube.cluster.patch(plural, name, {"metadata": {"labels": {"prodclone.io/backup": None}}},
                       "application/merge-patch+json", BASE)
    kube.driver.v = dataclasses.replace(kube.driver.v, first_ordinal_only=True)
    with pytest.raises(CloneError, match=f"is Completed but does not hold the base's data: .*{reason}"):
        kube.driver.snapshot("r2")
    bad = kube.driver.snapshots()[0]
    backup = kube.cluster.get("backups", bad.id, VELERO)
    assert backup["status"]["phase"] == "Completed" and bad.status == "failed"
    assert backup["metadata"]["labels"]["prodclone.io/verified"] == "false"
    with pytest.raises(CloneError, match="does not hold the base's data"):
        kube.driver.snapshot("r2")  # a retried task fails the same way
    with pytest.raises(CloneError, match=f"snapshot '{bad.id}' does not hold the base's data"):
        kube.driver.begin_restore(_req("preview-bad", snapshot=bad.id), "run-1")
    assert _up(kube, "preview-good").snapshot == good.id  # latest skips it
    assert bad.id in kube.driver.prune_snapshots(keep=5)
    with pytest.raises(ApiException) as refused:  # what the driver's patch would meet without its content type
        kube.driver.custom.patch_namespaced_custom_object(
            "velero.io", "v1", VELERO, "backups", good.id, {"metadata": {"labels": {"x": "y"}}},
            _content_type="application/strategic-merge-patch+json")
    assert refused.value.status == 415


def _runs_hashing_downwards(count: int) -> list[str]:
    """Run ids whose Backup names' random hashes sort the opposite way to the order they are made in."""
    def digest(run):
        return sha256(run.encode()).hexdigest()[:6]

    runs = [f"run-{i}" for i in range(200)]
    picked = [max(runs, key=digest)]
    while len(picked) < count:
        picked.append(max((r for r in runs if digest(r) < digest(picked[-1])), key=digest))
    return picked


def test_backups_started_in_the_same_second_keep_the_order_they_were_made_in(kube):
    """Velero's timestamps have whole seconds: a tie goes to the order prodclone made the backups in, never to
    the random hash in their names (the newest would otherwise be a coin toss for `latest` and for pruning)."""
    frozen = datetime.now(UTC).replace(microsecond=0)
    kube.sim.clock = lambda: frozen
    snaps = [kube.driver.snapshot(run) for run in _runs_hashing_downwards(3)]
    assert {kube.cluster.get("backups", s.id, VELERO)["status"]["startTimestamp"] for s in snaps} == {
        frozen.strftime("%Y-%m-%dT%H:%M:%SZ")}
    assert [s.id for s in kube.driver.snapshots()] == [s.id for s in reversed(snaps)]
    assert kube.driver.latest_snapshot().id == snaps[-1].id
    assert kube.driver.prune_snapshots(keep=1) == [snaps[1].id, snaps[0].id]


def test_a_namespace_it_did_not_create_is_never_restored_into(kube):
    """A 409 on the namespace (someone else's, made in between) stops the restore before Velero is asked."""
    kube.driver.snapshot("r1")
    kube.cluster.faults.fail_next("POST", r"/api/v1/namespaces$", 409)
    with pytest.raises(CloneError, match="not the one prodclone just created"):
        kube.driver.begin_restore(_req("preview-raced"), "run-1")
    assert not kube.cluster.find("restores", VELERO)


def test_trigger_survives_dropped_polls_and_reports_the_phase(kube):
    """The deferrable wait's trigger, run as the triggerer would, through a dropped connection and a 500."""
    import asyncio

    from prodclone.airflow.triggers import VeleroPhaseTrigger

    snap = kube.driver.snapshot("r1")
    kube.cluster.faults.fail_next("GET", r"/backups/", 0, 500)
    trigger = VeleroPhaseTrigger.for_spec(kube.driver.wait_spec("snapshot", snap.id), poll_interval=0.05)
    cls, kwargs = trigger.serialize()
    assert cls == "prodclone.airflow.triggers.VeleroPhaseTrigger"

    async def first_event():
        async for event in VeleroPhaseTrigger(**kwargs).run():  # rebuilt from its serialised form
            return event.payload

    assert asyncio.run(first_event()) == {"status": "done", "phase": "Completed", "name": snap.id}
    assert not any(queue for *_, queue in kube.cluster.faults.responses)  # both faults were hit
    kube.cluster.delete("backups", snap.id, VELERO)
    assert asyncio.run(first_event())["status"] == "error"


def test_trigger_times_out_at_its_deadline_and_a_4xx_ends_it(kube):
    """The trigger's loop is prodclone.poll's: 5xx answers are retried until the deadline, then a timeout event;
    a 4xx other than 404 ends the wait at once with its status."""
    import asyncio

    from prodclone.airflow.triggers import VeleroPhaseTrigger
    from prodclone.drivers.base import WaitSpec

    snap = kube.driver.snapshot("r1")

    async def first_event(trigger):
        async for event in trigger.run():
            return event.payload

    kube.cluster.faults.fail_next("GET", r"/backups/", *([503] * 1000))
    spec = WaitSpec("backups", VELERO, snap.id, 1)
    event = asyncio.run(first_event(VeleroPhaseTrigger.for_spec(spec, poll_interval=0.05)))
    assert event == {"status": "timeout", "message": f"Velero backup {VELERO}/{snap.id} is not done after 1s; it may "
                                                     f"still finish: look at it before retrying"}
    kube.cluster.faults.responses.clear()
    kube.cluster.faults.fail_next("GET", r"/backups/", 403)
    event = asyncio.run(first_event(VeleroPhaseTrigger.for_spec(WaitSpec("backups", VELERO, snap.id, 60),
                                                                poll_interval=0.05)))
    assert event["status"] == "error" and event["message"].startswith(f"reading Velero backup {VELERO}/{snap.id}: 403")


def _password(kube, env):
    return base64.b64decode(kube.cluster.get("secrets", "postgres-credentials", env)["data"]["password"]).decode()


def _logs_in(kube, password):
    try:
        psycopg.connect(psycopg.conninfo.make_conninfo(kube.db, user=kube.role, password=password)).close()
        return True
    except psycopg.OperationalError:
        return False


def test_hooks_run_as_the_clones_role_and_the_password_is_published_last(kube):
    """Hooks log in as the role the clone's Secret names (what its users get), never a default superuser; the
    new password reaches the Secret and the secret store only after the hooks and the database succeeded."""
    kube.driver.snapshot("r1")
    env = "preview-hooks"
    kube.driver.begin_restore(_req(env), "run-1")
    audit = "CREATE TABLE hook_audit AS SELECT current_user AS cu, session_user AS su"
    with pytest.raises(CloneError, match="post-restore hook #2 failed"):
        kube.driver.finish_restore(env, "run-1", (audit, "UPDATE no_such_table SET x = 1"))
    # Nothing published, nothing changed: the Secret still holds the restored password and it still works.
    assert env not in kube.driver.secrets.values and _password(kube, env) == kube.secret["password"]
    assert _logs_in(kube, kube.secret["password"])
    with psycopg.connect(kube.db) as c:
        assert c.execute("SELECT to_regclass('hook_audit')").fetchone()[0] is None  # rolled back with the password
    assert kube.driver.finish_restore(env, "run-1", (audit,)).status == "ready"  # the retry
    with psycopg.connect(kube.db) as c:
        assert c.execute("SELECT cu, su FROM hook_audit").fetchall() == [(kube.role, kube.role)]
        c.execute("DROP TABLE hook_audit")
        c.commit()
    new = _password(kube, env)
    assert new != kube.secret["password"] and _logs_in(kube, new) and not _logs_in(kube, kube.secret["password"])
    assert psycopg.conninfo.conninfo_to_dict(kube.driver.secrets.values[env])["password"] == new


def test_a_failed_secret_update_gives_the_database_its_password_back_and_the_retry_works(kube):
    kube.driver.snapshot("r1")
    env = "preview-patch"
    kube.driver.begin_restore(_req(env), "run-1")
    from kubernetes.client import ApiException

    kube.cluster.faults.fail_next("PATCH", r"/secrets/postgres-credentials$", 500)
    with pytest.raises(ApiException):
        kube.driver.finish_restore(env, "run-1", ())
    assert env not in kube.driver.secrets.values and [e.status for e in kube.driver.environments()] == ["failed"]
    assert _password(kube, env) == kube.secret["password"] and _logs_in(kube, kube.secret["password"])
    assert kube.driver.finish_restore(env, "run-1", ()).status == "ready"
    assert _logs_in(kube, _password(kube, env)) and env in kube.driver.secrets.values


def test_a_secret_without_a_username_is_refused_not_defaulted_to_a_superuser(kube):
    kube.cluster.patch("secrets", "postgres-credentials", {"data": {"username": ""}}, "application/merge-patch+json", BASE)
    kube.driver.snapshot("r1")
    env = "preview-nouser"
    kube.driver.begin_restore(_req(env), "run-1")
    with pytest.raises(CloneError, match="Secret has no 'username'"):
        kube.driver.finish_restore(env, "run-1", ())
    assert env not in kube.driver.secrets.values
