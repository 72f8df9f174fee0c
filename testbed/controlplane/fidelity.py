"""Fidelity as a number: one request corpus sent to the real and to the emulated control plane of a minor.

    python -m testbed.controlplane fidelity 1.33 [--json out.json]

The corpus (:func:`corpus`, generated, ~400 requests) covers what the stack, helm, kubectl and the suites
send: create / duplicate create / get / missing get / list / label and field selectors / dry-run /
merge, strategic-merge and JSON patches (and a failing JSON-patch test) / update and stale update /
delete / get after delete, for every kind they use, plus invalid objects. Each response is normalised
(uids, resourceVersions, times, generated names, allocated IPs and managedFields removed; list items
reduced to their names) and the two sides are compared case by case. The identical fraction per minor
is the score; each differing case is listed with its id.
"""

from __future__ import annotations

import copy
import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

NS = "fidelity"
_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
_DROP = {"uid", "resourceVersion", "creationTimestamp", "managedFields", "selfLink", "continue",
         "remainingItemCount"}
_IPS = {"clusterIP", "clusterIPs"}
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# names the apiserver makes with a random suffix (the projected service-account token volume)
_RANDOM_SUFFIX = re.compile(r"^(kube-api-access)-[a-z0-9]{5}$")


@dataclass
class Case:
    id: str
    method: str
    path: str
    body: Any = None
    query: dict[str, Any] | None = None
    content_type: str = "application/json"
    # a PUT of what the previous request on this path returned, changed by ``edit`` (the server's own
    # uid / resourceVersion carried, as clients do)
    edit: Callable[[dict[str, Any]], None] | None = None
    ignore: tuple[str, ...] = ()  # top-level fields controllers change asynchronously (e.g. "status")


@dataclass
class Kind:
    plural: str
    base: str  # "/api/v1" or "/apis/<group>/<version>"
    kind: str
    sample: Callable[[str], dict[str, Any]]  # name -> object
    namespaced: bool = True
    ignore: tuple[str, ...] = ()
    strategic: bool = True  # built-in kinds take strategic-merge patches; custom resources do not

    def collection(self, ns: str = NS) -> str:
        if self.namespaced:
            return f"{self.base}/namespaces/{ns}/{self.plural}"
        return f"{self.base}/{self.plural}"


def _meta(name: str, **labels: str) -> dict[str, Any]:
    return {"name": name, "labels": {"fidelity": "yes", **labels}}


def _pod_spec() -> dict[str, Any]:
    return {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"],
                            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}


def _template(app: str) -> dict[str, Any]:
    return {"metadata": {"labels": {"app": app}}, "spec": _pod_spec()}


