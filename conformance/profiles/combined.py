"""One profile for a cell that runs several vendors' suites (``--vendor nvidia,ascend``).

Each rule keeps the requirement its own vendor's profile gives it (the collection hook passes the
case's vendor); a certification requires every rule any of the profiles requires. Its name joins the
profiles' names with ``+`` and its version their ``name.version`` pairs, so two bundles of different
profile versions never merge as one.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import Profile


@dataclass
class CombinedProfile:
    parts: list[Profile]

    @property
    def name(self) -> str:
        return "+".join(p.name for p in self.parts)

    @property
    def version(self) -> str:
        return "+".join(f"{p.name}.{p.version}" for p in self.parts)

    @property
    def vendor(self) -> str:
        return ",".join(p.vendor for p in self.parts)

    def covers(self, minor: str) -> bool:
        return all(p.covers(minor) for p in self.parts)

    def requirement(self, rule_id: str, minor: str, vendor: str | None = None) -> str:
        """The requirement in ``vendor``'s profile; without a vendor, the strictest of all."""
        mine = [p for p in self.parts if p.vendor == vendor]
        if mine:
            return mine[0].requirement(rule_id, minor)
        order = ("not-applicable", "optional", "required")
        return max((p.requirement(rule_id, minor) for p in self.parts), key=order.index)

    def listed_rules(self) -> list[str]:
        return sorted({r for p in self.parts for r in p.listed_rules()})

    def required_rules(self, minor: str) -> list[str]:
        return sorted({r for p in self.parts for r in p.required_rules(minor)})
