"""Facts of the kubelet device-plugin API that both sides of the wire share."""

from __future__ import annotations

API_VERSION = "v1beta1"  # the only device-plugin API version kubelets 1.18-1.33 accept
HEALTHY = "Healthy"
UNHEALTHY = "Unhealthy"
DEVICE_PLUGINS_DIR = "/var/lib/kubelet/device-plugins"
KUBELET_SOCKET = "kubelet.sock"  # the Registration service, inside DEVICE_PLUGINS_DIR
POD_RESOURCES_SOCKET = "/var/lib/kubelet/pod-resources/kubelet.sock"
