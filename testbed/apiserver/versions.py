"""Version profiles: what a default kube-apiserver of each minor 1.18-1.35 serves and how it behaves.

The tables here are data. Every row names its source with the keys of
``shared/reference/k8s-versions.md`` (DG = the API deprecation guide, API@x = k8s.io/api at
release x, FG:Name = the feature-gate page, AS@x = k8s.io/apiserver, CL-1.x = the changelog,
PRIO = the APIService priority table of kube-apiserver, ``pkg/controlplane/apiserver``
``DefaultGenericAPIServicePriorities`` and its predecessor in ``cmd/kube-apiserver/app/aggregator.go``,
REG = the registry strategies, ``pkg/registry``, of k8s.io/kubernetes at the minor).
Which resource types exist at all lives in :mod:`testbed.apiserver.resources`; this module says
which group-versions expose which of them, per minor.

1.34 and 1.35 (CL-1.34, CL-1.35, the v1.34 and v1.35 release announcements): neither removes a
group-version a 1.33 server serves. 1.34 graduates Dynamic Resource Allocation, so
``resource.k8s.io/v1`` (DeviceClass, ResourceClaim, ResourceClaimTemplate, ResourceSlice) is served
by default [FG:DynamicResourceAllocation: GA, on, 1.34; locked on in 1.35]; the older DRA versions
stay off. Discovery, admission and the scheduler configuration (``kubescheduler.config.k8s.io/v1``
only) behave as in 1.33.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache

from .resources import ResourceType, lookup

MINORS: tuple[int, ...] = tuple(range(18, 36))
FIRST, LAST = MINORS[0], MINORS[-1]


class UnknownMinor(ValueError):
    """A Kubernetes version outside 1.18-1.35 (or not a version at all)."""

    def __init__(self, given: str) -> None:
        super().__init__(
            f'unknown Kubernetes minor "{given}": supported minors are 1.{FIRST} to 1.{LAST}')
        self.given = given


@dataclass(frozen=True)
class GroupVersion:
    group: str
    version: str
    resources: tuple[str, ...]  # plural names served in it, sorted as discovery lists them

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


# -- section 1: latest patch per minor [reference §1: CL-1.18, API/KL/KS tags] -----------------
_GIT_VERSION: dict[int, str] = {
    18: "v1.18.20", 19: "v1.19.16", 20: "v1.20.15", 21: "v1.21.14", 22: "v1.22.17",
    23: "v1.23.17", 24: "v1.24.17", 25: "v1.25.16", 26: "v1.26.15", 27: "v1.27.16",
    28: "v1.28.15", 29: "v1.29.15", 30: "v1.30.14", 31: "v1.31.14", 32: "v1.32.13",
    33: "v1.33.13",  # final-patch status UNCONFIRMED in the reference
    # 1.34/1.35: the patch the pinned kubectl of that minor reports (testbed/clients.py); newer
    # patches exist upstream, the emulation does not depend on the patch level
    34: "v1.34.5", 35: "v1.35.2",
}

# -- section 2: served group-versions --------------------------------------------------------
_CORE = ("bindings", "componentstatuses", "configmaps", "endpoints", "events", "limitranges",
         "namespaces", "nodes", "persistentvolumeclaims", "persistentvolumes", "pods", "podtemplates",
         "replicationcontrollers", "resourcequotas", "secrets", "serviceaccounts", "services")
_APPS = ("controllerrevisions", "daemonsets", "deployments", "replicasets", "statefulsets")
_AUTHZ = ("localsubjectaccessreviews", "selfsubjectaccessreviews", "selfsubjectrulesreviews",
          "subjectaccessreviews")
_RBAC = ("clusterrolebindings", "clusterroles", "rolebindings", "roles")
_STORAGE = ("csidrivers", "csinodes", "storageclasses", "volumeattachments")
_WEBHOOKS = ("mutatingwebhookconfigurations", "validatingwebhookconfigurations")
_HPA = ("horizontalpodautoscalers",)
_APF = ("flowschemas", "prioritylevelconfigurations")
_DRA = ("deviceclasses", "resourceclaims", "resourceclaimtemplates", "resourceslices")


@dataclass(frozen=True)
class _Row:
    group: str
    version: str
    first: int
    last: int
    resources: tuple[str, ...]


LATEST_ROW = 35  # rows still served by the newest emulated minor

# One row per (group-version, set of resources sharing a lifetime). Rows of one group-version
# merge. Only what a default server serves (no --runtime-config, default feature gates).
_ROWS: tuple[_Row, ...] = (
    _Row("", "v1", 18, LATEST_ROW, _CORE),  # §2a, API@18
    _Row("apiregistration.k8s.io", "v1", 18, LATEST_ROW, ("apiservices",)),  # §2a
    _Row("apiregistration.k8s.io", "v1beta1", 18, 21, ("apiservices",)),  # §2c note, DG v1.22
    _Row("apps", "v1", 18, LATEST_ROW, _APPS),  # §2a
    _Row("events.k8s.io", "v1", 19, LATEST_ROW, ("events",)),  # §2b, DG
    _Row("events.k8s.io", "v1beta1", 18, 24, ("events",)),  # §2b, DG v1.25
    _Row("authentication.k8s.io", "v1", 18, LATEST_ROW, ("tokenreviews",)),  # §2a
    _Row("authentication.k8s.io", "v1", 28, LATEST_ROW, ("selfsubjectreviews",)),  # §2b, API@28, kk#117713
    _Row("authentication.k8s.io", "v1beta1", 18, 21, ("tokenreviews",)),  # §2b, DG v1.22
    _Row("authorization.k8s.io", "v1", 18, LATEST_ROW, _AUTHZ),  # §2a
    _Row("authorization.k8s.io", "v1beta1", 18, 21, _AUTHZ),  # §2b, DG v1.22
    _Row("autoscaling", "v1", 18, LATEST_ROW, _HPA),  # §2c note, DG
    _Row("autoscaling", "v2", 23, LATEST_ROW, _HPA),  # DG (autoscaling/v2 since 1.23)
    _Row("autoscaling", "v2beta1", 18, 24, _HPA),  # DG v1.25
    _Row("autoscaling", "v2beta2", 18, 25, _HPA),  # DG v1.26
    _Row("batch", "v1", 18, LATEST_ROW, ("jobs",)),  # §2a
    _Row("batch", "v1", 21, LATEST_ROW, ("cronjobs",)),  # §2b, DG
    _Row("batch", "v1beta1", 18, 24, ("cronjobs",)),  # §2b, DG v1.25
    _Row("certificates.k8s.io", "v1", 19, LATEST_ROW, ("certificatesigningrequests",)),  # DG v1.22
    _Row("certificates.k8s.io", "v1beta1", 18, 21, ("certificatesigningrequests",)),  # DG v1.22
    _Row("networking.k8s.io", "v1", 18, LATEST_ROW, ("networkpolicies",)),  # API@18
    _Row("networking.k8s.io", "v1", 19, LATEST_ROW, ("ingressclasses", "ingresses")),  # DG v1.22
    _Row("networking.k8s.io", "v1beta1", 18, 21, ("ingressclasses", "ingresses")),  # DG v1.22
    _Row("policy", "v1", 21, LATEST_ROW, ("poddisruptionbudgets",)),  # §2b, DG
    _Row("policy", "v1beta1", 18, 24, ("poddisruptionbudgets", "podsecuritypolicies")),  # §2b, DG v1.25
    _Row("rbac.authorization.k8s.io", "v1", 18, LATEST_ROW, _RBAC),  # §2a
    _Row("rbac.authorization.k8s.io", "v1beta1", 18, 21, _RBAC),  # §2b, DG v1.22
    # CSIDriver is in storage.k8s.io/v1 from 1.18 (kk#84814), §2a
    _Row("storage.k8s.io", "v1", 18, LATEST_ROW, _STORAGE),  # §2a
    _Row("storage.k8s.io", "v1", 24, LATEST_ROW, ("csistoragecapacities",)),  # §2b, API@24
    _Row("storage.k8s.io", "v1beta1", 18, 21, _STORAGE),  # §2b, DG v1.22
    _Row("storage.k8s.io", "v1beta1", 21, 26, ("csistoragecapacities",)),  # §2b, DG v1.27, API@21
    _Row("admissionregistration.k8s.io", "v1", 18, LATEST_ROW, _WEBHOOKS),  # §2a
    # admissionregistration v1beta1 returns in 1.28 for ValidatingAdmissionPolicy, off by default (KEP3136)
    _Row("admissionregistration.k8s.io", "v1beta1", 18, 21, _WEBHOOKS),  # §2b, DG v1.22
    _Row("apiextensions.k8s.io", "v1", 18, LATEST_ROW, ("customresourcedefinitions",)),  # §2a
    _Row("apiextensions.k8s.io", "v1beta1", 18, 21, ("customresourcedefinitions",)),  # §2b, DG v1.22
    _Row("scheduling.k8s.io", "v1", 18, LATEST_ROW, ("priorityclasses",)),  # §2a
    _Row("scheduling.k8s.io", "v1beta1", 18, 21, ("priorityclasses",)),  # §2b, DG v1.22
    _Row("coordination.k8s.io", "v1", 18, LATEST_ROW, ("leases",)),  # §2a
    _Row("coordination.k8s.io", "v1beta1", 18, 21, ("leases",)),  # §2b, DG v1.22
    _Row("node.k8s.io", "v1", 20, LATEST_ROW, ("runtimeclasses",)),  # §2b, DG, API@20
    _Row("node.k8s.io", "v1beta1", 18, 24, ("runtimeclasses",)),  # §2b, DG v1.25
    _Row("discovery.k8s.io", "v1", 21, LATEST_ROW, ("endpointslices",)),  # §2b, DG
    _Row("discovery.k8s.io", "v1beta1", 18, 24, ("endpointslices",)),  # §2b, DG v1.25
    _Row("flowcontrol.apiserver.k8s.io", "v1", 29, LATEST_ROW, _APF),  # §2b, DG
    _Row("flowcontrol.apiserver.k8s.io", "v1beta3", 26, 31, _APF),  # §2b, API@26, kk#127017
    _Row("flowcontrol.apiserver.k8s.io", "v1beta2", 23, 28, _APF),  # §2b, API@23, DG v1.29
    _Row("flowcontrol.apiserver.k8s.io", "v1beta1", 20, 25, _APF),  # §2b, FG:APIPriorityAndFairness, DG
    # DRA GA in 1.34, on by default (FG:DynamicResourceAllocation, CL-1.34); v1beta1/v1beta2 stay off
    _Row("resource.k8s.io", "v1", 34, LATEST_ROW, _DRA),
)
# Not modelled (no client of this project needs them; see the report): extensions/v1beta1 Ingress
# (1.18-1.21), admissionregistration.k8s.io/v1 ValidatingAdmissionPolicy (1.30+), networking.k8s.io/v1
# IPAddress/ServiceCIDR (1.33), pods/exec|attach|portforward|resize subresources.

# Order of groups in /apis. The aggregator sorts APIServices by group priority (descending) and
# puts its own apiregistration.k8s.io first [PRIO]: 18000 core, 17800 apps, 17750 events,
# 17700 authentication, 17600 authorization, 17500 autoscaling, 17400 batch, 17300 certificates,
# 17200 networking, 17100 policy, 17000 rbac, 16800 storage, 16700 admissionregistration and
# apiextensions (observed in that order on real clusters), 16600 scheduling, 16500 coordination,
# 16300 node, 16200 discovery, 16100 flowcontrol, then resource (15900, served from 1.34).
_GROUP_ORDER: tuple[str, ...] = (
    "", "apiregistration.k8s.io", "apps", "events.k8s.io", "authentication.k8s.io",
    "authorization.k8s.io", "autoscaling", "batch", "certificates.k8s.io", "networking.k8s.io",
    "policy", "rbac.authorization.k8s.io", "storage.k8s.io", "admissionregistration.k8s.io",
    "apiextensions.k8s.io", "scheduling.k8s.io", "coordination.k8s.io", "node.k8s.io",
    "discovery.k8s.io", "flowcontrol.apiserver.k8s.io", "resource.k8s.io",
)

# Version priority inside a group [PRIO]; higher is preferred. Where the table is silent
# (apiregistration.k8s.io, served by the aggregator itself) GA sorts before beta.
_VERSION_PRIORITY: dict[tuple[str, str], int] = {
    ("events.k8s.io", "v1"): 15, ("events.k8s.io", "v1beta1"): 5,
    ("autoscaling", "v2"): 30, ("autoscaling", "v1"): 15, ("autoscaling", "v2beta1"): 9,
    ("autoscaling", "v2beta2"): 1,
    ("rbac.authorization.k8s.io", "v1beta1"): 12, ("admissionregistration.k8s.io", "v1beta1"): 12,
    ("discovery.k8s.io", "v1beta1"): 12,
    ("flowcontrol.apiserver.k8s.io", "v1"): 21, ("flowcontrol.apiserver.k8s.io", "v1beta3"): 18,
    ("flowcontrol.apiserver.k8s.io", "v1beta2"): 15, ("flowcontrol.apiserver.k8s.io", "v1beta1"): 12,
}

_VERSION_RE = re.compile(r"^v(\d+)(?:(alpha|beta)(\d+))?$")


def _version_priority(group: str, version: str) -> int:
    if (group, version) in _VERSION_PRIORITY:
        return _VERSION_PRIORITY[(group, version)]
    m = _VERSION_RE.match(version)
    if not m:
        return 0
    return {None: 15, "beta": 9, "alpha": 1}[m.group(2)]


@dataclass(frozen=True)
class VersionProfile:
    minor: int
    git_version: str
    served: tuple[GroupVersion, ...]
    aggregated_discovery: tuple[str, ...]
    openapi_v3: bool
    admission_review_versions: tuple[str, ...]
    webhook_config_versions: tuple[str, ...]
    sa_token_mode: str
    auto_sa_token_secret: bool
    field_validation: bool
    emulation_fields: bool
    # (group, plural) of the kinds stored with metadata.generation (section 3)
    generation_kinds: frozenset[tuple[str, str]] = frozenset()
    # (group, plural) of the kinds whose immediate DELETE answers the object, not a Status (section 3)
    delete_returns_object: frozenset[tuple[str, str]] = frozenset()
    _index: dict[tuple[str, str], GroupVersion] = field(default_factory=dict, compare=False,
                                                         hash=False, repr=False)

    def __post_init__(self) -> None:
        self._index.update({(gv.group, gv.version): gv for gv in self.served})

    def serves(self, group: str, version: str) -> bool:
        return (group, version) in self._index

    def group_version(self, group: str, version: str) -> GroupVersion | None:
        return self._index.get((group, version))

    def resource(self, group: str, version: str, plural: str) -> ResourceType | None:
        gv = self._index.get((group, version))
        if gv is None or plural not in gv.resources:
            return None
        return lookup(group, plural)

    def preferred_version(self, group: str) -> str | None:
        for gv in self.served:
            if gv.group == group:
                return gv.version
        return None

    def groups(self) -> list[str]:
        """Named groups in /apis order (the core group, served under /api, is not one of them)."""
        out: list[str] = []
        for gv in self.served:
            if gv.group and gv.group not in out:
                out.append(gv.group)
        return out

    def versions_for(self, group: str, plural: str) -> list[str]:
        return [gv.version for gv in self.served if gv.group == group and plural in gv.resources]

    def group_versions(self, group: str) -> list[GroupVersion]:
        return [gv for gv in self.served if gv.group == group]


def _served(minor: int) -> tuple[GroupVersion, ...]:
    merged: dict[tuple[str, str], set[str]] = {}
    for row in _ROWS:
        if row.first <= minor <= row.last:
            merged.setdefault((row.group, row.version), set()).update(row.resources)
    keys = sorted(merged, key=lambda k: (_GROUP_ORDER.index(k[0]), -_version_priority(*k), k[1]))
    return tuple(GroupVersion(g, v, tuple(sorted(merged[(g, v)]))) for g, v in keys)


def _aggregated(minor: int) -> tuple[str, ...]:
    # §5a: 1.26 has the gate alpha (off); 1.27-1.29 beta on, v2beta1; 1.30-1.32 v2 + v2beta1;
    # 1.33 AggregatedDiscoveryRemoveBetaType defaults true [AS@25..33, FG:AggregatedDiscoveryEndpoint];
    # 1.34 and 1.35 keep v2 only (no change in CL-1.34/CL-1.35).
    if minor <= 26:
        return ()
    if minor <= 29:
        return ("v2beta1",)
    if minor <= 32:
        return ("v2", "v2beta1")
    return ("v2",)



# -- section 3: what the registry strategies write, per minor ---------------------------------------
# Measured against the real kube-apiserver of each minor (the fidelity corpus of
# testbed/controlplane/fidelity.py and a create / patch / delete of every kind listed here, Dec 3 2026),
# and checked against which kinds' registry strategies set a generation in the k8s.io/kubernetes
# release of the minor [REG].
#
# metadata.generation: 1 on create, bumped when the spec changes; every other kind has none.
# Kind (group, plural) -> first minor that sets it.
_GENERATION_SINCE: dict[tuple[str, str], int] = {
    ("", "replicationcontrollers"): FIRST,
    ("apps", "daemonsets"): FIRST,
    ("apps", "deployments"): FIRST,
    ("apps", "replicasets"): FIRST,
    ("apps", "statefulsets"): FIRST,
    ("policy", "poddisruptionbudgets"): FIRST,
    ("networking.k8s.io", "networkpolicies"): FIRST,
    ("networking.k8s.io", "ingresses"): FIRST,
    ("networking.k8s.io", "ingressclasses"): FIRST,
    ("discovery.k8s.io", "endpointslices"): FIRST,
    ("scheduling.k8s.io", "priorityclasses"): FIRST,
    ("flowcontrol.apiserver.k8s.io", "flowschemas"): FIRST,
    ("flowcontrol.apiserver.k8s.io", "prioritylevelconfigurations"): FIRST,
    ("admissionregistration.k8s.io", "mutatingwebhookconfigurations"): FIRST,
    ("admissionregistration.k8s.io", "validatingwebhookconfigurations"): FIRST,
    ("apiextensions.k8s.io", "customresourcedefinitions"): FIRST,
    # Jobs, CronJobs and PodTemplates get one from 1.22 (none on a 1.21 server, measured)
    ("batch", "jobs"): 22,
    ("batch", "cronjobs"): 22,
    ("", "podtemplates"): 22,
    ("resource.k8s.io", "deviceclasses"): 32,
    ("resource.k8s.io", "resourceslices"): 32,
    # Pods from 1.33 (KEP-5067, pod generation; none on 1.32, 1 on 1.33-1.35, measured)
    ("", "pods"): 33,
}

# The group a 422 names (in its message and `details.group`) where it is not the kind's own: the group
# the kind's internal type was first registered in. Measured Dec 3 2026 (an invalid name and an invalid
# spec of each kind, real 1.20, 1.25, 1.26, 1.27; the corpus on every minor): NetworkPolicy and Ingress
# say `extensions` up to 1.25; Deployment, DaemonSet and ReplicaSet say it on 1.26 only.
# (group, plural) -> ((first minor, last minor, group named), ...)
_INVALID_GROUP: dict[tuple[str, str], tuple[tuple[int, int, str], ...]] = {
    ("networking.k8s.io", "networkpolicies"): ((FIRST, 25, "extensions"),),
    ("networking.k8s.io", "ingresses"): ((FIRST, 25, "extensions"),),
    ("apps", "deployments"): ((26, 26, "extensions"),),
    ("apps", "daemonsets"): ((26, 26, "extensions"),),
    ("apps", "replicasets"): ((26, 26, "extensions"),),
}


def invalid_group(group: str, plural: str, minor: int) -> str:
    """The group a 422 for ``group``/``plural`` names on ``minor`` (see ``_INVALID_GROUP``)."""
    for lo, hi, named in _INVALID_GROUP.get((group, plural), ()):
        if lo <= minor <= hi:
            return named
    return group


# An object deleted at once is answered with itself for these kinds, with
# ``Status{status: Success, details: {name, group, kind: <plural>, uid}}`` for every other (an object
# that lingers, with finalizers or a grace period, is always answered with itself).
# Kind -> first minor that answers the object. Services answer a Status up to 1.22 (their REST
# wrapper built one), the object from 1.23 (measured on 1.18-1.35).
_DELETE_RETURNS_OBJECT_SINCE: dict[tuple[str, str], int] = {
    ("", "namespaces"): FIRST,
    ("", "pods"): FIRST,
    ("", "podtemplates"): FIRST,
    ("", "persistentvolumes"): FIRST,
    ("", "persistentvolumeclaims"): FIRST,
    ("", "resourcequotas"): FIRST,
    ("", "serviceaccounts"): FIRST,
    ("", "services"): 23,
    ("policy", "podsecuritypolicies"): FIRST,
    ("storage.k8s.io", "storageclasses"): FIRST,
    ("storage.k8s.io", "csidrivers"): FIRST,
    ("storage.k8s.io", "csinodes"): FIRST,
    ("storage.k8s.io", "volumeattachments"): FIRST,
    ("resource.k8s.io", "deviceclasses"): FIRST,
    ("resource.k8s.io", "resourceclaims"): FIRST,
    ("resource.k8s.io", "resourceclaimtemplates"): FIRST,
    ("resource.k8s.io", "resourceslices"): FIRST,
}


def _since(table: dict[tuple[str, str], int], minor: int) -> frozenset[tuple[str, str]]:
    return frozenset(k for k, first in table.items() if minor >= first)


def _build(minor: int) -> VersionProfile:
    return VersionProfile(
        minor=minor,
        git_version=_GIT_VERSION[minor],
        served=_served(minor),
        aggregated_discovery=_aggregated(minor),
        # §5b: OpenAPIV3 alpha (off) 1.23, beta (on) 1.24-1.26, GA 1.27 [FG:OpenAPIV3]
        openapi_v3=minor >= 24,
        # §4: every minor in range sends both AdmissionReview versions [AS@18, AS@33]
        admission_review_versions=("v1", "v1beta1"),
        webhook_config_versions=("v1", "v1beta1") if minor <= 21 else ("v1",),  # DG v1.22
        # §9: BoundServiceAccountTokenVolume beta (on) 1.21 [FG:BoundServiceAccountTokenVolume]
        sa_token_mode="secret" if minor <= 20 else "projected",
        # §9: LegacyServiceAccountTokenNoAutoGeneration beta (on) 1.24
        auto_sa_token_secret=minor <= 23,
        # ServerSideFieldValidation: alpha (off) 1.23-1.24, beta (on) 1.25, GA 1.27
        # [FG:ServerSideFieldValidation, KEP-2885]
        field_validation=minor >= 25,
        # §1: emulationMajor/... appear in /version from 1.33 [AM@33]
        emulation_fields=minor >= 33,
        generation_kinds=_since(_GENERATION_SINCE, minor),
        delete_returns_object=_since(_DELETE_RETURNS_OBJECT_SINCE, minor),
    )


_PARSE_RE = re.compile(r"^v?(\d+)\.(\d+)(?:\.\d+)?(?:[-+].*)?$")


def parse_minor(value: int | str) -> int:
    """``33``, ``"33"``, ``"1.33"``, ``"v1.33"``, ``"1.33.2"`` -> 33; raises :class:`UnknownMinor`."""
    if isinstance(value, bool):
        raise UnknownMinor(str(value))
    if isinstance(value, int):
        minor, shown = value, f"1.{value}"
    else:
        text = value.strip()
        if text.isdigit():
            minor, shown = int(text), f"1.{int(text)}"
        else:
            m = _PARSE_RE.match(text)
            if not m or m.group(1) != "1":
                raise UnknownMinor(text)
            minor, shown = int(m.group(2)), f"1.{int(m.group(2))}"
    if minor not in MINORS:
        raise UnknownMinor(shown)
    return minor


@cache
def _cached(minor: int) -> VersionProfile:
    return _build(minor)


def profile(minor: int | str) -> VersionProfile:
    """The profile of one minor; the same object is returned for every spelling of it."""
    return _cached(parse_minor(minor))
