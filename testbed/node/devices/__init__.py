"""The kubelet's device-plugin manager for testbed nodes (device plugin API v1beta1)."""

from testbed.node.devices.manager import AdmissionError, AllocatedDevices, DevicePluginManager

__all__ = ["AdmissionError", "AllocatedDevices", "DevicePluginManager"]
