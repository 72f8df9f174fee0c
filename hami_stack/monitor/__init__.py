"""Node-side vGPU monitor: reads every container's shared region and serves the ``hami_*`` metrics."""

from hami_stack.monitor.collector import VGPUCollector, pods_file_resolver, scan
from hami_stack.monitor.region import RegionError, RegionSnapshot, read_region
from hami_stack.monitor.server import serve

__all__ = [
    "RegionError", "RegionSnapshot", "VGPUCollector", "pods_file_resolver", "read_region", "scan", "serve",
]
