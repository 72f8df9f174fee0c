"""Discovery documents written the way a kube-apiserver of each minor writes them.

Unaggregated discovery (every minor): ``/api`` (APIVersions), ``/apis`` (APIGroupList),
``/apis/<group>`` (APIGroup), ``/api/v1`` and ``/apis/<group>/<version>`` (APIResourceList, with
subresources as ``pods/status`` entries). Aggregated discovery (1.27+, reference §5a): one
``APIGroupDiscoveryList`` for ``/api`` (the core group) and one for ``/apis`` (every named group),
chosen by the request's ``Accept`` header; clients read the response ``Content-Type`` parameters
(``g``/``v``/``as``) to tell the two apart, so the content type is part of the answer.

Shapes follow the documents the real server produces (kubernetes ``api/discovery/*.json``):
``singularName`` is empty for built-in types before 1.27 (kubernetes#113542 landed in 1.27) and
for every subresource entry; ``storageVersionHash`` is the first 8 bytes of SHA-256 over
``<group>/<version>/<kind>`` of the storage version, base64; in aggregated documents a
``responseKind`` in the resource's own group-version has empty group and version.

Simplifications: the storage version used for the hash is the most preferred version serving the
resource at that minor (events use core v1, as the real server stores them); gitCommit, buildDate
and goVersion in ``/version`` are placeholders of the right shape, not the release's real values.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from .resources import ResourceType, lookup
from .versions import GroupVersion, VersionProfile

AGGREGATED_GROUP = "apidiscovery.k8s.io"
AGGREGATED_AS = "APIGroupDiscoveryList"

# Go toolchain per minor for /version (approximate: the release branch's Go at its last patch).
_GO_VERSION: dict[int, str] = {
    18: "go1.13.15", 19: "go1.15.15", 20: "go1.15.15", 21: "go1.16.15", 22: "go1.16.15",
    23: "go1.19.6", 24: "go1.20.7", 25: "go1.20.10", 26: "go1.21.8", 27: "go1.22.5",
    28: "go1.22.8", 29: "go1.23.6", 30: "go1.23.10", 31: "go1.24.9", 32: "go1.24.12",
    33: "go1.24.13",
}


# Approximate release day of the last patch per minor (placeholder build dates).
_BUILD_DATE: dict[int, str] = {
    18: "2021-06-16", 19: "2021-10-27", 20: "2022-01-19", 21: "2022-06-15", 22: "2022-12-08",
    23: "2023-02-22", 24: "2023-08-23", 25: "2023-11-14", 26: "2024-03-14", 27: "2024-07-17",
    28: "2024-10-22", 29: "2025-02-12", 30: "2025-06-17", 31: "2025-11-12", 32: "2026-02-11",
    33: "2026-06-10",
}


def aggregated_content_type(version: str) -> str:
    return f"application/json;g={AGGREGATED_GROUP};v={version};as={AGGREGATED_AS}"


# -- /version --------------------------------------------------------------------------------
def version_info(p: VersionProfile) -> dict[str, Any]:
    """The ``version.Info`` object; emulation/min-compatibility fields only where the minor has them."""
    info: dict[str, Any] = {"major": "1", "minor": str(p.minor)}
    if p.emulation_fields:
        # a binary emulates its own version and is compatible down to the previous minor
        info.update({"emulationMajor": "1", "emulationMinor": str(p.minor),
                     "minCompatibilityMajor": "1", "minCompatibilityMinor": str(p.minor - 1)})
    info.update({
        "gitVersion": p.git_version,
        "gitCommit": hashlib.sha1(f"kubernetes {p.git_version}".encode()).hexdigest(),
        "gitTreeState": "clean",
        "buildDate": _BUILD_DATE.get(p.minor, "2026-06-15") + "T10:00:00Z",
        "goVersion": _GO_VERSION.get(p.minor, "go1.24.13"),
        "compiler": "gc",
        "platform": "linux/amd64",
    })
    return info


# -- unaggregated ----------------------------------------------------------------------------
def core_api_versions(p: VersionProfile, server_address: str) -> dict[str, Any]:
    """``GET /api``: the legacy APIVersions object."""
    return {
        "kind": "APIVersions",
        "versions": [gv.version for gv in p.group_versions("")],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    }


def _gv_ref(gv: GroupVersion) -> dict[str, str]:
    return {"groupVersion": gv.api_version, "version": gv.version}


def _group_entry(p: VersionProfile, group: str) -> dict[str, Any]:
    gvs = p.group_versions(group)
    return {"name": group, "versions": [_gv_ref(gv) for gv in gvs], "preferredVersion": _gv_ref(gvs[0])}


def api_group_list(p: VersionProfile) -> dict[str, Any]:
    """``GET /apis``: every named group, in the aggregator's priority order."""
    return {"kind": "APIGroupList", "apiVersion": "v1",
            "groups": [_group_entry(p, g) for g in p.groups()]}


