"""Files allure-pytest does not write itself: ``environment.properties`` and ``categories.json``.

The plugin calls these once per session with its ``--alluredir``. Unknown cases ("could not
apply") must stay visibly apart from both passes and defects, so the plugin reports them with
Allure status ``unknown`` (or ``skipped``) and a message starting with ``UNKNOWN_PREFIX``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reports.model import Environment, RunMetadata

UNKNOWN_PREFIX = "could not apply:"
RULE_MESSAGE = r"(?s).*\b[A-Z][A-Z0-9]*(-[A-Z0-9]+)+\b.*"

CATEGORIES: list[dict[str, Any]] = [
    # Allure assigns a result to the first category that matches, so the specific ones come first.
    {
        "name": "Unknown (could not apply)",
        "matchedStatuses": ["unknown", "skipped"],
        "messageRegex": r"(?s)^\s*" + UNKNOWN_PREFIX.replace(" ", r"\s") + r".*",
    },
    {"name": "Contract rule violated", "matchedStatuses": ["failed"], "messageRegex": RULE_MESSAGE},
    {"name": "Product defects", "matchedStatuses": ["failed"]},
    {"name": "Harness or cluster errors", "matchedStatuses": ["broken"]},
    {"name": "Not in profile (skipped)", "matchedStatuses": ["skipped"]},
]


def _escape(text: str, *, key: bool) -> str:
    """Java properties escaping: backslash, line breaks, and the separators in keys."""
    out = text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
    if key:
        out = out.replace("=", "\\=").replace(":", "\\:").replace(" ", "\\ ")
    elif out.startswith(" "):
        out = "\\" + out
    return "".join(ch if ord(ch) < 0x7F else f"\\u{ord(ch):04x}" for ch in out)


def environment_properties(
    env: Environment | Mapping[str, Any], metadata: RunMetadata | None = None
) -> dict[str, str]:
    if not isinstance(env, Environment):
        return {str(k): str(v) for k, v in env.items()}
    props: dict[str, str] = {}
    if metadata is not None:
        props.update(
            {
                "run.id": metadata.run_id,
                "project.commit": metadata.project_commit,
                "tool.version": metadata.tool_version,
                "cluster.backend": metadata.backend,
                "hami.namespace": metadata.hami_namespace,
            }
        )
        if metadata.profile:
            props["profile"] = f"{metadata.profile} {metadata.profile_version}".strip()
    if env.server_version.get("gitVersion"):
        props["kubernetes.server"] = str(env.server_version["gitVersion"])
    props["nodes"] = str(len(env.nodes))
    kubelets = sorted(set(env.kubelet_versions.values()))
    if kubelets:
        props["kubelet.versions"] = ", ".join(kubelets)
    for vendor, n in sorted(Counter(d.vendor for d in env.devices).items()):
        types = sorted({d.type for d in env.devices if d.vendor == vendor and d.type})
        props[f"devices.{vendor}"] = f"{n}" + (f" ({', '.join(types)})" if types else "")
    for vendor in sorted({d.vendor for d in env.drivers}):
        props[f"driver.{vendor}"] = ", ".join(sorted({d.version for d in env.drivers if d.vendor == vendor}))
    return props


def write_environment(
    directory: Path, env: Environment | Mapping[str, Any], metadata: RunMetadata | None = None
) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    props = environment_properties(env, metadata)
    text = "".join(f"{_escape(k, key=True)}={_escape(v, key=False)}\n" for k, v in props.items())
    path = directory / "environment.properties"
    path.write_text(text, encoding="ascii")
    return path


def write_categories(directory: Path) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "categories.json"
    path.write_text(json.dumps(CATEGORIES, indent=2) + "\n", encoding="utf-8")
    return path
