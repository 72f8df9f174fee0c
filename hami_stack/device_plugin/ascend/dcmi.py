"""The Ascend driver through its C API, ``libdcmi.so`` (ctypes), as HAMi's Ascend plugin reads it.

Discovery walks cards -> devices in card -> logic ID -> physical ID, then asks each NPU its chip
info (``chip_type`` must be ``Ascend``; ``chip_name`` picks the ``vnpus.configs`` entry), its VDIE die
ID (the UUID: the five 32-bit words in upper-case hex) and its health code (0 = healthy). The
library is found on the loader path (``LD_LIBRARY_PATH``, where the Ascend runtime or the node's
driver install puts it) or at ``$HAMI_DCMI_LIBRARY``.
"""

from __future__ import annotations

import ctypes
import os
import threading
from dataclasses import dataclass

DCMI_OK = 0
VDIE = 1
MAX_CARDS = 64
_lib: ctypes.CDLL | None = None
_lock = threading.Lock()


class DcmiError(Exception):
    """A DCMI call failed; ``code`` is its return value."""

    def __init__(self, call: str, code: int) -> None:
        super().__init__(f"{call} failed with DCMI error {code}")
        self.call, self.code = call, code


class DcmiUnavailable(Exception):
    """libdcmi.so cannot be loaded or initialised: no Ascend driver on this node."""


class _ChipInfo(ctypes.Structure):
    _fields_ = [
        ("chip_type", ctypes.c_ubyte * 32),
        ("chip_name", ctypes.c_ubyte * 32),
        ("chip_ver", ctypes.c_ubyte * 32),
        ("aicore_cnt", ctypes.c_uint),
    ]


class _DieId(ctypes.Structure):
    _fields_ = [("soc_die", ctypes.c_uint * 5)]


class _HbmInfo(ctypes.Structure):
    _fields_ = [
        ("memory_size", ctypes.c_ulonglong),
        ("freq", ctypes.c_uint),
        ("memory_usage", ctypes.c_ulonglong),
        ("temp", ctypes.c_int),
        ("bandwith_util_rate", ctypes.c_uint),
    ]


class _MemInfo(ctypes.Structure):
    _fields_ = [
        ("memory_size", ctypes.c_ulonglong),
        ("memory_available", ctypes.c_ulonglong),
        ("freq", ctypes.c_uint),
        ("hugepagesize", ctypes.c_ulong),
        ("hugepages_total", ctypes.c_ulong),
        ("hugepages_free", ctypes.c_ulong),
        ("utiliza", ctypes.c_uint),
        ("reserve", ctypes.c_ubyte * 60),
    ]


class _VdevRes(ctypes.Structure):
    _fields_ = [
        ("vdev_id", ctypes.c_uint),
        ("vfg_id", ctypes.c_uint),
        ("template_name", ctypes.c_char * 32),
        ("reserved", ctypes.c_ubyte * 64),
    ]


class _VdevOut(ctypes.Structure):
    _fields_ = [
        ("vdev_id", ctypes.c_uint),
        ("pcie_bus", ctypes.c_uint),
        ("pcie_device", ctypes.c_uint),
        ("pcie_func", ctypes.c_uint),
        ("vfg_id", ctypes.c_uint),
        ("reserved", ctypes.c_ubyte * 32),
    ]


@dataclass(frozen=True)
class Npu:
    uuid: str
    logic_id: int
    phy_id: int
    card_id: int
    device_id: int
    chip_type: str
    chip_name: str
    aicore: int
    health: int  # 0 = healthy

    @property
    def healthy(self) -> bool:
        return self.health == 0


def _text(raw: ctypes.Array) -> str:  # type: ignore[type-arg]
    return bytes(raw).split(b"\0", 1)[0].decode(errors="replace")


def _check(call: str, rc: int) -> None:
    if rc != DCMI_OK:
        raise DcmiError(call, rc)


