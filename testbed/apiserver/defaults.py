"""Defaulting the real kube-apiserver applies to request bodies, per minor.

Two layers, as in the real server:

* :func:`apply_defaults` - the registry's defaulting functions (``SetDefaults_*`` of each API
  version) plus the few create-time strategy fills clients observe (pod status, namespace
  finalizer, the generated Job selector). Called on create and update bodies, in the version the
  client used (``api_version``, taken from the body when not given): webhook configurations get
  different defaults through v1beta1 and v1.
* :func:`default_pod_admission` - the built-in mutating admission plugins ServiceAccount and
  DefaultTolerationSeconds, run on pod create after defaulting; :func:`default_pod_priority` is the
  Priority plugin's fill for a pod whose priority class (or lack of one) is known.

Feature-gated defaults follow the gate's default in each minor (stages from the feature-gate pages):
IndexedJob/SuspendJob beta 1.22, DaemonSetUpdateSurge beta 1.22, NamespaceDefaultLabelName beta
1.21, ServiceInternalTrafficPolicy and ServiceLBNodePortControl beta 1.22, IPv6DualStack beta 1.21
(ipFamilies/ipFamilyPolicy), NonPreemptingPriority beta 1.19, JobPodFailurePolicy beta 1.26,
JobPodReplacementPolicy and JobBackoffLimitPerIndex beta 1.29, StatefulSetAutoDeletePVC beta 1.27,
DefaultHostNetworkHostPortsInPodTemplates off from 1.28 (host ports defaulted in pods only).

Resource quantities are kept exactly as given; they are parsed only to compute the QoS class.
Not modelled: HPA ``behavior`` defaults, CSIDriver defaults, in-place resize policies (1.33),
and rarely used volume sources beyond iSCSI/RBD.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Any

from .errors import APIError
from .versions import VersionProfile

Obj = dict[str, Any]

TOKEN_MOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
PROJECTED_VOLUME_PREFIX = "kube-api-access-"
DEFAULT_MODE = 420  # 0644
MIRROR_POD_ANNOTATION = "kubernetes.io/config.mirror"
SYSTEM_PRIORITIES = {"system-node-critical": 2000001000, "system-cluster-critical": 2000000000}


def _d(parent: Obj, key: str) -> Obj:
    """``parent[key]`` as a dict, created when missing or null."""
    value = parent.get(key)
    if not isinstance(value, dict):
        value = {}
        parent[key] = value
    return value


def _items(parent: Obj | None, key: str) -> list[Obj]:
    if not isinstance(parent, dict):
        return []
    value = parent.get(key)
    return [x for x in value if isinstance(x, dict)] if isinstance(value, list) else []


def _unset(obj: Obj, key: str) -> bool:
    return obj.get(key) is None


def _set(obj: Obj, key: str, value: Any) -> None:
    if obj.get(key) is None:
        obj[key] = value


# -- quantities and QoS ----------------------------------------------------------------------
_SUFFIXES: dict[str, Fraction] = {
    "": Fraction(1), "n": Fraction(1, 10**9), "u": Fraction(1, 10**6), "m": Fraction(1, 1000),
    "k": Fraction(10**3), "M": Fraction(10**6), "G": Fraction(10**9), "T": Fraction(10**12),
    "P": Fraction(10**15), "E": Fraction(10**18),
    "Ki": Fraction(2**10), "Mi": Fraction(2**20), "Gi": Fraction(2**30), "Ti": Fraction(2**40),
    "Pi": Fraction(2**50), "Ei": Fraction(2**60),
}
_QUANTITY_RE = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+))([eE][+-]?\d+|[KMGTPE]i|[numkMGTPE])?$")


def parse_quantity(value: Any) -> Fraction:
    """A Kubernetes quantity (``"500m"``, ``"1Gi"``, ``2``, ``"1e3"``) as an exact number."""
    m = _QUANTITY_RE.match(str(value).strip())
    if not m:
        raise ValueError(f"quantities must match the regular expression "
                         f"'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$': {value!r}")
    number = Fraction(m.group(1))
    suffix = m.group(2) or ""
    if suffix[:1] in ("e", "E") and len(suffix) > 1:
        return number * Fraction(10) ** int(suffix[1:])
    return number * _SUFFIXES[suffix]


def pod_qos_class(pod: Obj) -> str:
    """BestEffort / Burstable / Guaranteed, computed over cpu and memory of (init) containers."""
    spec = pod.get("spec") or {}
    requests: dict[str, Fraction] = {}
    limits: dict[str, Fraction] = {}
    guaranteed = True
    for c in _items(spec, "containers") + _items(spec, "initContainers"):
        res = c.get("resources") or {}
        for name, q in (res.get("requests") or {}).items():
            if name in ("cpu", "memory") and parse_quantity(q) > 0:
                requests[name] = requests.get(name, Fraction(0)) + parse_quantity(q)
        found = set()
        for name, q in (res.get("limits") or {}).items():
            if name in ("cpu", "memory") and parse_quantity(q) > 0:
                limits[name] = limits.get(name, Fraction(0)) + parse_quantity(q)
                found.add(name)
        if found != {"cpu", "memory"}:
            guaranteed = False
    if not requests and not limits:
        return "BestEffort"
    if guaranteed and all(limits.get(n) == q for n, q in requests.items()) and len(requests) == len(limits):
        return "Guaranteed"
    return "Burstable"


# -- pod spec pieces -------------------------------------------------------------------------
def _image_tag_is_latest(image: str) -> bool:
    """True when the image names no tag (or ``latest``) and no digest, as the image parser reads it."""
    if "@" in image:
        name, _, _ = image.partition("@")
        last = name.rsplit("/", 1)[-1]
        return ":" in last and last.rsplit(":", 1)[1] == "latest"
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return True
    return last.rsplit(":", 1)[1] == "latest"


def _http_get(action: Obj | None) -> None:
    if isinstance(action, dict):
        _set(action, "path", "/")
        _set(action, "scheme", "HTTP")


def _probe(probe: Obj | None) -> None:
    if not isinstance(probe, dict):
        return
    _set(probe, "timeoutSeconds", 1)
    _set(probe, "periodSeconds", 10)
    _set(probe, "successThreshold", 1)
    _set(probe, "failureThreshold", 3)
    _http_get(probe.get("httpGet"))


def _field_ref(ref: Obj | None) -> None:
    if isinstance(ref, dict):
        _set(ref, "apiVersion", "v1")


def _resource_field_ref(ref: Obj | None) -> None:
    if isinstance(ref, dict):
        _set(ref, "divisor", "0")  # a zero Quantity struct is always written out


def _container(c: Obj) -> None:
    if not c.get("imagePullPolicy"):
        c["imagePullPolicy"] = "Always" if _image_tag_is_latest(str(c.get("image") or "")) else "IfNotPresent"
    if not c.get("terminationMessagePath"):
        c["terminationMessagePath"] = "/dev/termination-log"
    if not c.get("terminationMessagePolicy"):
        c["terminationMessagePolicy"] = "File"
    _set(c, "resources", {})  # a struct field: always present in the served object
    for port in _items(c, "ports"):
        if not port.get("protocol"):
            port["protocol"] = "TCP"
    for key in ("livenessProbe", "readinessProbe", "startupProbe"):
        _probe(c.get(key))
    lifecycle = c.get("lifecycle")
    if isinstance(lifecycle, dict):
        for hook in ("postStart", "preStop"):
            if isinstance(lifecycle.get(hook), dict):
                _http_get(lifecycle[hook].get("httpGet"))
    for env in _items(c, "env"):
        source = env.get("valueFrom")
        if isinstance(source, dict):
            _field_ref(source.get("fieldRef"))
            _resource_field_ref(source.get("resourceFieldRef"))


_VOLUME_SOURCES = (
    "hostPath", "emptyDir", "gcePersistentDisk", "awsElasticBlockStore", "gitRepo", "secret", "nfs",
    "iscsi", "glusterfs", "persistentVolumeClaim", "rbd", "flexVolume", "cinder", "cephfs", "flocker",
    "downwardAPI", "fc", "azureFile", "configMap", "vsphereVolume", "quobyte", "azureDisk",
    "photonPersistentDisk", "projected", "portworxVolume", "scaleIO", "storageos", "csi", "ephemeral",
    "image",
)


def _downward_items(items: list[Obj]) -> None:
    for item in items:
        _field_ref(item.get("fieldRef"))
        _resource_field_ref(item.get("resourceFieldRef"))


def _pvc_spec(spec: Obj | None) -> None:
    if isinstance(spec, dict):
        _set(spec, "volumeMode", "Filesystem")


def _volume_source(v: Obj) -> None:
    if isinstance(v.get("hostPath"), dict):
        _set(v["hostPath"], "type", "")
    for key in ("secret", "configMap", "downwardAPI", "projected"):
        if isinstance(v.get(key), dict):
            _set(v[key], "defaultMode", DEFAULT_MODE)
    if isinstance(v.get("downwardAPI"), dict):
        _downward_items(_items(v["downwardAPI"], "items"))
    if isinstance(v.get("projected"), dict):
        for src in _items(v["projected"], "sources"):
            if isinstance(src.get("serviceAccountToken"), dict):
                _set(src["serviceAccountToken"], "expirationSeconds", 3600)
            if isinstance(src.get("downwardAPI"), dict):
                _downward_items(_items(src["downwardAPI"], "items"))
    if isinstance(v.get("iscsi"), dict):
        _set(v["iscsi"], "iscsiInterface", "default")
    if isinstance(v.get("rbd"), dict):
        rbd = v["rbd"]
        _set(rbd, "pool", "rbd")
        _set(rbd, "user", "admin")
        _set(rbd, "keyring", "/etc/ceph/keyring")
    ephemeral = v.get("ephemeral")
    if isinstance(ephemeral, dict) and isinstance(ephemeral.get("volumeClaimTemplate"), dict):
        _pvc_spec(ephemeral["volumeClaimTemplate"].get("spec"))


def _volume(v: Obj) -> None:
    if not any(isinstance(v.get(k), dict) for k in _VOLUME_SOURCES):
        v["emptyDir"] = {}
    _volume_source(v)


def _pod_spec(p: VersionProfile, spec: Obj, *, in_pod: bool) -> None:
    if not spec.get("dnsPolicy"):
        spec["dnsPolicy"] = "ClusterFirst"
    if not spec.get("restartPolicy"):
        spec["restartPolicy"] = "Always"
    _set(spec, "securityContext", {})
    _set(spec, "terminationGracePeriodSeconds", 30)
    if not spec.get("schedulerName"):
        spec["schedulerName"] = "default-scheduler"
    # the deprecated serviceAccount mirrors serviceAccountName through conversion
    if not spec.get("serviceAccountName") and spec.get("serviceAccount"):
        spec["serviceAccountName"] = spec["serviceAccount"]
    if spec.get("serviceAccountName"):
        spec["serviceAccount"] = spec["serviceAccountName"]
    groups = ("containers", "initContainers", "ephemeralContainers")
    for key in groups:
        for c in _items(spec, key):
            _container(c)
    # host ports follow container ports on the host network; in templates only up to 1.27
    if spec.get("hostNetwork") and (in_pod or p.minor <= 27):
        for key in ("containers", "initContainers"):
            for c in _items(spec, key):
                for port in _items(c, "ports"):
                    if not port.get("hostPort"):
                        port["hostPort"] = port.get("containerPort")
    for v in _items(spec, "volumes"):
        _volume(v)


def _template(p: VersionProfile, holder: Obj | None) -> None:
    """Defaults of a ``template`` (PodTemplateSpec) held by ``holder``."""
    if not isinstance(holder, dict) or not isinstance(holder.get("template"), dict):
        return
    tmpl = holder["template"]
    _pod_spec(p, _d(tmpl, "spec"), in_pod=False)


def _requests_from_limits(spec: Obj) -> None:
    for key in ("containers", "initContainers"):
        for c in _items(spec, key):
            res = c.get("resources")
            if not isinstance(res, dict) or not isinstance(res.get("limits"), dict):
                continue
            requests = _d(res, "requests")
            for name, q in res["limits"].items():
                requests.setdefault(name, q)
            if not requests:
                res.pop("requests")


def _pod(p: VersionProfile, pod: Obj, create: bool | None) -> None:
    spec = _d(pod, "spec")
    _pod_spec(p, spec, in_pod=True)
    _requests_from_limits(spec)
    _set(spec, "enableServiceLinks", True)
    if create:
        # the pod strategy replaces any client-sent status on create
        pod["status"] = {"phase": "Pending", "qosClass": pod_qos_class(pod)}
    else:
        status = _d(pod, "status")
        _set(status, "phase", "Pending")
        _set(status, "qosClass", pod_qos_class(pod))


# -- workloads -------------------------------------------------------------------------------
def _deployment(p: VersionProfile, obj: Obj) -> None:
    spec = _d(obj, "spec")
    _set(spec, "replicas", 1)
    strategy = _d(spec, "strategy")
    if not strategy.get("type"):
        strategy["type"] = "RollingUpdate"
    if strategy["type"] == "RollingUpdate":
        ru = _d(strategy, "rollingUpdate")
        _set(ru, "maxUnavailable", "25%")
        _set(ru, "maxSurge", "25%")
    _set(spec, "revisionHistoryLimit", 10)
    _set(spec, "progressDeadlineSeconds", 600)
    _template(p, spec)


def _replica_set(p: VersionProfile, obj: Obj) -> None:
    spec = _d(obj, "spec")
    _set(spec, "replicas", 1)
    _template(p, spec)


def _daemon_set(p: VersionProfile, obj: Obj) -> None:
    spec = _d(obj, "spec")
    strategy = _d(spec, "updateStrategy")
    if not strategy.get("type"):
        strategy["type"] = "RollingUpdate"
    if strategy["type"] == "RollingUpdate":
        ru = _d(strategy, "rollingUpdate")
        _set(ru, "maxUnavailable", 1)
        if p.minor >= 21:  # measured: 0 on 1.21 (DaemonSetUpdateSurge alpha), absent on 1.20
            _set(ru, "maxSurge", 0)
    _set(spec, "revisionHistoryLimit", 10)
    _template(p, spec)


def _pvc(obj: Obj) -> None:
    _pvc_spec(_d(obj, "spec"))
    _set(_d(obj, "status"), "phase", "Pending")


def _stateful_set(p: VersionProfile, obj: Obj) -> None:
    spec = _d(obj, "spec")
    if not spec.get("podManagementPolicy"):
        spec["podManagementPolicy"] = "OrderedReady"
    strategy = _d(spec, "updateStrategy")
    if not strategy.get("type"):
        strategy["type"] = "RollingUpdate"
        _d(strategy, "rollingUpdate")
    if strategy["type"] == "RollingUpdate" and isinstance(strategy.get("rollingUpdate"), dict):
        _set(strategy["rollingUpdate"], "partition", 0)
    if p.minor >= 27:
        policy = _d(spec, "persistentVolumeClaimRetentionPolicy")
        if not policy.get("whenDeleted"):
            policy["whenDeleted"] = "Retain"
        if not policy.get("whenScaled"):
            policy["whenScaled"] = "Retain"
    _set(spec, "replicas", 1)
    _set(spec, "revisionHistoryLimit", 10)
    for pvc in _items(spec, "volumeClaimTemplates"):
        _pvc(pvc)
    _template(p, spec)


def _job_selector(p: VersionProfile, obj: Obj) -> None:
    """The create-time selector and pod labels the job strategy generates (unless manualSelector)."""
    spec = _d(obj, "spec")
    meta = obj.get("metadata") or {}
    uid, name = meta.get("uid"), meta.get("name")
    if spec.get("manualSelector") is True or not uid:
        return
    labels = _d(_d(_d(spec, "template"), "metadata"), "labels")
    # 1.27 added the batch.kubernetes.io/ label names and selects on the new uid label
    name_keys = ["job-name", "batch.kubernetes.io/job-name"] if p.minor >= 27 else ["job-name"]
    uid_keys = ["controller-uid"]
    if p.minor >= 27:
        uid_keys.append("batch.kubernetes.io/controller-uid")
    for key in name_keys:
        labels.setdefault(key, name)
    for key in uid_keys:
        labels.setdefault(key, uid)
    match = _d(_d(spec, "selector"), "matchLabels")
    match.setdefault(uid_keys[-1], uid)


def _job_spec(p: VersionProfile, spec: Obj) -> None:
    if _unset(spec, "completions") and _unset(spec, "parallelism"):
        spec["completions"] = 1
        spec["parallelism"] = 1
    _set(spec, "parallelism", 1)
    per_index = p.minor >= 29 and spec.get("backoffLimitPerIndex") is not None
    _set(spec, "backoffLimit", 2147483647 if per_index else 6)
    if p.minor >= 22:
        _set(spec, "completionMode", "NonIndexed")
        _set(spec, "suspend", False)
    failure_policy = spec.get("podFailurePolicy")
    if p.minor >= 26 and isinstance(failure_policy, dict):
        for rule in _items(failure_policy, "rules"):
            for cond in _items(rule, "onPodConditions"):
                _set(cond, "status", "True")
    if p.minor >= 29:
        _set(spec, "podReplacementPolicy",
             "Failed" if isinstance(failure_policy, dict) else "TerminatingOrFailed")


def _job(p: VersionProfile, obj: Obj, create: bool | None) -> None:
    spec = _d(obj, "spec")
    if create is not False:
        _job_selector(p, obj)
    if create and 25 <= p.minor <= 27:
        # the apiserver marks every new Job as tracked with finalizers on 1.25-1.27 (measured: not
        # on 1.24 nor 1.28)
        meta = _d(obj, "metadata")
        meta["annotations"] = {**(meta.get("annotations") or {}), "batch.kubernetes.io/job-tracking": ""}
    if p.minor <= 21:
        # SuspendJob is alpha (off) on 1.21 and absent before: the field is dropped (measured on 1.18-1.21)
        spec.pop("suspend", None)
    if p.minor >= 29:
        # batch/v1 Job defaulting writes manualSelector: false from 1.29 (measured: absent on 1.28)
        _set(spec, "manualSelector", False)
    _job_spec(p, spec)
    labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels")
    meta = _d(obj, "metadata")
    if labels and not meta.get("labels"):
        meta["labels"] = dict(labels)
    _template(p, spec)


def _cron_job(p: VersionProfile, obj: Obj) -> None:
    spec = _d(obj, "spec")
    if not spec.get("concurrencyPolicy"):
        spec["concurrencyPolicy"] = "Allow"
    _set(spec, "suspend", False)
    _set(spec, "successfulJobsHistoryLimit", 3)
    _set(spec, "failedJobsHistoryLimit", 1)
    job_template = spec.get("jobTemplate")
    if isinstance(job_template, dict):
        _template(p, job_template.get("spec"))


def _replication_controller(p: VersionProfile, obj: Obj) -> None:
    spec = _d(obj, "spec")
    labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels")
    if labels:
        if not spec.get("selector"):
            spec["selector"] = dict(labels)
        meta = _d(obj, "metadata")
        if not meta.get("labels"):
            meta["labels"] = dict(labels)
    _set(spec, "replicas", 1)
    _template(p, spec)


# -- core objects ----------------------------------------------------------------------------
def _service(p: VersionProfile, obj: Obj) -> None:
    spec = _d(obj, "spec")
    if not spec.get("sessionAffinity"):
        spec["sessionAffinity"] = "None"
    if spec["sessionAffinity"] == "None":
        spec.pop("sessionAffinityConfig", None)
    elif spec["sessionAffinity"] == "ClientIP":
        cfg = spec.get("sessionAffinityConfig") or {}
        if ((cfg.get("clientIP") or {}).get("timeoutSeconds")) is None:
            spec["sessionAffinityConfig"] = {"clientIP": {"timeoutSeconds": 10800}}
    if not spec.get("type"):
        spec["type"] = "ClusterIP"
    svc_type = spec["type"]
    for port in _items(spec, "ports"):
        if not port.get("protocol"):
            port["protocol"] = "TCP"
        if port.get("targetPort") in (None, 0, ""):
            port["targetPort"] = port.get("port")
    if svc_type in ("NodePort", "LoadBalancer") and not spec.get("externalTrafficPolicy"):
        spec["externalTrafficPolicy"] = "Cluster"
    if svc_type != "ExternalName":
        if p.minor >= 22:
            _set(spec, "internalTrafficPolicy", "Cluster")
        if p.minor >= 21:
            headless_no_selector = spec.get("clusterIP") == "None" and not spec.get("selector")
            _set(spec, "ipFamilyPolicy", "RequireDualStack" if headless_no_selector else "SingleStack")
            _set(spec, "ipFamilies", ["IPv4"])
    if svc_type == "LoadBalancer" and p.minor >= 22:
        _set(spec, "allocateLoadBalancerNodePorts", True)
    _set(_d(obj, "status"), "loadBalancer", {})


def _namespace(p: VersionProfile, obj: Obj, create: bool | None) -> None:
    meta = _d(obj, "metadata")
    if p.minor >= 21 and meta.get("name"):
        _d(meta, "labels")["kubernetes.io/metadata.name"] = meta["name"]
    # create-only (the finalizer may be removed later); a body never stored has no status phase
    if create or (create is None and not (obj.get("status") or {}).get("phase")):
        finalizers = _d(obj, "spec").get("finalizers") or []
        if "kubernetes" not in finalizers:
            obj["spec"]["finalizers"] = [*finalizers, "kubernetes"]
    status = _d(obj, "status")
    if not status.get("phase"):
        status["phase"] = "Active"


def _persistent_volume(obj: Obj) -> None:
    spec = _d(obj, "spec")
    if not spec.get("persistentVolumeReclaimPolicy"):
        spec["persistentVolumeReclaimPolicy"] = "Retain"
    _set(spec, "volumeMode", "Filesystem")
    _volume_source(spec)
    _set(_d(obj, "status"), "phase", "Pending")


def _node(obj: Obj) -> None:
    status = obj.get("status")
    if isinstance(status, dict) and status.get("capacity") and status.get("allocatable") is None:
        status["allocatable"] = dict(status["capacity"])


def _limit_range(obj: Obj) -> None:
    for item in _items(obj.get("spec"), "limits"):
        if item.get("type") != "Container":
            continue
        default = dict(item.get("default") or {})
        for k, v in (item.get("max") or {}).items():
            default.setdefault(k, v)
        request = dict(item.get("defaultRequest") or {})
        for k, v in default.items():
            request.setdefault(k, v)
        for k, v in (item.get("min") or {}).items():
            request.setdefault(k, v)
        if default:
            item["default"] = default
        if request:
            item["defaultRequest"] = request


def _ports_tcp(ports: list[Obj]) -> None:
    for port in ports:
        if not port.get("protocol"):
            port["protocol"] = "TCP"


# -- other groups ----------------------------------------------------------------------------
def _webhooks(obj: Obj, version: str, mutating: bool) -> None:
    v1 = version != "v1beta1"
    for hook in _items(obj, "webhooks"):
        _set(hook, "failurePolicy", "Fail" if v1 else "Ignore")
        _set(hook, "matchPolicy", "Equivalent" if v1 else "Exact")
        _set(hook, "namespaceSelector", {})
        _set(hook, "objectSelector", {})
        _set(hook, "timeoutSeconds", 10 if v1 else 30)
        if not v1:
            _set(hook, "sideEffects", "Unknown")
            if not hook.get("admissionReviewVersions"):
                hook["admissionReviewVersions"] = ["v1beta1"]
        if mutating:
            _set(hook, "reinvocationPolicy", "Never")
        for rule in _items(hook, "rules"):
            _set(rule, "scope", "*")
        service = (hook.get("clientConfig") or {}).get("service")
        if isinstance(service, dict):
            _set(service, "port", 443)


def _role_binding(obj: Obj) -> None:
    for subject in _items(obj, "subjects"):
        if not subject.get("apiGroup") and subject.get("kind") in ("User", "Group"):
            subject["apiGroup"] = "rbac.authorization.k8s.io"
    ref = obj.get("roleRef")
    if isinstance(ref, dict) and not ref.get("apiGroup"):
        ref["apiGroup"] = "rbac.authorization.k8s.io"


def _crd(obj: Obj, version: str) -> None:
    spec = _d(obj, "spec")
    names = _d(spec, "names")
    if not names.get("singular") and names.get("kind"):
        names["singular"] = str(names["kind"]).lower()
    if not names.get("listKind") and names.get("kind"):
        names["listKind"] = f"{names['kind']}List"
    if version == "v1beta1":
        if not spec.get("scope"):
            spec["scope"] = "Namespaced"
        if not spec.get("version") and spec.get("versions"):
            spec["version"] = spec["versions"][0].get("name")
        if not spec.get("versions") and spec.get("version"):
            spec["versions"] = [{"name": spec["version"], "served": True, "storage": True}]
        _set(spec, "preserveUnknownFields", True)
    conversion = _d(spec, "conversion")
    if not conversion.get("strategy"):
        conversion["strategy"] = "None"
    service = ((conversion.get("webhook") or {}).get("clientConfig") or {}).get("service")
    if not isinstance(service, dict):
        service = (conversion.get("webhookClientConfig") or {}).get("service")
    if isinstance(service, dict):
        _set(service, "port", 443)


def _network_policy(obj: Obj) -> None:
    spec = _d(obj, "spec")
    if not spec.get("policyTypes"):
        spec["policyTypes"] = ["Ingress", "Egress"] if spec.get("egress") else ["Ingress"]
    for key in ("ingress", "egress"):
        for rule in _items(spec, key):
            _ports_tcp(_items(rule, "ports"))


def _ingress(obj: Obj, version: str) -> None:
    if version != "v1beta1":
        return
    for rule in _items(obj.get("spec"), "rules"):
        for path in _items(rule.get("http"), "paths"):
            if not path.get("pathType"):
                path["pathType"] = "ImplementationSpecific"


def _hpa(obj: Obj, version: str) -> None:
    spec = _d(obj, "spec")
    _set(spec, "minReplicas", 1)
    if version == "v1" or spec.get("metrics"):
        return
    if version == "v2beta1":
        spec["metrics"] = [{"type": "Resource", "resource": {"name": "cpu", "targetAverageUtilization": 80}}]
    else:
        spec["metrics"] = [{"type": "Resource", "resource": {
            "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]


def _version_of(obj: Obj, api_version: str | None) -> str:
    text = api_version or str(obj.get("apiVersion") or "")
    return text.rsplit("/", 1)[-1]


def apply_defaults(p: VersionProfile, group: str, kind: str, obj: Obj, *, api_version: str | None = None,
                   create: bool | None = None) -> None:
    """Fill defaults into ``obj`` in place, as the minor's apiserver does when it decodes a body.

    ``api_version`` is the version the client sent (``"v1beta1"`` or
    ``"admissionregistration.k8s.io/v1beta1"``); it defaults to the body's ``apiVersion``.
    ``create=True`` applies the create-only strategy fills exactly (a pod's status is replaced, the
    namespace finalizer added, the Job selector generated from ``metadata.uid``); ``False`` skips
    them for updates; ``None`` (unknown) only fills what is missing and adds the namespace finalizer
    only to a namespace that has no status phase yet.
    """
    version = _version_of(obj, api_version)
    if group == "":
        if kind == "Pod":
            _pod(p, obj, create)
        elif kind == "PodTemplate":
            _template(p, obj)
        elif kind == "ReplicationController":
            _replication_controller(p, obj)
        elif kind == "Service":
            _service(p, obj)
        elif kind == "Namespace":
            _namespace(p, obj, create)
        elif kind == "Secret":
            if not obj.get("type"):
                obj["type"] = "Opaque"
        elif kind == "PersistentVolume":
            _persistent_volume(obj)
        elif kind == "PersistentVolumeClaim":
            _pvc(obj)
        elif kind == "Node":
            _node(obj)
        elif kind == "Endpoints":
            for subset in _items(obj, "subsets"):
                _ports_tcp(_items(subset, "ports"))
        elif kind == "LimitRange":
            _limit_range(obj)
    elif group == "apps":
        {"Deployment": _deployment, "ReplicaSet": _replica_set, "DaemonSet": _daemon_set,
         "StatefulSet": _stateful_set}.get(kind, lambda _p, _o: None)(p, obj)
    elif group == "batch":
        if kind == "Job":
            _job(p, obj, create)
        elif kind == "CronJob":
            _cron_job(p, obj)
    elif group == "admissionregistration.k8s.io":
        if kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
            _webhooks(obj, version, kind.startswith("Mutating"))
    elif group == "rbac.authorization.k8s.io":
        if kind in ("RoleBinding", "ClusterRoleBinding"):
            _role_binding(obj)
    elif group == "scheduling.k8s.io":
        if kind == "PriorityClass" and p.minor >= 19:
            _set(obj, "preemptionPolicy", "PreemptLowerPriority")
    elif group == "apiextensions.k8s.io":
        if kind == "CustomResourceDefinition":
            _crd(obj, version)
    elif group == "storage.k8s.io":
        if kind == "StorageClass":
            _set(obj, "reclaimPolicy", "Delete")
            _set(obj, "volumeBindingMode", "Immediate")
    elif group == "networking.k8s.io":
        if kind == "NetworkPolicy":
            _network_policy(obj)
        elif kind == "Ingress":
            _ingress(obj, version)
    elif group == "discovery.k8s.io":
        if kind == "EndpointSlice":
            for port in _items(obj, "ports"):
                _set(port, "name", "")
                _ports_tcp([port])
    elif group == "autoscaling" and kind == "HorizontalPodAutoscaler":
        _hpa(obj, version)


# -- admission -------------------------------------------------------------------------------
def _token_secret_name(sa: Obj) -> str | None:
    prefix = f"{(sa.get('metadata') or {}).get('name', '')}-token-"
    for ref in _items(sa, "secrets"):
        if str(ref.get("name", "")).startswith(prefix):
            return str(ref["name"])
    return None


def _projected_token_volume(name: str) -> Obj:
    return {"name": name, "projected": {"sources": [
        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {
            "apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
    ], "defaultMode": DEFAULT_MODE}}


def _mount_token(p: VersionProfile, pod: Obj, sa: Obj, suffix: str) -> None:
    spec = pod["spec"]
    volumes = _items(spec, "volumes")
    names = {v.get("name") for v in volumes}
    secret_name = None
    volume_name = None
    if p.sa_token_mode == "secret":
        secret_name = _token_secret_name(sa)
        if secret_name is None:
            sa_name = (sa.get("metadata") or {}).get("name")
            raise APIError(500, "ServerTimeout",
                           f'No API token found for service account "{sa_name}", '
                           "retry after the token is automatically created and added to the service account",
                           details={"name": "create pod", "kind": "serviceaccounts", "retryAfterSeconds": 1})
        for v in volumes:
            if (v.get("secret") or {}).get("secretName") == secret_name:
                volume_name = v.get("name")
                break
    else:
        for v in volumes:
            if str(v.get("name", "")).startswith(PROJECTED_VOLUME_PREFIX):
                volume_name = v.get("name")
                break
    has_volume = volume_name is not None
    if volume_name is None:
        if secret_name is not None:
            volume_name = secret_name if secret_name not in names else f"{secret_name}-{suffix}"
        else:
            volume_name = f"{PROJECTED_VOLUME_PREFIX}{suffix}"
    needs_volume = False
    for key in ("initContainers", "containers"):
        for c in _items(spec, key):
            mounts = c.get("volumeMounts") if isinstance(c.get("volumeMounts"), list) else []
            if any(isinstance(m, dict) and m.get("mountPath") == TOKEN_MOUNT_PATH for m in mounts):
                continue
            mount = {"name": volume_name, "readOnly": True, "mountPath": TOKEN_MOUNT_PATH}
            c["volumeMounts"] = [*mounts, mount]
            needs_volume = True
    if needs_volume and not has_volume:
        if secret_name is not None:
            volume = {"name": volume_name, "secret": {"secretName": secret_name, "defaultMode": DEFAULT_MODE}}
        else:
            volume = _projected_token_volume(volume_name)
        spec["volumes"] = [*(spec.get("volumes") or []), volume]


def _default_tolerations(spec: Obj) -> None:
    tolerations = _items(spec, "tolerations")

    def tolerated(key: str) -> bool:
        return any(t.get("key", "") in (key, "") and t.get("effect", "") in ("NoExecute", "")
                   for t in tolerations)

    added = []
    for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"):
        if not tolerated(key):
            added.append({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300})
    if added:
        spec["tolerations"] = [*(spec.get("tolerations") or []), *added]


def default_pod_admission(p: VersionProfile, pod: Obj, service_account: Obj | None,
                          token_volume_suffix: str) -> None:
    """ServiceAccount and DefaultTolerationSeconds admission for a pod being created.

    ``service_account`` is the pod's ServiceAccount object (``serviceAccountName`` or ``default``);
    ``None`` is rejected the way the real plugin rejects a missing account. In "secret" minors the
    token secret is the SA's ``secrets`` entry named ``<sa>-token-*``; ``token_volume_suffix`` names
    the projected volume ``kube-api-access-<suffix>`` (and de-duplicates a clashing secret volume).
    """
    spec = _d(pod, "spec")
    meta = pod.get("metadata") or {}
    mirror = MIRROR_POD_ANNOTATION in (meta.get("annotations") or {})
    if not mirror:
        if not spec.get("serviceAccountName"):
            spec["serviceAccountName"] = spec.get("serviceAccount") or "default"
        spec["serviceAccount"] = spec["serviceAccountName"]
        if service_account is None:
            name = meta.get("name") or ""
            target = f'pods "{name}"' if name else "pods"
            raise APIError(403, "Forbidden",
                           f'{target} is forbidden: error looking up service account '
                           f'{meta.get("namespace", "")}/{spec["serviceAccountName"]}: serviceaccount '
                           f'"{spec["serviceAccountName"]}" not found',
                           details={"name": name, "kind": "pods"})
        automount = spec.get("automountServiceAccountToken")
        if automount is None:
            automount = service_account.get("automountServiceAccountToken")
        if automount is None or automount:
            _mount_token(p, pod, service_account, token_volume_suffix)
        if not spec.get("imagePullSecrets") and service_account.get("imagePullSecrets"):
            spec["imagePullSecrets"] = [{"name": s.get("name")}
                                        for s in _items(service_account, "imagePullSecrets")]
    _default_tolerations(spec)


def default_pod_priority(p: VersionProfile, pod: Obj, priority_class: Obj | None) -> None:
    """The Priority plugin's fill: the class's value (0 with no class) and, from 1.19, the
    preemption policy (the class's, or PreemptLowerPriority). ``priority_class`` is the PriorityClass
    named by the pod, or the cluster's global default class, or ``None``; the two built-in system
    classes are known without a lookup."""
    spec = _d(pod, "spec")
    name = spec.get("priorityClassName") or ""
    if priority_class is not None:
        value = int(priority_class.get("value") or 0)
        policy = priority_class.get("preemptionPolicy") or "PreemptLowerPriority"
        if not name:
            spec["priorityClassName"] = (priority_class.get("metadata") or {}).get("name")
    elif name in SYSTEM_PRIORITIES:
        value, policy = SYSTEM_PRIORITIES[name], "PreemptLowerPriority"
    else:
        value, policy = 0, "PreemptLowerPriority"
    spec["priority"] = value
    if p.minor >= 19:
        _set(spec, "preemptionPolicy", policy)
