"""Node agents for emulated nodes: inventory, node status and lease, kubelet API, pod runtime.

The names below load on first use: the API server imports single modules of this package (the
kubelet proxy, ephemeral containers) and should not pay for the agent and its Kubernetes client."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from testbed.node.agent import AgentOptions, NodeAgent, NodeAgents
    from testbed.node.inventory import InventoryError, NodeSpec, load_inventory, parse_inventory

_WHERE = {
    "AgentOptions": "agent",
    "NodeAgent": "agent",
    "NodeAgents": "agent",
    "InventoryError": "inventory",
    "NodeSpec": "inventory",
    "load_inventory": "inventory",
    "parse_inventory": "inventory",
}

__all__ = [
    "AgentOptions",
    "InventoryError",
    "NodeAgent",
    "NodeAgents",
    "NodeSpec",
    "load_inventory",
    "parse_inventory",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