def kinds() -> list[Kind]:
    wl = ("status",)
    return [
        Kind("configmaps", "/api/v1", "ConfigMap", lambda n: {"metadata": _meta(n), "data": {"k": "v"}}),
        Kind("secrets", "/api/v1", "Secret",
             lambda n: {"metadata": _meta(n), "type": "Opaque", "stringData": {"k": "v"}}),
        Kind("services", "/api/v1", "Service", lambda n: {"metadata": _meta(n), "spec": {
            "selector": {"app": n}, "ports": [{"port": 80, "targetPort": 8080}]}}),
        Kind("serviceaccounts", "/api/v1", "ServiceAccount", lambda n: {"metadata": _meta(n)}),
        Kind("pods", "/api/v1", "Pod", lambda n: {"metadata": _meta(n), "spec": {
            **_pod_spec(), "nodeName": "fidelity-nowhere"}}, ignore=wl),
        Kind("limitranges", "/api/v1", "LimitRange", lambda n: {"metadata": _meta(n), "spec": {"limits": [
            {"type": "Container", "max": {"cpu": "64"}}]}}),
        Kind("resourcequotas", "/api/v1", "ResourceQuota",
             lambda n: {"metadata": _meta(n), "spec": {"hard": {"pods": "500"}}}, ignore=wl),
        Kind("persistentvolumeclaims", "/api/v1", "PersistentVolumeClaim", lambda n: {
            "metadata": _meta(n), "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "none",
                                           "resources": {"requests": {"storage": "1Gi"}}}}, ignore=wl),
        Kind("endpoints", "/api/v1", "Endpoints", lambda n: {"metadata": _meta(n), "subsets": [
            {"addresses": [{"ip": "10.1.2.3"}], "ports": [{"port": 80}]}]}),
        Kind("events", "/api/v1", "Event", lambda n: {
            "metadata": _meta(n), "involvedObject": {"kind": "Pod", "namespace": NS, "name": "x"},
            "reason": "Test", "message": "fidelity", "type": "Normal"}),
        Kind("deployments", "/apis/apps/v1", "Deployment", lambda n: {"metadata": _meta(n), "spec": {
            "replicas": 0, "selector": {"matchLabels": {"app": n}}, "template": _template(n)}}, ignore=wl),
        Kind("daemonsets", "/apis/apps/v1", "DaemonSet", lambda n: {"metadata": _meta(n), "spec": {
            "selector": {"matchLabels": {"app": n}}, "template": _template(n)}}, ignore=wl),
        Kind("statefulsets", "/apis/apps/v1", "StatefulSet", lambda n: {"metadata": _meta(n), "spec": {
            "replicas": 0, "serviceName": n, "selector": {"matchLabels": {"app": n}},
            "template": _template(n)}}, ignore=wl),
        Kind("jobs", "/apis/batch/v1", "Job", lambda n: {"metadata": _meta(n), "spec": {
            "suspend": True, "template": {"spec": {**_pod_spec(), "restartPolicy": "Never"}}}},
             ignore=wl),
        Kind("cronjobs", "/apis/batch/v1", "CronJob", lambda n: {"metadata": _meta(n), "spec": {
            "schedule": "0 0 1 1 *", "suspend": True, "jobTemplate": {"spec": {"template": {"spec": {
                **_pod_spec(), "restartPolicy": "Never"}}}}}}, ignore=wl),
        Kind("roles", "/apis/rbac.authorization.k8s.io/v1", "Role", lambda n: {
            "metadata": _meta(n),
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]}),
        Kind("rolebindings", "/apis/rbac.authorization.k8s.io/v1", "RoleBinding", lambda n: {
            "metadata": _meta(n), "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                              "name": "view"},
            "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": NS}]}),
        Kind("clusterroles", "/apis/rbac.authorization.k8s.io/v1", "ClusterRole", lambda n: {
            "metadata": _meta(n), "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}]},
             namespaced=False),
        Kind("clusterrolebindings", "/apis/rbac.authorization.k8s.io/v1", "ClusterRoleBinding", lambda n: {
            "metadata": _meta(n), "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                              "name": "view"},
            "subjects": [{"kind": "User", "name": "fidelity", "apiGroup": "rbac.authorization.k8s.io"}]},
             namespaced=False),
        Kind("poddisruptionbudgets", "/apis/policy/v1", "PodDisruptionBudget", lambda n: {
            "metadata": _meta(n), "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": n}}}},
             ignore=wl),
        Kind("priorityclasses", "/apis/scheduling.k8s.io/v1", "PriorityClass",
             lambda n: {"metadata": _meta(n), "value": 1000}, namespaced=False),
        Kind("leases", "/apis/coordination.k8s.io/v1", "Lease", lambda n: {
            "metadata": _meta(n), "spec": {"holderIdentity": "fidelity", "leaseDurationSeconds": 15}}),
        Kind("mutatingwebhookconfigurations", "/apis/admissionregistration.k8s.io/v1",
             "MutatingWebhookConfiguration", lambda n: {"metadata": _meta(n), "webhooks": [{
                 "name": "fidelity.example.com", "admissionReviewVersions": ["v1"], "sideEffects": "None",
                 "failurePolicy": "Ignore", "clientConfig": {"url": "https://127.0.0.1:1/mutate"},
                 "objectSelector": {"matchLabels": {"never": "matches"}},
                 "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                            "resources": ["pods"]}]}]}, namespaced=False),
        Kind("storageclasses", "/apis/storage.k8s.io/v1", "StorageClass",
             lambda n: {"metadata": _meta(n), "provisioner": "example.com/none"}, namespaced=False),
        Kind("networkpolicies", "/apis/networking.k8s.io/v1", "NetworkPolicy", lambda n: {
            "metadata": _meta(n), "spec": {"podSelector": {"matchLabels": {"app": n}}}}),
    ]


def _kind_cases(k: Kind) -> Iterator[Case]:
    col = k.collection()
    name = f"fid-{k.plural[:20]}"
    item = f"{col}/{name}"
    obj = {"apiVersion": k.base.split("/", 2)[-1] if k.base != "/api/v1" else "v1", "kind": k.kind,
           **k.sample(name)}
    ig = k.ignore
    p = k.plural
    yield Case(f"{p}/create-dry-run", "POST", col, obj, query={"dryRun": "All"}, ignore=ig)
    yield Case(f"{p}/get-before-create", "GET", item, ignore=ig)
    yield Case(f"{p}/create", "POST", col, obj, ignore=ig)
    yield Case(f"{p}/create-again", "POST", col, obj, ignore=ig)
    bad = copy.deepcopy(obj)
    bad["metadata"]["name"] = "Not_A_Valid_Name"
    yield Case(f"{p}/create-invalid-name", "POST", col, bad, ignore=ig)
    yield Case(f"{p}/get", "GET", item, ignore=ig)
    yield Case(f"{p}/list", "GET", col, ignore=ig)
    yield Case(f"{p}/list-label-match", "GET", col, query={"labelSelector": "fidelity=yes"}, ignore=ig)
    yield Case(f"{p}/list-label-set", "GET", col, query={"labelSelector": "fidelity in (no,maybe)"},
               ignore=ig)
    yield Case(f"{p}/list-field-name", "GET", col, query={"fieldSelector": f"metadata.name={name}"},
               ignore=ig)
    yield Case(f"{p}/list-bad-selector", "GET", col, query={"labelSelector": "a b c"}, ignore=ig)
    yield Case(f"{p}/patch-merge", "PATCH", item, {"metadata": {"labels": {"patched": "merge"}}},
               content_type="application/merge-patch+json", ignore=ig)
    if k.strategic:
        yield Case(f"{p}/patch-strategic", "PATCH", item, {"metadata": {"annotations": {"s": "1"}}},
                   content_type="application/strategic-merge-patch+json", ignore=ig)
    yield Case(f"{p}/patch-json", "PATCH", item,
               [{"op": "add", "path": "/metadata/labels/json", "value": "yes"}],
               content_type="application/json-patch+json", ignore=ig)
    yield Case(f"{p}/patch-json-test-fails", "PATCH", item,
               [{"op": "test", "path": "/metadata/labels/json", "value": "no"}],
               content_type="application/json-patch+json", ignore=ig)
    yield Case(f"{p}/get-for-update", "GET", item, ignore=ig)
    yield Case(f"{p}/update", "PUT", item, edit=lambda o: o["metadata"]["labels"].update(updated="yes"),
               ignore=ig)

    def stale(o: dict[str, Any]) -> None:
        o["metadata"]["resourceVersion"] = "1"

    yield Case(f"{p}/update-stale", "PUT", item, edit=stale, ignore=ig)
    yield Case(f"{p}/delete", "DELETE", item, ignore=(*ig, "metadata", "spec", "details"))
    yield Case(f"{p}/delete-again", "DELETE", item, ignore=ig)


def corpus() -> list[Case]:
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": _meta(NS)}
    cases = [Case("namespaces/create", "POST", "/api/v1/namespaces", ns, ignore=("status", "spec")),
             Case("version", "GET", "/version", ignore=("gitCommit", "buildDate", "goVersion", "compiler",
                                                        "platform", "emulationMajor", "emulationMinor",
                                                        "minCompatibilityMajor", "minCompatibilityMinor")),
             Case("namespaces/get-missing", "GET", "/api/v1/namespaces/fidelity-missing")]
    for k in kinds():
        cases += list(_kind_cases(k))
    cases.append(Case("namespaces/delete", "DELETE", f"/api/v1/namespaces/{NS}",
                      ignore=("status", "spec", "metadata")))
    return cases


# -- normalisation -------------------------------------------------------------------------------------


def normalise(body: Any, ignore: tuple[str, ...] = ()) -> Any:
    if isinstance(body, dict):
        if body.get("kind", "").endswith("List") and isinstance(body.get("items"), list):
            return {"kind": body["kind"], "apiVersion": body.get("apiVersion"),
                    "items": sorted((i.get("metadata") or {}).get("name", "") for i in body["items"])}
        out = {}
        for key, value in body.items():
            if key in _DROP or key in ignore:
                continue
            if key in _IPS:
                out[key] = "<ip>"
            elif key == "name" and isinstance(value, str) and re.search(r"-[a-z0-9]{5}$", value) \
                    and body.get("generateName"):
                out[key] = "<generated>"
            else:
                out[key] = normalise(value)
        return out
    if isinstance(body, list):
        return [normalise(v) for v in body]
    if isinstance(body, str):
        if _TIME.match(body):
            return "<time>"
        body = _RANDOM_SUFFIX.sub(r"\1-<random>", _UUID.sub("<uuid>", body))
    return body


@dataclass
class Answer:
    status: int
    body: Any


@dataclass
class Result:
    minor: str
    total: int
    identical: int
    differences: list[dict[str, Any]] = field(default_factory=list)

    @property
    def fraction(self) -> float:
        return self.identical / self.total if self.total else 0.0


def send(kube: Any, cases: list[Case]) -> list[Answer]:
    """Send the corpus in order through a :class:`kubeclient.client.Kube`; every answer, errors included."""
    from kubeclient.client import ApiError

    last: dict[str, Any] = {}
    out = []
    for c in cases:
        body = c.body
        if c.edit is not None:
            body = copy.deepcopy(last.get(c.path) or {})
            if body:
                c.edit(body)
        try:
            resp = kube.request(c.method, c.path, body, query=c.query, content_type=c.content_type)
            ans = Answer(200, resp)
            if c.method == "GET" and isinstance(resp, dict):
                last[c.path] = resp
        except ApiError as e:
            ans = Answer(e.status, e.body if e.body is not None else {"raw": str(e)})
        out.append(ans)
        if c.id == "namespaces/create":
            _settle(kube)
    return out


def _settle(kube: Any, timeout: float = 30) -> None:
    """Wait for what the controllers put into a new namespace (its ``default`` ServiceAccount and the
    ``kube-root-ca.crt`` ConfigMap): kube-controller-manager adds them asynchronously, and the corpus
    compares the API, not how fast a controller is."""
    from kubeclient.client import ApiError

    deadline = time.monotonic() + timeout
    for path in (f"/api/v1/namespaces/{NS}/serviceaccounts/default",
                 f"/api/v1/namespaces/{NS}/configmaps/kube-root-ca.crt"):
        while time.monotonic() < deadline:
            try:
                kube.get(path)
                break
            except ApiError:
                time.sleep(0.1)


def compare(minor: str, cases: list[Case], real: list[Answer], emulated: list[Answer]) -> Result:
    res = Result(minor, len(cases), 0)
    for c, a, b in zip(cases, real, emulated, strict=True):
        na, nb = normalise(a.body, c.ignore), normalise(b.body, c.ignore)
        # Status errors: code, reason and details decide; message wording is compared too
        if a.status == b.status and na == nb:
            res.identical += 1
        else:
            res.differences.append({"case": c.id, "real": {"status": a.status, "body": _short(na)},
                                    "emulated": {"status": b.status, "body": _short(nb)}})
    return res


def _short(v: Any, limit: int = 600) -> Any:
    text = json.dumps(v, sort_keys=True)
    return v if len(text) <= limit else text[:limit] + "..."