def init() -> None:
    """Load and initialise libdcmi.so once per process (raises :class:`DcmiUnavailable`)."""
    global _lib
    with _lock:
        if _lib is not None:
            return
        name = os.environ.get("HAMI_DCMI_LIBRARY") or "libdcmi.so"
        try:
            lib = ctypes.CDLL(name)
        except OSError as e:
            raise DcmiUnavailable(f"cannot load {name}: {e}") from e
        rc = lib.dcmi_init()
        if rc != DCMI_OK:
            raise DcmiUnavailable(
                f"dcmi_init failed with DCMI error {rc}: no Ascend driver ready on this node"
            )
        _lib = lib


def _l() -> ctypes.CDLL:
    if _lib is None:
        init()
    assert _lib is not None
    return _lib


def npu(card: int, device: int) -> Npu:
    lib = _l()
    logic = ctypes.c_int()
    _check("dcmi_get_device_logic_id", lib.dcmi_get_device_logic_id(ctypes.byref(logic), card, device))
    phy = ctypes.c_uint()
    _check(
        "dcmi_get_device_phyid_from_logicid",
        lib.dcmi_get_device_phyid_from_logicid(logic.value, ctypes.byref(phy)),
    )
    info = _ChipInfo()
    _check("dcmi_get_device_chip_info", lib.dcmi_get_device_chip_info(card, device, ctypes.byref(info)))
    die = _DieId()
    _check("dcmi_get_device_die_v2", lib.dcmi_get_device_die_v2(card, device, VDIE, ctypes.byref(die)))
    health = ctypes.c_uint()
    _check("dcmi_get_device_health", lib.dcmi_get_device_health(card, device, ctypes.byref(health)))
    return Npu(
        uuid="".join(f"{w:08X}" for w in die.soc_die),
        logic_id=logic.value,
        phy_id=phy.value,
        card_id=card,
        device_id=device,
        chip_type=_text(info.chip_type),
        chip_name=_text(info.chip_name),
        aicore=info.aicore_cnt,
        health=health.value,
    )


def discover() -> list[Npu]:
    """Every NPU the library shows, by logic ID."""
    lib = _l()
    n = ctypes.c_int()
    cards = (ctypes.c_int * MAX_CARDS)()
    _check("dcmi_get_card_list", lib.dcmi_get_card_list(ctypes.byref(n), cards, MAX_CARDS))
    out = []
    for card in cards[: n.value]:
        count = ctypes.c_int()
        _check("dcmi_get_device_num_in_card", lib.dcmi_get_device_num_in_card(card, ctypes.byref(count)))
        for dev in range(count.value):
            out.append(npu(card, dev))
    return sorted(out, key=lambda d: d.logic_id)


def memory(card: int, device: int) -> tuple[int, int]:
    """(total, used) MB: HBM where the chip has it, else DDR (310P)."""
    lib = _l()
    hbm = _HbmInfo()
    if lib.dcmi_get_device_hbm_info(card, device, ctypes.byref(hbm)) == DCMI_OK:
        return int(hbm.memory_size), int(hbm.memory_usage)
    info = _MemInfo()
    _check(
        "dcmi_get_device_memory_info_v3", lib.dcmi_get_device_memory_info_v3(card, device, ctypes.byref(info))
    )
    return int(info.memory_size), int(info.memory_size - info.memory_available)


def create_vnpu(card: int, device: int, template: str, vdev_id: int = 0) -> int:
    """Create a vNPU from ``template`` (hard split); returns its vdev ID."""
    res = _VdevRes(vdev_id=vdev_id, vfg_id=0, template_name=template.encode()[:31])
    out = _VdevOut()
    _check(
        "dcmi_create_vdevice", _l().dcmi_create_vdevice(card, device, ctypes.byref(res), ctypes.byref(out))
    )
    return int(out.vdev_id)


def destroy_vnpu(card: int, device: int, vdev_id: int) -> None:
    _check("dcmi_set_destroy_vdevice", _l().dcmi_set_destroy_vdevice(card, device, ctypes.c_uint(vdev_id)))


def reset_for_tests() -> None:
    """Forget the loaded library (tests that switch state directories in one process)."""
    global _lib
    with _lock:
        _lib = None
