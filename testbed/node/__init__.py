"""Node agents for emulated nodes: inventory, node status and lease, kubelet API, pod runtime."""

from testbed.node.agent import AgentOptions, NodeAgent, NodeAgents
from testbed.node.inventory import InventoryError, NodeSpec, load_inventory, parse_inventory

__all__ = [
    "AgentOptions",
    "InventoryError",
    "NodeAgent",
    "NodeAgents",
    "NodeSpec",
    "load_inventory",
    "parse_inventory",
]
