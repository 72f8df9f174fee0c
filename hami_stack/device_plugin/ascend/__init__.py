"""HAMi-compatible Ascend device plugin (``python -m hami_stack.device_plugin.ascend``).

* :mod:`.dcmi` - the Ascend driver's C API (``libdcmi.so``) through ctypes.
* :mod:`.plugin` - discovery, kubelet endpoint, node registration, Allocate and health.
"""
