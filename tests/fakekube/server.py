"""A fake Kubernetes API server for tests: the real `kubernetes` client (and
KubernetesHook, through a kubeconfig) talks to it over HTTP.

Modelled, because the velero driver depends on it:
- generic CRUD on namespaced and cluster-scoped resources, core and named
  groups (including the velero.io and snapshot.storage.k8s.io CRDs);
- list with label selectors (=, ==, !=, exists, !exists, in, notin) and
  `metadata.name` / `metadata.namespace` field selectors;
- 404 NotFound and 409 AlreadyExists as `Status` objects, resourceVersion;
- JSON patch (RFC 6902, via `jsonpatch`), JSON merge patch (RFC 7386);
  strategic merge patch on built-in kinds is treated as a merge patch
  (enough for the label/annotation/scalar patches prodclone sends), and
  refused on custom resources with 415 UnsupportedMediaType, as the API
  server does (the Python client sends a dict body as strategic merge unless
  told otherwise); any other content type is refused the same way;
- namespace deletion through phase `Terminating`: contents go, then the
  namespace, unless a fault keeps it stuck (PVCs held by their
  `kubernetes.io/pvc-protection` finalizer), with the namespace controller's
  five conditions, only `NamespaceContentRemaining` and
  `NamespaceFinalizersRemaining` True, as real clusters report;
- PVC deletion releases its PV; a PV with reclaimPolicy `Delete` then goes
  (and its cloud volume, via a hook), a `Retain` one stays `Released`.

Not modelled: watches (prodclone polls), admission, RBAC enforcement (calls
are recorded instead, per bearer token, for the RBAC tests), server-side apply, subresources
other than `status`.
"""

from __future__ import annotations

import copy
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse

import jsonpatch

# plural -> (group, version, kind, namespaced)
RESOURCES = {
    "namespaces": ("", "v1", "Namespace", False),
    "persistentvolumes": ("", "v1", "PersistentVolume", False),
    "persistentvolumeclaims": ("", "v1", "PersistentVolumeClaim", True),
    "pods": ("", "v1", "Pod", True),
    "secrets": ("", "v1", "Secret", True),
    "configmaps": ("", "v1", "ConfigMap", True),
    "services": ("", "v1", "Service", True),
    "serviceaccounts": ("", "v1", "ServiceAccount", True),
    "statefulsets": ("apps", "v1", "StatefulSet", True),
    "deployments": ("apps", "v1", "Deployment", True),
    "storageclasses": ("storage.k8s.io", "v1", "StorageClass", False),
    "roles": ("rbac.authorization.k8s.io", "v1", "Role", True),
    "rolebindings": ("rbac.authorization.k8s.io", "v1", "RoleBinding", True),
    "volumesnapshots": ("snapshot.storage.k8s.io", "v1", "VolumeSnapshot", True),
    "volumesnapshotcontents": ("snapshot.storage.k8s.io", "v1", "VolumeSnapshotContent", False),
    "backups": ("velero.io", "v1", "Backup", True),
    "restores": ("velero.io", "v1", "Restore", True),
    "deletebackuprequests": ("velero.io", "v1", "DeleteBackupRequest", True),
    "schedules": ("velero.io", "v1", "Schedule", True),
}
TOKEN = "fake-token"  # the kubeconfig's (Airflow's) bearer token; calls made with others are kept apart
CUSTOM_GROUPS = ("velero.io", "snapshot.storage.k8s.io")  # served from CRDs: no strategic merge patch


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_patch(target, patch):
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            result.pop(k, None)
        else:
            result[k] = merge_patch(result.get(k), v)
    return result


def match_labels(labels: dict, selector: str | None) -> bool:
    if not selector:
        return True
    labels = labels or {}
    for term in re.split(r",(?![^()]*\))", selector):
        term = term.strip()
        if m := re.fullmatch(r"([\w./-]+)\s+(in|notin)\s+\(([^)]*)\)", term):
            values = {v.strip() for v in m.group(3).split(",")}
            if (labels.get(m.group(1)) in values) != (m.group(2) == "in"):
                return False
        elif m := re.fullmatch(r"([\w./-]+)\s*(==|=|!=)\s*([\w./-]*)", term):
            equal = labels.get(m.group(1)) == m.group(3)
            if equal != (m.group(2) != "!="):
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def match_fields(obj: dict, selector: str | None) -> bool:
    if not selector:
        return True
    for term in selector.split(","):
        key, op, value = re.match(r"([\w.]+)(!=|==|=)(.*)", term).groups()
        actual = obj
        for part in key.split("."):
            actual = (actual or {}).get(part)
        if (str(actual) == value) != (op != "!="):
            return False
    return True


