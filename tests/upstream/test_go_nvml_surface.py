"""The emulated libnvidia-ml.so.1 resolves every NVML function go-nvml binds (upstream HAMi's device
plugin and vGPU monitor load NVML through it), without shadowing the variants go-nvml chooses by probe.

The name lists in ``data/`` are facts read from go-nvml v0.13.3-1 (upstream HAMi v2.10.0's version).
"""

from __future__ import annotations

import ctypes
import re
import subprocess
from pathlib import Path

from testbed.hardware.build import SRC, ensure_built

DATA = Path(__file__).parent / "data"


def _names(file: str) -> set[str]:
    return {
        ln.strip() for ln in (DATA / file).read_text().splitlines() if ln.strip() and not ln.startswith("#")
    }


def _exported(lib: Path) -> set[str]:
    out = subprocess.run(["nm", "-D", "--defined-only", str(lib)], capture_output=True, text=True, check=True)
    return {p[2] for p in (ln.split() for ln in out.stdout.splitlines()) if len(p) == 3}


def test_every_go_nvml_function_resolves() -> None:
    bound = _names("go_nvml_v0.13.3-1_symbols.txt")
    assert len(bound) > 400  # the whole binding, not a sample
    exported = _exported(Path(ensure_built()) / "libnvidia-ml.so.1")
    probed = _names("go_nvml_v0.13.3-1_probed.txt")
    # a probed versioned name we do not implement stays absent, so go-nvml falls back to the older
    # variant we do implement; everything else must resolve
    missing = sorted(bound - exported - probed)
    assert missing == [], f"libnvidia-ml.so.1 lacks {len(missing)} functions go-nvml binds: {missing}"


def test_go_nvml_stubs_refuse_and_shadow_no_probed_variant() -> None:
    stubs = re.findall(r"^X\((\w+)\)$", (SRC / "nvml_gonvml_unsupported_list.h").read_text(), flags=re.M)
    assert "nvmlDeviceGetGpuFabricInfo" in stubs and "nvmlDeviceGetAddressingMode" in stubs
    assert not set(stubs) & _names("go_nvml_v0.13.3-1_probed.txt")
    nv = ctypes.CDLL(str(Path(ensure_built()) / "libnvidia-ml.so.1"))
    assert {getattr(nv, n)() for n in stubs} == {3}  # NVML_ERROR_NOT_SUPPORTED
