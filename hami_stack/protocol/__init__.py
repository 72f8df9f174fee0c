"""HAMi's wire protocol in one place: names, keys, codecs and message shapes.

Modules (each documents its rules):

* :mod:`.resources` - extended-resource names per vendor family (defaults; the device config overrides).
* :mod:`.annotations` - node/pod annotation keys per family, and which pod keys only HAMi may write.
* :mod:`.register` - node register annotation (JSON and legacy CSV) and the NVIDIA topology scores.
* :mod:`.assignment` - per-vendor pod assignment values (init containers first, empty slots kept).
* :mod:`.nodelock` - ``hami.io/mutex.lock``: value format, 5-minute expiry, re-entrancy, dangling holder.
* :mod:`.handshake` - ``Requesting_/Reported_/Deleted_`` values and the 60 s health rule.
* :mod:`.events` - bind phases, fit reasons, event reasons and message shapes.
* :mod:`.policy` - node/GPU policies and device-scoring weights.
* :mod:`.quantity` - exact integer value of a resource quantity (``AsInt64`` semantics).
* :mod:`.hamicore` - Allocate's env names for HAMi-core and the per-container host directory name.

Every decoder returns a whole value or raises :class:`ProtocolError` - never a partial one.
Nothing here does I/O; callers (scheduler, device plugin, webhook) apply the results.
"""

from .assignment import (
    ContainerDevice,
    ContainerDevices,
    PodDevices,
    decode_container_devices,
    decode_pod_devices,
    encode_container_devices,
    encode_pod_devices,
    pop_first_nonempty,
)
from .errors import ProtocolError
from .quantity import quantity_int
from .register import (
    DeviceInfo,
    decode_register,
    decode_register_csv,
    decode_register_json,
    encode_register_csv,
    encode_register_json,
)

__all__ = [
    "ContainerDevice",
    "ContainerDevices",
    "DeviceInfo",
    "PodDevices",
    "ProtocolError",
    "decode_container_devices",
    "decode_pod_devices",
    "decode_register",
    "decode_register_csv",
    "decode_register_json",
    "encode_container_devices",
    "encode_pod_devices",
    "encode_register_csv",
    "encode_register_json",
    "pop_first_nonempty",
    "quantity_int",
]