@dataclass
class Faults:
    """Switches a test flips to make the cluster misbehave."""

    stuck_namespaces: set[str] = field(default_factory=set)  # deletion never completes
    # (method, path regex) -> list of statuses to answer before behaving again; 0 = drop the connection
    responses: list[tuple[str, str, list[int]]] = field(default_factory=list)

    def fail_next(self, method: str, path_regex: str, *statuses: int) -> None:
        self.responses.append((method.upper(), path_regex, list(statuses)))

    def take(self, method: str, path: str) -> int | None:
        for m, rx, queue in self.responses:
            if queue and m == method and re.search(rx, path):
                return queue.pop(0)
        return None


class Cluster:
    """The object store, shared by the HTTP handler and the simulators."""

    def __init__(self):
        self.lock = threading.RLock()
        self.objects: dict[tuple[str, str | None, str], dict] = {}  # (plural, namespace, name) -> object
        self.version = 0
        self.calls: list[tuple] = []  # (verb, group, plural, subresource, namespace, name) per request
        self.calls_as: dict[str, list[tuple]] = {}  # the same, for other bearer tokens (a pod's service account)
        self.faults = Faults()
        self.on_pv_deleted: list = []  # callables(pv) for cloud-side effects (EBS)

    # -- store ---------------------------------------------------------------

    def _stamp(self, obj: dict) -> dict:
        self.version += 1
        obj.setdefault("metadata", {})["resourceVersion"] = str(self.version)
        return obj

    def create(self, plural: str, obj: dict, namespace: str | None = None) -> dict:
        group, version, kind, namespaced = RESOURCES[plural]
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        ns = (namespace or meta.get("namespace")) if namespaced else None
        key = (plural, ns, meta["name"])
        with self.lock:
            if key in self.objects:
                raise ApiStatus(409, "AlreadyExists", f'{plural} "{meta["name"]}" already exists')
            if ns is not None:
                space = self.objects.get(("namespaces", None, ns))
                if space is None:
                    raise ApiStatus(404, "NotFound", f'namespaces "{ns}" not found')
                if space["status"].get("phase") == "Terminating":
                    raise ApiStatus(403, "Forbidden", f"unable to create new content in namespace {ns} because it "
                                                      f"is being terminated")
                meta["namespace"] = ns
            obj["apiVersion"] = f"{group}/{version}" if group else version
            obj["kind"] = kind
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", now())
            if plural == "namespaces":
                obj.setdefault("status", {})["phase"] = "Active"
            self.objects[key] = self._stamp(obj)
            return copy.deepcopy(obj)

    def get(self, plural: str, name: str, namespace: str | None = None) -> dict:
        with self.lock:
            obj = self.objects.get((plural, namespace if RESOURCES[plural][3] else None, name))
            if obj is None:
                raise ApiStatus(404, "NotFound", f'{plural} "{name}" not found')
            return copy.deepcopy(obj)

    def find(self, plural: str, namespace: str | None = None, labels: str | None = None) -> list[dict]:
        with self.lock:
            return [copy.deepcopy(o) for (p, ns, _), o in sorted(self.objects.items(), key=lambda kv: str(kv[0]))
                    if p == plural and (namespace is None or ns == namespace)
                    and match_labels(o["metadata"].get("labels"), labels)]

    def replace(self, plural: str, obj: dict, namespace: str | None = None) -> dict:
        with self.lock:
            key = (plural, namespace if RESOURCES[plural][3] else None, obj["metadata"]["name"])
            if key not in self.objects:
                raise ApiStatus(404, "NotFound", f'{plural} "{obj["metadata"]["name"]}" not found')
            old = self.objects[key]
            obj = copy.deepcopy(obj)
            for k in ("uid", "creationTimestamp", "namespace", "deletionTimestamp"):
                if k in old["metadata"]:
                    obj["metadata"][k] = old["metadata"][k]
            obj["apiVersion"], obj["kind"] = old["apiVersion"], old["kind"]
            self.objects[key] = self._stamp(obj)
            return copy.deepcopy(obj)

    def patch(self, plural: str, name: str, patch, content_type: str, namespace: str | None = None) -> dict:
        media = content_type.split(";")[0].strip()
        accepted = ["application/json-patch+json", "application/merge-patch+json"]
        if RESOURCES[plural][0] not in CUSTOM_GROUPS:
            accepted.append("application/strategic-merge-patch+json")
        if media not in accepted:
            raise ApiStatus(415, "UnsupportedMediaType", "the body of the request was in an unknown format - "
                                                         "accepted media types include: " + ", ".join(accepted))
        with self.lock:
            obj = self.get(plural, name, namespace)
            if media == "application/json-patch+json":
                try:
                    new = jsonpatch.apply_patch(obj, patch)
                except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
                    raise ApiStatus(422, "Invalid", f"the JSON patch failed: {exc}") from None
            else:
                new = merge_patch(obj, patch)
            new["metadata"]["name"] = name
            return self.replace(plural, new, namespace)

    def delete(self, plural: str, name: str, namespace: str | None = None) -> dict:
        with self.lock:
            obj = self.get(plural, name, namespace)
            if plural == "namespaces":
                if obj["status"].get("phase") != "Terminating":
                    obj["status"]["phase"] = "Terminating"
                    obj["metadata"]["deletionTimestamp"] = now()
                    self.objects[("namespaces", None, name)] = self._stamp(obj)
                return copy.deepcopy(obj)
            del self.objects[(plural, namespace if RESOURCES[plural][3] else None, name)]
            if plural == "persistentvolumeclaims":
                self._release(obj)
            if plural == "persistentvolumes":
                for hook in self.on_pv_deleted:
                    hook(obj)
            return obj

    def _release(self, pvc: dict) -> None:
        pv_name = pvc.get("spec", {}).get("volumeName")
        pv = self.objects.get(("persistentvolumes", None, pv_name)) if pv_name else None
        if pv is None:
            return
        if pv["spec"].get("persistentVolumeReclaimPolicy", "Delete") == "Delete":
            self.delete("persistentvolumes", pv_name)
        else:
            pv.setdefault("status", {})["phase"] = "Released"
            self._stamp(pv)

    def reconcile_namespaces(self) -> None:
        """What the namespace controller does: empty a Terminating namespace, then remove it."""
        with self.lock:
            for (plural, _, name), ns in list(self.objects.items()):
                if plural != "namespaces" or ns["status"].get("phase") != "Terminating":
                    continue
                if name in self.faults.stuck_namespaces:
                    ns["status"]["conditions"] = self._stuck_conditions(name)
                    continue
                for key in [k for k in self.objects if k[1] == name]:
                    self.delete(key[0], key[2], name)
                del self.objects[("namespaces", None, name)]

    def _stuck_conditions(self, namespace: str) -> list[dict]:
        """The five conditions Kubernetes' namespace controller keeps on a Terminating namespace
        (pkg/controller/namespace/deletion: the three deletion-failure ones, then content and finalizers
        remaining), as it reports a namespace whose PVCs wait on `kubernetes.io/pvc-protection`: only the
        last two are True."""
        pvcs = sum(1 for p, ns, _ in self.objects if p == "persistentvolumeclaims" and ns == namespace) or 1
        at = now()
        return [{"type": t, "status": s, "reason": r, "message": m, "lastTransitionTime": at} for t, s, r, m in (
            ("NamespaceDeletionDiscoveryFailure", "False", "ResourcesDiscovered", "All resources successfully discovered"),
            ("NamespaceDeletionGroupVersionParsingFailure", "False", "ParsedGroupVersions",
             "All legacy kube types successfully parsed"),
            ("NamespaceDeletionContentFailure", "False", "ContentDeleted",
             "All content successfully deleted, may be waiting on finalization"),
            ("NamespaceContentRemaining", "True", "SomeResourcesRemain",
             f"Some resources are remaining: persistentvolumeclaims. has {pvcs} resource instances"),
            ("NamespaceFinalizersRemaining", "True", "SomeFinalizersRemain",
             f"Some content in the namespace has finalizers remaining: kubernetes.io/pvc-protection in {pvcs} "
             f"resource instances"))]


