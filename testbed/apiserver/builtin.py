"""Built-in admission plugins and the few controllers that live with the testbed apiserver.

Real clusters split these between kube-apiserver admission plugins (ServiceAccount, Priority,
DefaultTolerationSeconds, NamespaceLifecycle) and kube-controller-manager loops (service-account
and token controllers, root-CA publisher, namespace finalizer, garbage collector, quota status).
The testbed runs them in the apiserver process so a bare ``testbed up`` behaves like a cluster; the
difference is listed in ``testbed/DIFFERENCES.md``.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import ipaddress
import logging
from typing import TYPE_CHECKING, Any

from testbed.k8s.timefmt import now as now_rfc3339

from . import defaults, errors, quota
from .auth import TokenAuthority
from .errors import APIError
from .meta import new_uid, random_suffix
from .registry import SYSTEM_USER
from .resources import RESOURCES, ResourceType
from .target import Target

if TYPE_CHECKING:
    from .registry import Registry

log = logging.getLogger("testbed.apiserver.builtin")

SERVICE_CIDR = ipaddress.ip_network("10.96.0.0/16")


class BuiltIns:
    def __init__(self, registry: Registry, authority: TokenAuthority, ca_pem: bytes) -> None:
        self.registry = registry
        self.store = registry.store
        self.profile = registry.profile
        self.authority = authority
        self.ca_pem = ca_pem
        self._tasks: set[asyncio.Task[Any]] = set()
        self._next_ip = 1
        registry.builtins = self
        registry.after_write.append(self._after_write)

    # -- admission ---------------------------------------------------------------------------
    def _default_storage_class(self, pvc: dict[str, Any]) -> None:
        """The DefaultStorageClass admission plugin: a claim without ``storageClassName`` gets the class
        annotated as default (the newest, when several are)."""
        spec = pvc.setdefault("spec", {})
        if "storageClassName" in spec and spec["storageClassName"] is not None:
            return
        if (pvc.get("metadata", {}).get("annotations") or {}).get("volume.beta.kubernetes.io/storage-class"):
            return
        defaults_ = [
            sc for sc in self.store.list("storageclasses.storage.k8s.io")
            if (sc["metadata"].get("annotations") or {}).get(DEFAULT_CLASS_ANNOTATION) == "true"
        ]
        if defaults_:
            newest = max(defaults_, key=lambda sc: (sc["metadata"].get("creationTimestamp", ""),
                                                    sc["metadata"]["name"]))
            spec["storageClassName"] = newest["metadata"]["name"]

    def admit_create(self, t: Target, obj: dict[str, Any]) -> None:
        if t.rtype.store_key == "persistentvolumeclaims":
            self._default_storage_class(obj)
            return
        if t.rtype.store_key != "pods":
            return
        spec = obj.setdefault("spec", {})
        name = obj["metadata"].get("name") or obj["metadata"].get("generateName", "")
        sa_name = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
        sa = self.store.get("serviceaccounts", t.namespace, sa_name)
        if sa is None:
            raise APIError(
                403,
                "Forbidden",
                f'pods "{name}" is forbidden: error looking up service account '
                f'{t.namespace}/{sa_name}: serviceaccount "{sa_name}" not found',
                details={"name": name, "kind": "pods"},
            )
        defaults.default_pod_admission(self.profile, obj, sa, random_suffix())
        pc_name = spec.get("priorityClassName")
        if pc_name:
            pc = self.store.get("priorityclasses.scheduling.k8s.io", "", pc_name)
            if pc is None:
                raise APIError(
                    403,
                    "Forbidden",
                    f'pods "{name}" is forbidden: no PriorityClass with name {pc_name} was found',
                    details={"name": name, "kind": "pods"},
                )
        else:
            pc = next(
                (p for p in self.store.list("priorityclasses.scheduling.k8s.io") if p.get("globalDefault")),
                None,
            )
        defaults.default_pod_priority(self.profile, obj, pc)

    def before_store(
        self, t: Target, obj: dict[str, Any], old: dict[str, Any] | None, dry_run: bool = False
    ) -> None:
        if t.rtype.store_key == "services" and old is None:
            spec = obj.setdefault("spec", {})
            if dry_run and self.profile.minor <= 22:
                pass  # up to 1.22 a dry-run create allocates no cluster IP (measured on 1.18-1.22)
            elif spec.get("type", "ClusterIP") != "ExternalName" and not spec.get("clusterIP"):
                spec["clusterIP"] = self._allocate_ip()
                spec["clusterIPs"] = [spec["clusterIP"]]
            elif spec.get("clusterIP") and spec["clusterIP"] != "None":
                spec.setdefault("clusterIPs", [spec["clusterIP"]])
        if t.rtype.store_key == "services":
            self._allocate_node_ports(obj)
        if t.rtype.store_key == "secrets" and obj.get("type") == "kubernetes.io/service-account-token":
            self._fill_token_secret(t.namespace, obj)

    def _allocate_node_ports(self, svc: dict[str, Any]) -> None:
        """NodePort and LoadBalancer Services get a free port of 30000-32767 for each port that names
        none (the node agents listen there on their node addresses: testbed/node/clusternet.py)."""
        spec = svc.get("spec") or {}
        stype = spec.get("type")
        if stype not in ("NodePort", "LoadBalancer") or (
                stype == "LoadBalancer" and spec.get("allocateLoadBalancerNodePorts") is False):
            return
        me = (svc["metadata"].get("namespace"), svc["metadata"].get("name"))
        used = {int(p["nodePort"]) for s in self.store.list("services")
                if (s["metadata"].get("namespace"), s["metadata"].get("name")) != me
                for p in (s.get("spec") or {}).get("ports") or [] if p.get("nodePort")}
        used |= {int(p["nodePort"]) for p in spec.get("ports") or [] if p.get("nodePort")}
        free = (n for n in range(30000, 32768) if n not in used)
        for p in spec.get("ports") or []:
            if not p.get("nodePort"):
                p["nodePort"] = next(free, 0) or None
                if p["nodePort"] is None:
                    del p["nodePort"]

    def _allocate_ip(self) -> str:
        # Addresses are labels only: nothing is ever sent to a service cluster IP.
        used = {s.get("spec", {}).get("clusterIP") for s in self.store.list("services")}
        while True:
            ip = str(SERVICE_CIDR.network_address + self._next_ip)
            self._next_ip += 1
            if ip not in used:
                return ip

    def _fill_token_secret(self, namespace: str, secret: dict[str, Any]) -> None:
        ann = secret["metadata"].get("annotations") or {}
        sa_name = ann.get("kubernetes.io/service-account.name", "")
        sa = self.store.get("serviceaccounts", namespace, sa_name)
        if sa is None or (secret.get("data") or {}).get("token"):
            return
        ann["kubernetes.io/service-account.uid"] = sa["metadata"]["uid"]
        secret["metadata"]["annotations"] = ann
        token, _ = self.authority.issue_service_account_token(
            namespace,
            sa_name,
            sa["metadata"]["uid"],
            audiences=[],
            expiration_seconds=0,
            legacy=True,
            secret_name=secret["metadata"]["name"],
        )
        data = secret.setdefault("data", {})
        data["token"] = base64.b64encode(token.encode()).decode()
        data["ca.crt"] = base64.b64encode(self.ca_pem).decode()
        data["namespace"] = base64.b64encode(namespace.encode()).decode()

    # -- controllers ---------------------------------------------------------------------------
    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("built-in controller task failed: %r", task.exception())

    async def _after_write(
        self, event: str, rt: ResourceType, obj: dict[str, Any] | None, old: dict[str, Any] | None
    ) -> None:
        cur = obj if obj is not None else old
        assert cur is not None
        meta = cur["metadata"]
        if rt.store_key == "namespaces" and event == "ADDED":
            await self._populate_namespace(meta["name"])
        elif rt.store_key == "serviceaccounts" and event == "ADDED" and self.profile.auto_sa_token_secret:
            await self._create_token_secret(cur)
        if (
            rt.namespaced
            and rt.store_key != "resourcequotas"
            and self.store.count("resourcequotas")
            and self.store.list("resourcequotas", meta.get("namespace", ""))
        ):
            self.recompute_quota(meta.get("namespace", ""))
        if rt.store_key == "resourcequotas" and event != "DELETED":
            self.recompute_quota(meta.get("namespace", ""))
        if event == "ADDED" and meta.get("ownerReferences") and obj is not None:
            # the garbage collector also deletes a dependent created after its owner was deleted (a
            # ReplicaSet the Deployment controller made just as its Deployment went away)
            self._spawn(self._collect_if_orphan(rt, obj))

    async def _collect_if_orphan(self, rt: ResourceType, obj: dict[str, Any]) -> None:
        await asyncio.sleep(ORPHAN_CHECK_DELAY_S)
        meta = obj["metadata"]
        ns = meta.get("namespace", "")
        cur = self.store.get(rt.store_key, ns, meta["name"])
        if cur is None or cur["metadata"].get("uid") != meta.get("uid"):
            return
        refs = cur["metadata"].get("ownerReferences") or []
        known = {r.kind for r in RESOURCES if not r.virtual}
        # only owners of built-in kinds are looked up here; a custom resource owner is never judged absent
        if cur["metadata"].get("deletionTimestamp") or not refs:
            return
        if any(r.get("kind") not in known for r in refs):
            return
        if any(self._owner_exists(r, ns) for r in refs):
            return
        t = Target(rt, self.registry.target_for(rt.group, rt.plural).version, ns, meta["name"])
        try:
            await self.registry.delete(t, {"propagationPolicy": "Background"}, SYSTEM_USER)
        except APIError as e:
            log.debug("garbage collection of orphan %s/%s: %s", rt.plural, meta["name"], e.message)

    async def _populate_namespace(self, ns: str) -> None:
        reg = self.registry
        if self.store.get("serviceaccounts", ns, "default") is None:
            await self._create(
                reg.target_for("", "serviceaccounts", ns),
                {
                    "apiVersion": "v1",
                    "kind": "ServiceAccount",
                    "metadata": {"name": "default", "namespace": ns},
                },
            )
        if self.profile.minor >= 20 and self.store.get("configmaps", ns, "kube-root-ca.crt") is None:
            await self._create(
                reg.target_for("", "configmaps", ns),
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {
                        "name": "kube-root-ca.crt",
                        "namespace": ns,
                        "annotations": {
                            "kubernetes.io/description": (
                                "Contains a CA bundle that can be used to verify the "
                                "kube-apiserver when using internal endpoints such as the "
                                "internal service IP or kubernetes.default.svc. No other "
                                "usage is guaranteed across distributions of Kubernetes "
                                "clusters."
                            )
                        },
                    },
                    "data": {"ca.crt": self.ca_pem.decode()},
                },
            )

    async def _create(self, t: Target, body: dict[str, Any]) -> None:
        try:
            await self.registry.create(t, body, SYSTEM_USER)
        except APIError as e:
            if e.code != 409:
                log.warning("built-in create of %s failed: %s", t.rtype.kind, e.message)

    async def _create_token_secret(self, sa: dict[str, Any]) -> None:
        ns, name = sa["metadata"]["namespace"], sa["metadata"]["name"]
        secret_name = f"{name}-token-{random_suffix()}"
        await self._create(
            self.registry.target_for("", "secrets", ns),
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "kubernetes.io/service-account-token",
                "metadata": {
                    "name": secret_name,
                    "namespace": ns,
                    "annotations": {"kubernetes.io/service-account.name": name},
                },
            },
        )
        current = self.store.get("serviceaccounts", ns, name)
        if current is None:
            return
        new = copy.deepcopy(current)
        new.setdefault("secrets", []).append({"name": secret_name})
        self.store.put("serviceaccounts", new, event="MODIFIED")

    def recompute_quota(self, namespace: str) -> None:
        quotas = self.store.list("resourcequotas", namespace)
        if not quotas:
            return
        objects: list[tuple[str, str, dict[str, Any]]] = []
        for rt in RESOURCES:
            if rt.namespaced and not rt.virtual and (rt.store_key != "events" or rt.group == ""):
                objects.extend((rt.group, rt.plural, o) for o in self.store.list(rt.store_key, namespace))
        for q in quotas:
            hard = (q.get("spec") or {}).get("hard") or {}
            used = quota.usage_for_namespace(objects, hard)
            status = q.get("status") or {}
            if status.get("used") == used and status.get("hard") == hard:
                continue
            nq = copy.deepcopy(q)
            nq["status"] = {"hard": hard, "used": used}
            self.store.put("resourcequotas", nq, event="MODIFIED")

    def finalize_namespace_soon(self, ns: str) -> None:
        self._spawn(self._finalize_namespace(ns))

    async def _finalize_namespace(self, ns: str) -> None:
        """Delete everything in a terminating namespace, then the namespace itself."""
        for _ in range(600):
            remaining = 0
            for rt in RESOURCES:
                if not rt.namespaced or rt.virtual or (rt.store_key == "events" and rt.group):
                    continue
                for o in self.store.list(rt.store_key, ns):
                    remaining += 1
                    if o["metadata"].get("deletionTimestamp"):
                        continue
                    t = Target(
                        rt, self.registry.target_for(rt.group, rt.plural).version, ns, o["metadata"]["name"]
                    )
                    try:
                        await self.registry.delete(t, {}, SYSTEM_USER)
                    except APIError:
                        pass
            if remaining == 0:
                break
            await asyncio.sleep(0.2)
        nsobj = self.store.get("namespaces", "", ns)
        if nsobj is None:
            return
        if remaining:
            log.warning("namespace %s still has content; leaving it Terminating", ns)
            return
        if nsobj["metadata"].get("finalizers"):
            return  # someone else's finalizer; they remove it and the namespace goes with it
        entry = self.store.remove("namespaces", "", ns)
        if entry is not None:
            await self.registry._notify(
                self.registry.target_for("", "namespaces").rtype, "DELETED", None, entry.obj
            )

    def collect_dependents_soon(self, owner: dict[str, Any]) -> None:
        uid = owner["metadata"].get("uid")
        if uid and any(True for _ in self._dependents(uid, owner["metadata"].get("namespace", ""))):
            self._spawn(self._collect(owner))

    def _dependents(self, uid: str, namespace: str):  # type: ignore[no-untyped-def]
        for rt in RESOURCES:
            if rt.virtual or (rt.store_key == "events" and rt.group):
                continue
            if namespace and not rt.namespaced:
                continue
            for o in self.store.list(rt.store_key, namespace or None):
                refs = o["metadata"].get("ownerReferences") or []
                if any(r.get("uid") == uid for r in refs):
                    yield rt, o

    async def _collect(self, owner: dict[str, Any]) -> None:
        uid = owner["metadata"]["uid"]
        for rt, o in list(self._dependents(uid, owner["metadata"].get("namespace", ""))):
            refs = [r for r in o["metadata"].get("ownerReferences") or [] if r.get("uid") != uid]
            live = [r for r in refs if self._owner_exists(r, o["metadata"].get("namespace", ""))]
            t = Target(
                rt,
                self.registry.target_for(rt.group, rt.plural).version,
                o["metadata"].get("namespace", ""),
                o["metadata"]["name"],
            )
            try:
                if live:
                    new = copy.deepcopy(o)
                    new["metadata"]["ownerReferences"] = refs
                    await self.registry.update(t, new, SYSTEM_USER, decoded=True)
                else:
                    await self.registry.delete(t, {"propagationPolicy": "Background"}, SYSTEM_USER)
            except APIError as e:
                log.debug("garbage collection of %s/%s: %s", rt.plural, t.name, e.message)

    def _owner_exists(self, ref: dict[str, Any], namespace: str) -> bool:
        for rt in RESOURCES:
            if rt.kind == ref.get("kind") and not rt.virtual:
                ns = namespace if rt.namespaced else ""
                o = self.store.get(rt.store_key, ns, ref.get("name", ""))
                if o is not None and o["metadata"].get("uid") == ref.get("uid"):
                    return True
        return False

    async def stop(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


DEFAULT_CLASS_ANNOTATION = "storageclass.kubernetes.io/is-default-class"
ORPHAN_CHECK_DELAY_S = 0.5  # owners are often created just before their dependents' informers see them


def default_storage_class() -> dict[str, Any]:
    """The StorageClass kind installs: the default class, served by a local-path provisioner that makes
    a host directory on the node the pod was scheduled to (testbed.controllers.volumes plays it)."""
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": "standard", "annotations": {DEFAULT_CLASS_ANNOTATION: "true"}},
        "provisioner": "rancher.io/local-path",
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "WaitForFirstConsumer",
    }


def bootstrap_objects(api_port: int, api_host: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(group, plural, object) a fresh cluster starts with, besides RBAC defaults."""
    objs: list[tuple[str, str, dict[str, Any]]] = [
        ("storage.k8s.io", "storageclasses", default_storage_class())
    ]
    for ns in ("default", "kube-system", "kube-public", "kube-node-lease"):
        objs.append(
            (
                "",
                "namespaces",
                {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns}},
                },
            )
        )
    objs.append(
        (
            "",
            "services",
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {
                    "name": "kubernetes",
                    "namespace": "default",
                    "labels": {"component": "apiserver", "provider": "kubernetes"},
                },
                "spec": {
                    "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": api_port}],
                    "sessionAffinity": "None",
                    "type": "ClusterIP",
                },
            },
        )
    )
    objs.append(
        (
            "",
            "endpoints",
            {
                "apiVersion": "v1",
                "kind": "Endpoints",
                "metadata": {
                    "name": "kubernetes",
                    "namespace": "default",
                    "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"},
                },
                "subsets": [
                    {
                        "addresses": [{"ip": api_host}],
                        "ports": [{"name": "https", "port": api_port, "protocol": "TCP"}],
                    }
                ],
            },
        )
    )
    for name, value, desc in (
        (
            "system-node-critical",
            2000001000,
            "Used for system critical pods that must not be moved from their current node.",
        ),
        (
            "system-cluster-critical",
            2000000000,
            "Used for system critical pods that must run in the cluster, "
            "but can be moved to another node if necessary.",
        ),
    ):
        objs.append(
            (
                "scheduling.k8s.io",
                "priorityclasses",
                {
                    "apiVersion": "scheduling.k8s.io/v1",
                    "kind": "PriorityClass",
                    "metadata": {"name": name},
                    "value": value,
                    "description": desc,
                    "preemptionPolicy": "PreemptLowerPriority",
                },
            )
        )
    return objs


def stamp(obj: dict[str, Any]) -> dict[str, Any]:
    """Metadata for an object written directly at bootstrap (bypassing admission)."""
    meta = obj.setdefault("metadata", {})
    meta.setdefault("uid", new_uid())
    meta.setdefault("creationTimestamp", now_rfc3339())
    return obj


__all__ = ["BuiltIns", "bootstrap_objects", "errors", "stamp"]
