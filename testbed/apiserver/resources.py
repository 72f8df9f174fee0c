"""The resource types the testbed apiserver stores, independent of Kubernetes minor.

Which group-versions a minor serves (and so which of these a client can reach, under which
version) lives in :mod:`testbed.apiserver.versions`. A resource reachable under several
group-versions (Lease in coordination v1beta1 and v1, Event in core and events.k8s.io) shares one
store, named by ``store``, as it does in the real apiserver.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
NO_COLLECTION = ("create", "delete", "get", "list", "patch", "update", "watch")
CREATE_ONLY = ("create",)


@dataclass(frozen=True)
class ResourceType:
    group: str
    plural: str
    singular: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ALL_VERBS
    # subresource name -> (kind of its body, verbs)
    subresources: dict[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict)
    # Shared storage key; defaults to "<plural>.<group>". Events in core and events.k8s.io share one.
    store: str = ""
    # Virtual resources (reviews, bindings) are create-only and never stored.
    virtual: bool = False

    @property
    def group_resource(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def store_key(self) -> str:
        return self.store or self.group_resource


_STATUS = ("get", "patch", "update")


def _r(group: str, plural: str, kind: str, namespaced: bool = True, **kw) -> ResourceType:
    singular = kw.pop("singular", kind.lower())
    return ResourceType(group=group, plural=plural, singular=singular, kind=kind, namespaced=namespaced, **kw)


RESOURCES: tuple[ResourceType, ...] = (
    # core
    _r(
        "",
        "namespaces",
        "Namespace",
        False,
        short_names=("ns",),
        verbs=NO_COLLECTION,
        subresources={"status": ("Namespace", _STATUS), "finalize": ("Namespace", ("update",))},
    ),
    _r(
        "",
        "nodes",
        "Node",
        False,
        short_names=("no",),
        subresources={
            "status": ("Node", _STATUS),
            "proxy": ("NodeProxyOptions", ("create", "delete", "get", "patch", "update")),
        },
    ),
    _r(
        "",
        "pods",
        "Pod",
        short_names=("po",),
        categories=("all",),
        subresources={
            "status": ("Pod", _STATUS),
            "binding": ("Binding", CREATE_ONLY),
            "eviction": ("Eviction", CREATE_ONLY),
            "log": ("Pod", ("get",)),
            "ephemeralcontainers": ("Pod", _STATUS),
            # ended on the node by testbed/node/kubeletproxy.py
            "exec": ("PodExecOptions", ("create", "get")),
            "attach": ("PodAttachOptions", ("create", "get")),
            "portforward": ("PodPortForwardOptions", ("create", "get")),
            "proxy": ("PodProxyOptions", ("create", "delete", "get", "patch", "update")),
        },
    ),
    _r("", "bindings", "Binding", verbs=CREATE_ONLY, virtual=True),
    _r("", "events", "Event", short_names=("ev",), store="events"),
    _r("", "configmaps", "ConfigMap", short_names=("cm",)),
    _r("", "secrets", "Secret"),
    _r(
        "",
        "services",
        "Service",
        short_names=("svc",),
        categories=("all",),
        verbs=("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"),
        subresources={
            "status": ("Service", _STATUS),
            "proxy": ("ServiceProxyOptions", ("create", "delete", "get", "patch", "update")),
        },
    ),
    _r("", "endpoints", "Endpoints", short_names=("ep",), singular="endpoints"),
    _r(
        "",
        "serviceaccounts",
        "ServiceAccount",
        short_names=("sa",),
        subresources={"token": ("TokenRequest", CREATE_ONLY)},
    ),
    _r(
        "",
        "resourcequotas",
        "ResourceQuota",
        short_names=("quota",),
        subresources={"status": ("ResourceQuota", _STATUS)},
    ),
    _r("", "limitranges", "LimitRange", short_names=("limits",)),
    _r(
        "",
        "persistentvolumeclaims",
        "PersistentVolumeClaim",
        short_names=("pvc",),
        subresources={"status": ("PersistentVolumeClaim", _STATUS)},
    ),
    _r(
        "",
        "persistentvolumes",
        "PersistentVolume",
        False,
        short_names=("pv",),
        subresources={"status": ("PersistentVolume", _STATUS)},
    ),
    _r(
        "",
        "replicationcontrollers",
        "ReplicationController",
        short_names=("rc",),
        categories=("all",),
        subresources={"status": ("ReplicationController", _STATUS), "scale": ("Scale", _STATUS)},
    ),
    _r("", "podtemplates", "PodTemplate"),
    _r("", "componentstatuses", "ComponentStatus", False, short_names=("cs",), verbs=("get", "list")),
    # events.k8s.io shares the core event store
    _r("events.k8s.io", "events", "Event", short_names=("ev",), store="events"),
    # apps
    _r(
        "apps",
        "daemonsets",
        "DaemonSet",
        short_names=("ds",),
        categories=("all",),
        subresources={"status": ("DaemonSet", _STATUS)},
    ),
    _r(
        "apps",
        "deployments",
        "Deployment",
        short_names=("deploy",),
        categories=("all",),
        subresources={"status": ("Deployment", _STATUS), "scale": ("Scale", _STATUS)},
    ),
    _r(
        "apps",
        "replicasets",
        "ReplicaSet",
        short_names=("rs",),
        categories=("all",),
        subresources={"status": ("ReplicaSet", _STATUS), "scale": ("Scale", _STATUS)},
    ),
    _r(
        "apps",
        "statefulsets",
        "StatefulSet",
        short_names=("sts",),
        categories=("all",),
        subresources={"status": ("StatefulSet", _STATUS), "scale": ("Scale", _STATUS)},
    ),
    _r("apps", "controllerrevisions", "ControllerRevision"),
    # batch
    _r("batch", "jobs", "Job", categories=("all",), subresources={"status": ("Job", _STATUS)}),
    _r(
        "batch",
        "cronjobs",
        "CronJob",
        short_names=("cj",),
        categories=("all",),
        subresources={"status": ("CronJob", _STATUS)},
    ),
    # coordination, scheduling, node
    _r("coordination.k8s.io", "leases", "Lease"),
    _r("scheduling.k8s.io", "priorityclasses", "PriorityClass", False, short_names=("pc",)),
    _r("node.k8s.io", "runtimeclasses", "RuntimeClass", False),
    # policy
    _r(
        "policy",
        "poddisruptionbudgets",
        "PodDisruptionBudget",
        short_names=("pdb",),
        subresources={"status": ("PodDisruptionBudget", _STATUS)},
    ),
    _r("policy", "podsecuritypolicies", "PodSecurityPolicy", False, short_names=("psp",)),
    # admission
    _r(
        "admissionregistration.k8s.io",
        "mutatingwebhookconfigurations",
        "MutatingWebhookConfiguration",
        False,
        categories=("api-extensions",),
    ),
    _r(
        "admissionregistration.k8s.io",
        "validatingwebhookconfigurations",
        "ValidatingWebhookConfiguration",
        False,
        categories=("api-extensions",),
    ),
    # rbac
    _r("rbac.authorization.k8s.io", "roles", "Role"),
    _r("rbac.authorization.k8s.io", "rolebindings", "RoleBinding"),
    _r("rbac.authorization.k8s.io", "clusterroles", "ClusterRole", False),
    _r("rbac.authorization.k8s.io", "clusterrolebindings", "ClusterRoleBinding", False),
    # reviews (virtual, create-only)
    _r(
        "authorization.k8s.io",
        "selfsubjectaccessreviews",
        "SelfSubjectAccessReview",
        False,
        verbs=CREATE_ONLY,
        virtual=True,
    ),
    _r(
        "authorization.k8s.io",
        "selfsubjectrulesreviews",
        "SelfSubjectRulesReview",
        False,
        verbs=CREATE_ONLY,
        virtual=True,
    ),
    _r(
        "authorization.k8s.io",
        "subjectaccessreviews",
        "SubjectAccessReview",
        False,
        verbs=CREATE_ONLY,
        virtual=True,
    ),
    _r(
        "authorization.k8s.io",
        "localsubjectaccessreviews",
        "LocalSubjectAccessReview",
        True,
        verbs=CREATE_ONLY,
        virtual=True,
    ),
    _r("authentication.k8s.io", "tokenreviews", "TokenReview", False, verbs=CREATE_ONLY, virtual=True),
    _r(
        "authentication.k8s.io",
        "selfsubjectreviews",
        "SelfSubjectReview",
        False,
        verbs=CREATE_ONLY,
        virtual=True,
    ),
    # storage, discovery, networking, apiextensions, certificates, autoscaling, flowcontrol
    _r("storage.k8s.io", "storageclasses", "StorageClass", False, short_names=("sc",)),
    _r("storage.k8s.io", "csidrivers", "CSIDriver", False),
    _r("storage.k8s.io", "csinodes", "CSINode", False),
    _r(
        "storage.k8s.io",
        "volumeattachments",
        "VolumeAttachment",
        False,
        subresources={"status": ("VolumeAttachment", _STATUS)},
    ),
    # Served 1.21-1.26 (v1beta1) and 1.24+ (v1); the real kube-scheduler's VolumeBinding plugin
    # watches it, so discovery must list it where the minor serves it.
    _r("storage.k8s.io", "csistoragecapacities", "CSIStorageCapacity"),
    _r("discovery.k8s.io", "endpointslices", "EndpointSlice"),
    # Dynamic Resource Allocation, served as resource.k8s.io/v1 from 1.34 (versions.py)
    _r("resource.k8s.io", "deviceclasses", "DeviceClass", False),
    _r(
        "resource.k8s.io",
        "resourceclaims",
        "ResourceClaim",
        subresources={"status": ("ResourceClaim", _STATUS)},
    ),
    _r("resource.k8s.io", "resourceclaimtemplates", "ResourceClaimTemplate"),
    _r("resource.k8s.io", "resourceslices", "ResourceSlice", False),
    _r("networking.k8s.io", "networkpolicies", "NetworkPolicy", short_names=("netpol",)),
    _r(
        "networking.k8s.io",
        "ingresses",
        "Ingress",
        short_names=("ing",),
        subresources={"status": ("Ingress", _STATUS)},
    ),
    _r("networking.k8s.io", "ingressclasses", "IngressClass", False),
    _r(
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        False,
        short_names=("crd", "crds"),
        categories=("api-extensions",),
        subresources={"status": ("CustomResourceDefinition", _STATUS)},
    ),
    _r(
        "apiregistration.k8s.io",
        "apiservices",
        "APIService",
        False,
        categories=("api-extensions",),
        subresources={"status": ("APIService", _STATUS)},
    ),
    _r(
        "certificates.k8s.io",
        "certificatesigningrequests",
        "CertificateSigningRequest",
        False,
        short_names=("csr",),
        subresources={
            "status": ("CertificateSigningRequest", _STATUS),
            "approval": ("CertificateSigningRequest", _STATUS),
        },
    ),
    _r(
        "autoscaling",
        "horizontalpodautoscalers",
        "HorizontalPodAutoscaler",
        short_names=("hpa",),
        categories=("all",),
        subresources={"status": ("HorizontalPodAutoscaler", _STATUS)},
    ),
    _r(
        "flowcontrol.apiserver.k8s.io",
        "flowschemas",
        "FlowSchema",
        False,
        subresources={"status": ("FlowSchema", _STATUS)},
    ),
    _r(
        "flowcontrol.apiserver.k8s.io",
        "prioritylevelconfigurations",
        "PriorityLevelConfiguration",
        False,
        subresources={"status": ("PriorityLevelConfiguration", _STATUS)},
    ),
)

_BY_GROUP_PLURAL: dict[tuple[str, str], ResourceType] = {(r.group, r.plural): r for r in RESOURCES}


def lookup(group: str, plural: str) -> ResourceType | None:
    return _BY_GROUP_PLURAL.get((group, plural))


def by_kind(group: str, kind: str) -> ResourceType | None:
    for r in RESOURCES:
        if r.group == group and r.kind == kind:
            return r
    return None