class ApiStatus(Exception):
    def __init__(self, code: int, reason: str, message: str):
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message

    def body(self) -> dict:
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": self.message,
                "reason": self.reason, "code": self.code}


PATH = re.compile(r"^/(?:api/(?P<cv>v1)|apis/(?P<g>[^/]+)/(?P<v>[^/]+))"
                  r"(?:/namespaces/(?P<ns>[^/]+)(?=/))?/(?P<plural>[^/]+)(?:/(?P<name>[^/]+))?(?:/(?P<sub>[^/]+))?$")


def route(path: str) -> tuple[str, str | None, str | None, str | None]:
    """(plural, namespace, name, subresource) for a request path."""
    if m := re.fullmatch(r"/api/v1/namespaces(?:/(?P<name>[^/]+))?(?:/(?P<sub>status|finalize))?", path):
        return "namespaces", None, m.group("name"), m.group("sub")
    m = PATH.match(path)
    if not m or m.group("plural") not in RESOURCES:
        raise ApiStatus(404, "NotFound", f"the server could not find the requested resource ({path})")
    return m.group("plural"), m.group("ns"), m.group("name"), m.group("sub")


class Handler(BaseHTTPRequestHandler):
    cluster: Cluster  # set per server

    def log_message(self, *args):
        pass

    def _send(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self) -> None:
        url = urlparse(self.path)
        path, query = unquote(url.path), parse_qs(url.query)
        fault = self.cluster.faults.take(self.command, path)
        if fault == 0:  # a dropped connection
            self.close_connection = True
            self.connection.shutdown(2)
            return
        if fault:
            return self._send(fault, ApiStatus(fault, "InternalError" if fault >= 500 else "Conflict",
                                               f"injected {fault}").body())
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        try:
            plural, ns, name, sub = route(path)
            group = RESOURCES[plural][0]
            verb = {"GET": "get" if name else "list", "POST": "create", "PUT": "update", "PATCH": "patch",
                    "DELETE": "delete"}[self.command]
            token = self.headers.get("Authorization", "").removeprefix("Bearer ")
            calls = self.cluster.calls if token == TOKEN else self.cluster.calls_as.setdefault(token, [])
            calls.append((verb, group, plural, sub, ns, name))
            c = self.cluster
            if self.command == "GET" and name:
                return self._send(200, c.get(plural, name, ns))
            if self.command == "GET":
                items = [o for o in c.find(plural, ns, (query.get("labelSelector") or [None])[0])
                         if match_fields(o, (query.get("fieldSelector") or [None])[0])]
                g, v, kind, _ = RESOURCES[plural]
                return self._send(200, {"kind": f"{kind}List", "apiVersion": f"{g}/{v}" if g else v,
                                        "metadata": {"resourceVersion": str(c.version)}, "items": items})
            if self.command == "POST":
                return self._send(201, c.create(plural, body, ns))
            if self.command == "PUT":
                return self._send(200, c.replace(plural, body, ns))
            if self.command == "PATCH":
                return self._send(200, c.patch(plural, name, body, self.headers.get("Content-Type", ""), ns))
            if self.command == "DELETE":
                return self._send(200, c.delete(plural, name, ns))
        except ApiStatus as st:
            return self._send(st.code, st.body())

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle


class FakeKube:
    """The server, its cluster, and a background loop for controllers (namespace deletion, Velero)."""

    def __init__(self, tick: float = 0.05):
        self.cluster = Cluster()
        handler = type("BoundHandler", (Handler,), {"cluster": self.cluster})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        self.controllers = [self.cluster.reconcile_namespaces]
        self._stop = threading.Event()
        self.tick = tick
        self._threads = [threading.Thread(target=self.httpd.serve_forever, daemon=True),
                         threading.Thread(target=self._loop, daemon=True)]
        for t in self._threads:
            t.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            for controller in self.controllers:
                try:
                    controller()
                except Exception as exc:  # a controller bug must show, not kill the loop silently
                    print(f"fakekube controller {controller}: {exc!r}")
            time.sleep(self.tick)

    def kubeconfig(self) -> dict:
        return {"apiVersion": "v1", "kind": "Config", "current-context": "fake",
                "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
                "users": [{"name": "airflow", "user": {"token": TOKEN}}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "airflow"}}]}

    def close(self) -> None:
        self._stop.set()
        self.httpd.shutdown()
