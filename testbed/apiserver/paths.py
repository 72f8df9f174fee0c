"""Parse Kubernetes API request paths into request attributes, as the real RequestInfoResolver does."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import APIError
from .resources import ResourceType
from .versions import VersionProfile


@dataclass
class RequestInfo:
    resource_request: bool
    path: str
    verb: str  # get list watch create update patch delete deletecollection (or http verb lowercased)
    group: str = ""
    version: str = ""
    plural: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    rtype: ResourceType | None = None

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


_HTTP_VERB = {
    "POST": "create",
    "PUT": "update",
    "PATCH": "patch",
    "GET": "get",
    "HEAD": "get",
    "DELETE": "delete",
}


def not_found_path() -> APIError:
    # kube-apiserver answers a path of no served resource with an empty `details` object (seen on
    # real 1.18-1.21 and 1.35: the fidelity corpus' CronJob and PodDisruptionBudget cases of 1.18-1.20)
    return APIError(404, "NotFound", "the server could not find the requested resource", details={})


def parse(method: str, path: str, query: dict[str, str], profile: VersionProfile) -> RequestInfo:
    parts = [p for p in path.split("/") if p]
    if not parts or parts[0] not in ("api", "apis"):
        return RequestInfo(False, path, method.lower())
    if parts[0] == "api":
        if len(parts) < 2:
            return RequestInfo(False, path, method.lower())
        group, version, rest = "", parts[1], parts[2:]
    else:
        if len(parts) < 3:
            return RequestInfo(False, path, method.lower())
        group, version, rest = parts[1], parts[2], parts[3:]
    if not rest:
        return RequestInfo(False, path, method.lower(), group=group, version=version)
    if not profile.serves(group, version):
        raise not_found_path()

    watch = False
    if rest[0] == "watch":
        watch = True
        rest = rest[1:]
        if not rest:
            raise not_found_path()

    namespace = ""
    if rest[0] == "namespaces" and len(rest) >= 3:
        candidate = rest[2]
        rt = profile.resource(group, version, candidate)
        if rt is not None and rt.namespaced:
            namespace = rest[1]
            rest = rest[2:]
    plural = rest[0]
    rt = profile.resource(group, version, plural)
    if rt is None:
        raise not_found_path()
    name = rest[1] if len(rest) > 1 else ""
    sub = rest[2] if len(rest) > 2 else ""
    if len(rest) > 3 and not (sub == "proxy"):
        raise not_found_path()
    if plural == "namespaces" and name and not namespace:
        namespace = name  # RBAC sees namespace objects as living in their own namespace
    if sub and sub not in rt.subresources:
        raise not_found_path()

    verb = _HTTP_VERB.get(method, method.lower())
    if method in ("GET", "HEAD"):
        if not name:
            verb = "watch" if watch or query.get("watch") in ("1", "true", "True") else "list"
        elif watch or query.get("watch") in ("1", "true", "True"):
            verb = "watch"
    elif method == "DELETE" and not name:
        verb = "deletecollection"
    return RequestInfo(True, path, verb, group, version, plural, sub, namespace, name, rt)
