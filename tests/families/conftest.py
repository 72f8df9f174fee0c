"""In-process family plugins read their devices through the emulated vendor management libraries
(``testbed/hardware/src/famlib_*.c``), as on a node: the libraries are loaded once by path (so the
plugin's ``ctypes.CDLL("<soname>")`` finds them mapped, as if on the loader path) and
``$HAMI_FAMILY_HARDWARE_DIR`` points at the test's hardware directory.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from pathlib import Path

import pytest

from hami_stack.device_plugin.families import mgmt
from hami_stack.device_plugin.families.hardware import STATE_ENV
from testbed.hardware.build import FAMILY_LIBRARIES, ensure_built


@pytest.fixture(scope="session")
def family_library_dir() -> Path:
    libdir = ensure_built()
    # RTLD_LOCAL: a later CDLL("<soname>") still finds the mapped library by its soname, and IXML's
    # NVML-named entry points (libixml.so) must not take over calls inside an emulated libnvidia-ml
    # loaded later in the same test process (a global symbol is bound before the library's own)
    for name in FAMILY_LIBRARIES:
        ctypes.CDLL(str(libdir / name), mode=ctypes.RTLD_LOCAL)
    return libdir


@pytest.fixture
def family_hw(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, family_library_dir: Path) -> Iterator[Path]:
    """The node's family hardware directory (``tmp_path / "hw"``) the vendor libraries read."""
    hw_dir = tmp_path / "hw"
    hw_dir.mkdir(exist_ok=True)
    monkeypatch.setenv(STATE_ENV, str(hw_dir))
    yield hw_dir
    mgmt.open_library.cache_clear()
