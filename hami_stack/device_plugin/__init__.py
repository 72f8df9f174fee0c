"""HAMi-compatible device plugins (NVIDIA: ``python -m hami_stack.device_plugin.nvidia``).

* :mod:`.options` - flags, env, device config and per-node config, with their precedence.
* :mod:`.nvml` - GPU discovery and Xid health through ``pynvml``.
* :mod:`.server` - the kubelet ``DevicePlugin`` gRPC endpoint and registration.
* :mod:`.allocate` - Allocate / GetPreferredAllocation against the pod annotations and node lock.
* :mod:`.plugin` - :class:`NvidiaDevicePlugin`, the registration loop and health.
* :mod:`.shim` - installs the enforcement shim and ``ld.so.preload`` into the host's hook directory.
"""