def api_group(p: VersionProfile, group: str) -> dict[str, Any] | None:
    """``GET /apis/<group>``; ``None`` when the minor does not serve the group."""
    if not group or not p.group_versions(group):
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_group_entry(p, group)}


def storage_version_hash(group: str, version: str, kind: str) -> str:
    digest = hashlib.sha256(f"{group}/{version}/{kind}".encode()).digest()
    return base64.b64encode(digest[:8]).decode()


def _persisted(r: ResourceType) -> bool:
    # reviews, bindings and componentstatuses are not stored and carry no storage hash
    return not r.virtual and "create" in r.verbs and "list" in r.verbs


def _storage_hash(p: VersionProfile, r: ResourceType) -> str:
    if r.store_key == "events":
        return storage_version_hash("", "v1", "Event")
    versions = p.versions_for(r.group, r.plural)
    return storage_version_hash(r.group, versions[0], r.kind) if versions else ""


def _subresource_kind(p: VersionProfile, gv: GroupVersion, sub: str, kind: str) -> tuple[str, str, str]:
    """(group, version, kind) a subresource answers with; group/version equal gv's when shared."""
    if sub == "scale":
        return "autoscaling", "v1", "Scale"
    if sub == "eviction":
        # Eviction reached policy/v1 in 1.22 (together with the v1 PDB work of 1.21-1.22)
        return "policy", ("v1" if p.minor >= 22 else "v1beta1"), "Eviction"
    if sub == "token":
        return "authentication.k8s.io", "v1", "TokenRequest"
    if sub == "ephemeralcontainers" and p.minor <= 21:
        return gv.group, gv.version, "EphemeralContainers"  # §7: a Pod body from 1.22
    return gv.group, gv.version, kind


def _resources(p: VersionProfile, gv: GroupVersion) -> list[ResourceType]:
    out = [lookup(gv.group, name) for name in gv.resources]
    return sorted((r for r in out if r is not None), key=lambda r: r.plural)


def api_resource_list(p: VersionProfile, group: str, version: str) -> dict[str, Any] | None:
    """``GET /api/v1`` or ``GET /apis/<group>/<version>``; ``None`` when not served."""
    gv = p.group_version(group, version)
    if gv is None:
        return None
    entries: list[dict[str, Any]] = []
    for r in _resources(p, gv):
        e: dict[str, Any] = {
            "name": r.plural,
            "singularName": r.singular if p.minor >= 27 else "",
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": list(r.verbs),
        }
        if r.short_names:
            e["shortNames"] = list(r.short_names)
        if r.categories:
            e["categories"] = list(r.categories)
        if _persisted(r):
            e["storageVersionHash"] = _storage_hash(p, r)
        entries.append(e)
        for sub in sorted(r.subresources):
            sub_kind, sub_verbs = r.subresources[sub]
            g, v, k = _subresource_kind(p, gv, sub, sub_kind)
            s: dict[str, Any] = {"name": f"{r.plural}/{sub}", "singularName": "", "namespaced": r.namespaced}
            if (g, v) != (gv.group, gv.version):
                s["group"], s["version"] = g, v
            s["kind"] = k
            s["verbs"] = list(sub_verbs)
            entries.append(s)
    body: dict[str, Any] = {"kind": "APIResourceList"}
    if group:
        body["apiVersion"] = "v1"  # the core list is written without one
    body["groupVersion"] = gv.api_version
    body["resources"] = entries
    return body


# -- aggregated ------------------------------------------------------------------------------
def _response_kind(gv: GroupVersion, g: str, v: str, kind: str) -> dict[str, str]:
    same = (g, v) == (gv.group, gv.version)
    return {"group": "" if same else g, "version": "" if same else v, "kind": kind}


