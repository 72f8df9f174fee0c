"""HAMi-compatible device plugins (NVIDIA: ``python -m hami_stack.device_plugin.nvidia``).

* :mod:`.options` - flags, env, device config and per-node config, with their precedence.
* :mod:`.nvml` - GPU discovery, the per-GPU health probe and Xid events through ``pynvml``.
* :mod:`.health` - which GPUs are unhealthy (poll and Xid rules, recovery).
* :mod:`.server` - the kubelet ``DevicePlugin`` gRPC endpoint and registration.
* :mod:`.allocate` - Allocate / GetPreferredAllocation, only for the pod holding the node lock.
* :mod:`.plugin` - :class:`NvidiaDevicePlugin`, the registration loop and health.
* :mod:`.shim` - installs the enforcement shim and ``ld.so.preload`` into the host's hook directory.
"""
