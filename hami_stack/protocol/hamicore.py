"""The device plugin's contract with HAMi-core (``libvgpu.so``) and the node monitor.

Allocate hands HAMi-core its limits through container environment variables, and gives each
container a host directory ``<hook>/vgpu/containers/<podUID>_<container>`` that holds the shared
region file the monitor later reads. Both sides take the names from here.
"""

from __future__ import annotations

from typing import Final

MEMORY_LIMIT_ENV_PREFIX: Final = "CUDA_DEVICE_MEMORY_LIMIT_"  # + device index; value "<MiB>m"
SM_LIMIT_ENV: Final = "CUDA_DEVICE_SM_LIMIT"
SHARED_CACHE_ENV: Final = "CUDA_DEVICE_MEMORY_SHARED_CACHE"
OVERSUBSCRIBE_ENV: Final = "CUDA_OVERSUBSCRIBE"
LOG_LEVEL_ENV: Final = "LIBCUDA_LOG_LEVEL"
CORE_UTILIZATION_POLICY_ENV: Final = "GPU_CORE_UTILIZATION_POLICY"
TASK_PRIORITY_ENV: Final = "CUDA_TASK_PRIORITY"
DISABLE_CONTROL_ENV: Final = "CUDA_DISABLE_CONTROL"  # "true" in the pod spec: no ld.so.preload mount


def memory_limit_env(index: int) -> str:
    return f"{MEMORY_LIMIT_ENV_PREFIX}{index}"


def container_dir_name(pod_uid: str, container: str) -> str:
    return f"{pod_uid}_{container}"


def split_container_dir_name(name: str) -> tuple[str, str] | None:
    """``<podUID>_<container>``: a pod UID never holds '_', a container name may not either."""
    uid, sep, ctr = name.partition("_")
    return (uid, ctr) if sep and uid and ctr else None
