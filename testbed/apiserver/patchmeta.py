"""Strategic-merge-patch metadata for the built-in kinds: which list fields merge, and on what key.

The real apiserver reads this from the ``patchStrategy`` / ``patchMergeKey`` struct tags of the Go
types in ``k8s.io/api``. Here the same facts are a small data table: a schema is a mapping from a
JSON field name to a :class:`Field`; a field not listed behaves like an untagged Go field (maps and
structs merge key by key, lists are replaced whole). Only the tagged fields need listing, plus the
struct fields that lead to them.

Facts recorded here (checked against the k8s.io/api types; absent means "no patch strategy", so
the list is replaced atomically): tolerations, envFrom, args, command, readinessGates,
node taints, nodeSelectorTerms, container statuses, endpoints subsets, EndpointSlice endpoints and
ports, resources.claims, CSR / FlowSchema / CRD conditions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from testbed.apiserver import resources


@dataclass(frozen=True)
class Field:
    """Patch metadata of one field; ``schema`` describes the value (a struct) or each list element."""

    strategy: str = ""  # "" (default), "merge" or "replace"
    merge_key: str = ""  # only for lists of objects with strategy "merge"
    retain_keys: bool = False  # the "retainKeys" strategy: consulted when computing patches only
    schema: Mapping[str, Field] = field(default_factory=dict)


Schema = Mapping[str, Field]
UNKNOWN = Field()


def _merge(key: str = "", schema: Schema | None = None, retain_keys: bool = False) -> Field:
    return Field("merge", key, retain_keys, schema or {})


def _struct(schema: Schema, retain_keys: bool = False) -> Field:
    return Field("", "", retain_keys, schema)


def _conditions() -> Field:
    return _merge("type")


OBJECT_META: Schema = {
    "finalizers": _merge(),  # list of strings, merged as a set
    "ownerReferences": _merge("uid"),
}

CONTAINER: Schema = {
    "ports": _merge("containerPort"),
    "env": _merge("name"),
    "volumeMounts": _merge("mountPath"),
    "volumeDevices": _merge("devicePath"),
}

POD_SPEC: Schema = {
    "volumes": _merge("name", retain_keys=True),
    "initContainers": _merge("name", CONTAINER),
    "containers": _merge("name", CONTAINER),
    "ephemeralContainers": _merge("name", CONTAINER),
    "imagePullSecrets": _merge("name"),
    "hostAliases": _merge("ip"),
    "topologySpreadConstraints": _merge("topologyKey"),
    "resourceClaims": _merge("name", retain_keys=True),
    "schedulingGates": _merge("name"),
}

POD_STATUS: Schema = {
    "conditions": _conditions(),
    "podIPs": _merge("ip"),
    "hostIPs": _merge("ip"),
    "resourceClaimStatuses": _merge("name", retain_keys=True),
}

POD_TEMPLATE_SPEC: Schema = {"metadata": _struct(OBJECT_META), "spec": _struct(POD_SPEC)}
_STATUS_CONDITIONS: Schema = {"conditions": _conditions()}


def _root(**fields: Field) -> Schema:
    return {"metadata": _struct(OBJECT_META), **fields}


def _workload(**spec: Field) -> Schema:
    return _root(spec=_struct({"template": _struct(POD_TEMPLATE_SPEC), **spec}),
                 status=_struct(_STATUS_CONDITIONS))


# (group, kind) -> schema of the whole object, for kinds with something beyond ObjectMeta.
_KINDS: dict[tuple[str, str], Schema] = {
    ("", "Pod"): _root(spec=_struct(POD_SPEC), status=_struct(POD_STATUS)),
    ("", "PodTemplate"): _root(template=_struct(POD_TEMPLATE_SPEC)),
    ("", "ReplicationController"): _workload(),
    ("apps", "Deployment"): _workload(strategy=_struct({}, retain_keys=True)),
    ("apps", "ReplicaSet"): _workload(),
    ("apps", "DaemonSet"): _workload(),
    ("apps", "StatefulSet"): _workload(),
    ("batch", "Job"): _workload(),
    ("batch", "CronJob"): _root(spec=_struct({"jobTemplate": _struct(
        {"metadata": _struct(OBJECT_META), "spec": _struct({"template": _struct(POD_TEMPLATE_SPEC)})})})),
    ("", "Node"): _root(spec=_struct({"podCIDRs": _merge()}),
                        status=_struct({"conditions": _conditions(), "addresses": _merge("type")})),
    ("", "Service"): _root(spec=_struct({"ports": _merge("port")}), status=_struct(_STATUS_CONDITIONS)),
    ("", "Namespace"): _root(status=_struct(_STATUS_CONDITIONS)),
    ("", "ServiceAccount"): _root(secrets=_merge("name")),
    ("", "PersistentVolumeClaim"): _root(status=_struct(_STATUS_CONDITIONS)),
    ("", "ComponentStatus"): _root(conditions=_conditions()),
    ("policy", "PodDisruptionBudget"): _root(status=_struct(_STATUS_CONDITIONS)),
    ("autoscaling", "HorizontalPodAutoscaler"): _root(status=_struct(_STATUS_CONDITIONS)),
    ("apiregistration.k8s.io", "APIService"): _root(status=_struct(_STATUS_CONDITIONS)),
    ("admissionregistration.k8s.io", "MutatingWebhookConfiguration"): _root(webhooks=_merge("name")),
    ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration"): _root(webhooks=_merge("name")),
    ("storage.k8s.io", "CSINode"): _root(spec=_struct({"drivers": _merge("name")})),
}

# Kinds reachable through subresources or legacy groups that the resource table does not list.
_EXTRA_KINDS = {("autoscaling", "Scale"), ("apps", "Scale"), ("extensions", "Scale")}
# The 1.18-1.21 ``extensions`` group serves the same types as their new homes.
_LEGACY_GROUPS = {"extensions": ("apps", "networking.k8s.io", "policy")}


def _canonical_group(group: str, kind: str) -> str | None:
    if (group, kind) in _EXTRA_KINDS or (group, kind) in _KINDS:
        return group
    rt = resources.by_kind(group, kind)
    if rt is not None and not rt.virtual:
        return group
    for alias in _LEGACY_GROUPS.get(group, ()):
        rt = resources.by_kind(alias, kind)
        if rt is not None and not rt.virtual:
            return alias
    return None


def has_metadata(group: str, kind: str) -> bool:
    """True for built-in kinds (they have Go types, hence SMP metadata); False for custom resources."""
    return _canonical_group(group, kind) is not None


def schema_for(group: str, kind: str) -> Schema:
    """The schema of a whole object; kinds without list strategies still get ObjectMeta's."""
    canonical = _canonical_group(group, kind)
    if canonical is None:
        return {}
    return _KINDS.get((canonical, kind)) or _root()


def lookup(schema: Schema, name: str) -> Field:
    return schema.get(name, UNKNOWN)
