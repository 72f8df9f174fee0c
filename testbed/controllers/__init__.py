"""The testbed's kube-controller-manager: workload, node and endpoint controllers over HTTP.

Service accounts and their tokens, the root CA ConfigMap, namespace finalization, garbage
collection and ResourceQuota status run inside the testbed apiserver (``testbed/apiserver/builtin.py``).
"""

from .base import Options
from .manager import CONTROLLERS, ControllerManager

__all__ = ["CONTROLLERS", "ControllerManager", "Options"]
