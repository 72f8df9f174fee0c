"""Profiles: data naming what each vendor x Kubernetes minor must pass, versioned.

``load_profile("nvidia")`` reads ``conformance/profiles/nvidia.yaml``; a path to a YAML file works
too. ``profile.requirement(rule_id, minor)`` answers required / optional / not-applicable.

Schema (``hami-conformance/profile/v1``)::

    name, version, vendor, minors: [first, last], default: required|optional|not-applicable,
    rules: {RULE-ID: requirement}, overrides: [{minors: [first, last], rules: {RULE-ID: requirement}}]
    extends: <profile name>   (optional: start from that profile's rules, minors and default)

A rule key may be a pattern with ``*`` (``ENF-*``): it applies to every rule it matches that has no
exact entry, which is how a narrower profile marks whole capabilities not-applicable without
listing (and falling behind) each rule. The rules a profile *requires* are its exact entries that
resolve to ``required`` for the minor: a certification checks each of them ran.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

API_VERSION = "hami-conformance/profile/v1"
REQUIREMENTS = ("required", "optional", "not-applicable")
HERE = Path(__file__).parent


class ProfileError(ValueError):
    """A profile that cannot be found or does not follow the schema."""


def _minor(value: Any, where: str) -> tuple[int, int]:
    text = str(value)
    parts = text.split(".")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise ProfileError(f'{where}: "{text}" is not a Kubernetes minor like "1.33"')
    return int(parts[0]), int(parts[1])


def _range(value: Any, where: str) -> tuple[tuple[int, int], tuple[int, int]]:
    if not isinstance(value, list) or len(value) != 2:
        raise ProfileError(f"{where}: must be [first, last]")
    lo, hi = _minor(value[0], f"{where}[0]"), _minor(value[1], f"{where}[1]")
    if lo > hi:
        raise ProfileError(f"{where}: first {value[0]} is after last {value[1]}")
    return lo, hi


def _rules(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ProfileError(f"{where}: must be a mapping of rule id to requirement")
    for k, v in value.items():
        if v not in REQUIREMENTS:
            raise ProfileError(f'{where}.{k}: "{v}" is not one of {", ".join(REQUIREMENTS)}')
    return {str(k): str(v) for k, v in value.items()}


@dataclass
class Profile:
    name: str
    version: str
    vendor: str
    minors: tuple[tuple[int, int], tuple[int, int]]
    default: str = "required"
    rules: dict[str, str] = field(default_factory=dict)
    overrides: list[tuple[tuple[tuple[int, int], tuple[int, int]], dict[str, str]]] = field(
        default_factory=list
    )
    source: str = ""

    def covers(self, minor: str) -> bool:
        m = _minor(minor, "minor")
        return self.minors[0] <= m <= self.minors[1]

    def requirement(self, rule_id: str, minor: str) -> str:
        m = _minor(minor, "minor")
        if not self.covers(minor):
            return "not-applicable"
        req = _lookup(self.rules, rule_id, self.default)
        for (lo, hi), rules in self.overrides:
            if lo <= m <= hi:
                req = _lookup(rules, rule_id, req)
        return req

    def listed_rules(self) -> list[str]:
        """Every exact rule id the profile (and its overrides) names."""
        ids = set(self.rules)
        for _, rules in self.overrides:
            ids |= set(rules)
        return sorted(r for r in ids if "*" not in r)

    def required_rules(self, minor: str) -> list[str]:
        """The rules a certification of ``minor`` must see run and pass."""
        return [r for r in self.listed_rules() if self.requirement(r, minor) == "required"]

    def minor_list(self) -> list[str]:
        (ma, lo), (_, hi) = self.minors
        return [f"{ma}.{n}" for n in range(lo, hi + 1)]


def _lookup(rules: dict[str, str], rule_id: str, fallback: str) -> str:
    """The exact entry, else the longest matching pattern, else ``fallback``."""
    if rule_id in rules:
        return rules[rule_id]
    patterns = [k for k in rules if "*" in k and fnmatch.fnmatchcase(rule_id, k)]
    return rules[max(patterns, key=len)] if patterns else fallback


def available() -> list[str]:
    return sorted(p.stem for p in HERE.glob("*.yaml"))


def load_profile(name_or_path: str, _seen: tuple[str, ...] = ()) -> Profile:
    path = Path(name_or_path)
    if not (path.suffix in (".yaml", ".yml") and path.is_file()):
        path = HERE / f"{name_or_path}.yaml"
        if not path.is_file():
            raise ProfileError(
                f'unknown profile "{name_or_path}": known profiles: {", ".join(available())} '
                "(or a path to a profile YAML file)"
            )
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ProfileError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ProfileError(f"{path}: must be a mapping")
    if raw.get("apiVersion") != API_VERSION:
        raise ProfileError(f'{path}: apiVersion: must be "{API_VERSION}", got {raw.get("apiVersion")!r}')
    base: Profile | None = None
    if raw.get("extends") is not None:
        parent = raw["extends"]
        if not isinstance(parent, str) or not parent or "/" in parent:
            raise ProfileError(f"{path}: extends: must name a profile in {HERE}")
        if parent in _seen or parent == raw.get("name"):
            raise ProfileError(f"{path}: extends: {parent} extends itself")
        base = load_profile(parent, (*_seen, str(raw.get("name"))))
        raw = {"vendor": base.vendor, "minors": [_text(base.minors[0]), _text(base.minors[1])],
               "default": base.default, **raw}
    for key in ("name", "version", "vendor"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise ProfileError(f"{path}: {key}: required string")
    default = raw.get("default", "required")
    if default not in REQUIREMENTS:
        raise ProfileError(f'{path}: default: "{default}" is not one of {", ".join(REQUIREMENTS)}')
    overrides = []
    for i, o in enumerate(raw.get("overrides") or []):
        if not isinstance(o, dict):
            raise ProfileError(f"{path}: overrides[{i}]: must be a mapping")
        overrides.append(
            (
                _range(o.get("minors"), f"overrides[{i}].minors"),
                _rules(o.get("rules"), f"overrides[{i}].rules"),
            )
        )
    rules = _rules(raw.get("rules"), f"{path}: rules")
    if base is not None:
        # the child's patterns win over the base's exact entries they match (ENF-* not-applicable
        # must reach ENF-MEM-1 even though the base lists it as required)
        patterns = [k for k in rules if "*" in k]

        def keep(rule_id: str) -> bool:
            return not any(fnmatch.fnmatchcase(rule_id, pat) for pat in patterns)

        rules = {**{k: v for k, v in base.rules.items() if keep(k)}, **rules}
        inherited = [(rng, {k: v for k, v in r.items() if keep(k)}) for rng, r in base.overrides]
        overrides = [*inherited, *overrides]
    version = str(raw["version"])
    if base is not None:
        # the base's requirements are part of this profile's: its version travels with ours
        version = f"{version}+{base.name}.{base.version}"
    return Profile(
        name=raw["name"],
        version=version,
        vendor=raw["vendor"],
        minors=_range(raw.get("minors"), f"{path}: minors"),
        default=default,
        rules=rules,
        overrides=overrides,
        source=str(path),
    )


def _text(minor: tuple[int, int]) -> str:
    return f"{minor[0]}.{minor[1]}"
