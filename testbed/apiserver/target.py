"""What a storage operation is about: the resource type, the version the client spoke, and the object."""

from __future__ import annotations

from dataclasses import dataclass

from .resources import ResourceType


@dataclass(frozen=True)
class Target:
    rtype: ResourceType
    version: str
    namespace: str = ""
    name: str = ""
    subresource: str = ""

    @property
    def group(self) -> str:
        return self.rtype.group

    @property
    def kind(self) -> str:
        return self.rtype.kind

    @property
    def api_version(self) -> str:
        return f"{self.rtype.group}/{self.version}" if self.rtype.group else self.version

    def named(self, name: str) -> Target:
        return Target(self.rtype, self.version, self.namespace, name, self.subresource)