def _discovery_version(p: VersionProfile, gv: GroupVersion) -> dict[str, Any]:
    resources: list[dict[str, Any]] = []
    for r in _resources(p, gv):
        e: dict[str, Any] = {
            "resource": r.plural,
            "responseKind": _response_kind(gv, gv.group, gv.version, r.kind),
            "scope": "Namespaced" if r.namespaced else "Cluster",
            "singularResource": r.singular,
            "verbs": list(r.verbs),
        }
        if r.short_names:
            e["shortNames"] = list(r.short_names)
        if r.categories:
            e["categories"] = list(r.categories)
        subs = []
        for sub in sorted(r.subresources):
            sub_kind, sub_verbs = r.subresources[sub]
            g, v, k = _subresource_kind(p, gv, sub, sub_kind)
            subs.append({"subresource": sub, "responseKind": _response_kind(gv, g, v, k),
                         "verbs": list(sub_verbs)})
        if subs:
            e["subresources"] = subs
        resources.append(e)
    return {"version": gv.version, "resources": resources, "freshness": "Current"}


def aggregated_document(p: VersionProfile, version: str, *, core: bool) -> dict[str, Any]:
    """The APIGroupDiscoveryList for ``/api`` (``core``) or ``/apis`` in ``apidiscovery.k8s.io/<version>``."""
    groups = [""] if core else p.groups()
    items = []
    for group in groups:
        meta: dict[str, Any] = {"creationTimestamp": None}
        if group:
            meta["name"] = group
        items.append({"metadata": meta,
                      "versions": [_discovery_version(p, gv) for gv in p.group_versions(group)]})
    return {"kind": AGGREGATED_AS, "apiVersion": f"{AGGREGATED_GROUP}/{version}", "metadata": {},
            "items": items}


def _parse_accept(accept: str) -> list[tuple[str, dict[str, str]]]:
    """Media ranges of an Accept header, best first (q descending, wildcards after exact types).

    Ties keep header order, which is what the apiserver's negotiation does for the short lists
    clients send (its sort is an insertion sort on small inputs).
    """
    ranges: list[tuple[float, int, int, str, dict[str, str]]] = []
    for pos, clause in enumerate(accept.split(",")):
        parts = [x.strip() for x in clause.split(";")]
        media = parts[0].lower()
        if not media:
            continue
        if media == "*":
            media = "*/*"
        params: dict[str, str] = {}
        q = 1.0
        for prm in parts[1:]:
            if "=" not in prm:
                continue
            k, _, v = prm.partition("=")
            k, v = k.strip().lower(), v.strip().strip('"')
            if k == "q":
                try:
                    q = float(v)
                except ValueError:
                    q = 0.0
            else:
                params[k] = v
        if q <= 0:
            continue
        wildcard = 2 if media == "*/*" else 1 if media.endswith("/*") else 0
        ranges.append((q, wildcard, pos, media, params))
    ranges.sort(key=lambda r: (-r[0], r[1], r[2]))
    return [(m, prm) for _, _, _, m, prm in ranges]


_LEGACY_TYPES = ("application/json", "application/*", "*/*", "application/yaml",
                 "application/vnd.kubernetes.protobuf")


def negotiate(p: VersionProfile, accept: str) -> str | None:
    """The aggregated version (``v2``/``v2beta1``) a request gets, or ``None`` for the legacy answer."""
    if not p.aggregated_discovery:
        return None
    for media, params in _parse_accept(accept):
        if any(k in params for k in ("g", "v", "as")):
            if (media == "application/json" and params.get("g") == AGGREGATED_GROUP
                    and params.get("as") == AGGREGATED_AS and params.get("v") in p.aggregated_discovery):
                return params["v"]
            # protobuf aggregated, an unknown version, or a beta the minor dropped: not acceptable here
            continue
        if media in _LEGACY_TYPES:
            return None
    return None


def aggregated_discovery(p: VersionProfile, accept: str, *, core: bool = False
                         ) -> tuple[dict[str, Any], str] | None:
    """``(body, content_type)`` for ``GET /api`` (``core=True``) or ``GET /apis`` when the request
    accepts an aggregated version this minor serves; ``None`` means answer with legacy JSON."""
    version = negotiate(p, accept)
    if version is None:
        return None
    return aggregated_document(p, version, core=core), aggregated_content_type(version)
