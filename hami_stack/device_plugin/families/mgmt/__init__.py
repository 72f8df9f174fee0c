"""The vendor management libraries the family plugins read their devices through, as each vendor's own
device plugin does (Cambricon's through CNDev, Moore Threads' through MTML, ...).

One module per vendor, named as the vendor is in ``specs.py`` (``mgmt/<vendor>.py``), binds that
library with ctypes from our own declarations of its C API and exposes:

* ``LIBRARY``: the file name the vendor's runtime puts on the loader path (``libcndev.so``);
* ``devices(lib: ctypes.CDLL) -> list[Device]``: the node's devices as the plugin registers them, raising
  :class:`~hami_stack.device_plugin.families.hardware.HardwareError` with the failing call and its code.

A vendor whose own plugin reads driver files (sysfs) rather than a library sets ``LIBRARY = None`` and
defines ``devices_from_files(state_dir: Path) -> list[Device]`` over the emulated file tree instead.

A vendor without a module (capacity-only families whose plugins count device files) keeps reading the
driver's device files (``hardware.read``). On the testbed the emulated libraries come from
``testbed/hardware/src/famlib_*.c``; on a real node the vendor's own.
"""

from __future__ import annotations

import ctypes
import functools
import importlib
import importlib.util
from types import ModuleType

from ..hardware import HardwareError


def binding(vendor: str) -> ModuleType | None:
    """The vendor's binding module, or None when its plugin reads device files instead."""
    name = f"{__name__}.{vendor}"
    if not vendor.isidentifier() or importlib.util.find_spec(name) is None:
        return None
    return importlib.import_module(name)


@functools.cache
def open_library(name: str) -> ctypes.CDLL:
    """Load a vendor library from the loader path (once per process, as a driver library stays mapped)."""
    try:
        return ctypes.CDLL(name)
    except OSError as e:
        raise HardwareError(
            f"{name}: cannot load the vendor's management library ({e}); its driver runtime must put it on "
            "the plugin container's library path"
        ) from e


def call(lib: ctypes.CDLL, fn: str, *args: object, ok: int = 0) -> None:
    """Call ``fn`` and raise HardwareError naming it and its return code unless it answers ``ok``."""
    rc = getattr(lib, fn)(*args)
    if rc != ok:
        raise HardwareError(f"{lib._name}: {fn} failed with code {rc}")
