"""Which resource names a device plugin may register: the kubelet's extended-resource rule."""

from __future__ import annotations

import re

_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_QUOTA_PREFIX = "requests."  # the kubelet checks the name as a quota key would be written


def _is_qualified_name(value: str) -> bool:
    parts = value.split("/")
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix or len(prefix) > 253 or not _DNS1123_SUBDOMAIN.match(prefix):
            return False
    else:
        return False
    return 0 < len(name) <= 63 and bool(_QUALIFIED_NAME.match(name))


def is_native_resource(name: str) -> bool:
    # Unprefixed names and anything in the kubernetes.io namespace belong to Kubernetes itself.
    return "/" not in name or "kubernetes.io/" in name


def is_extended_resource_name(name: str) -> bool:
    """The kubelet's ``IsExtendedResourceName``: domain-prefixed, not Kubernetes' own, quota-safe."""
    if is_native_resource(name) or name.startswith(_QUOTA_PREFIX):
        return False
    return _is_qualified_name(_QUOTA_PREFIX + name)
