"""What an Ascend container sees through the driver's DCMI C API (``libdcmi.so``), for the probe.

Per visible NPU: logic and physical ID, the VDIE die ID (the UUID HAMi registers, upper-case hex),
chip name, AI cores, health code and memory total/used in MB (HBM, or DDR on 310P). The same code
reads a real Ascend driver or the testbed's emulated one; errors are returned, not raised.
"""

from __future__ import annotations

import ctypes
import os
from typing import Any


class _ChipInfo(ctypes.Structure):
    _fields_ = [
        ("chip_type", ctypes.c_ubyte * 32),
        ("chip_name", ctypes.c_ubyte * 32),
        ("chip_ver", ctypes.c_ubyte * 32),
        ("aicore_cnt", ctypes.c_uint),
    ]


class _DieId(ctypes.Structure):
    _fields_ = [("soc_die", ctypes.c_uint * 5)]


class _Hbm(ctypes.Structure):
    _fields_ = [
        ("memory_size", ctypes.c_ulonglong),
        ("freq", ctypes.c_uint),
        ("memory_usage", ctypes.c_ulonglong),
        ("temp", ctypes.c_int),
        ("bandwith_util_rate", ctypes.c_uint),
    ]


class _Mem(ctypes.Structure):
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


def _text(raw: Any) -> str:
    return bytes(raw).split(b"\0", 1)[0].decode(errors="replace")


def inventory() -> dict[str, Any]:
    try:
        lib = ctypes.CDLL(os.environ.get("HAMI_DCMI_LIBRARY") or "libdcmi.so")
    except OSError as e:
        return {"error": f"cannot load libdcmi.so: {e}"}
    rc = lib.dcmi_init()
    if rc != 0:
        return {"error": f"dcmi_init: {rc}"}
    n = ctypes.c_int()
    cards = (ctypes.c_int * 64)()
    rc = lib.dcmi_get_card_list(ctypes.byref(n), cards, 64)
    if rc != 0:
        return {"error": f"dcmi_get_card_list: {rc}"}
    devices = []
    for card in cards[: n.value]:
        count = ctypes.c_int()
        if lib.dcmi_get_device_num_in_card(card, ctypes.byref(count)) != 0:
            continue
        for dev in range(count.value):
            logic, phy, health = ctypes.c_int(), ctypes.c_uint(), ctypes.c_uint()
            info, die, hbm, mem = _ChipInfo(), _DieId(), _Hbm(), _Mem()
            lib.dcmi_get_device_logic_id(ctypes.byref(logic), card, dev)
            lib.dcmi_get_device_phyid_from_logicid(logic.value, ctypes.byref(phy))
            lib.dcmi_get_device_chip_info(card, dev, ctypes.byref(info))
            lib.dcmi_get_device_die_v2(card, dev, 1, ctypes.byref(die))
            lib.dcmi_get_device_health(card, dev, ctypes.byref(health))
            if lib.dcmi_get_device_hbm_info(card, dev, ctypes.byref(hbm)) == 0:
                total, used = int(hbm.memory_size), int(hbm.memory_usage)
            elif lib.dcmi_get_device_memory_info_v3(card, dev, ctypes.byref(mem)) == 0:
                total, used = int(mem.memory_size), int(mem.memory_size - mem.memory_available)
            else:
                total = used = -1
            devices.append(
                {
                    "logic_id": logic.value,
                    "phy_id": phy.value,
                    "card_id": card,
                    "device_id": dev,
                    "uuid": "".join(f"{w:08X}" for w in die.soc_die),
                    "chip_name": _text(info.chip_name),
                    "aicore": info.aicore_cnt,
                    "health": health.value,
                    "memory_total_mib": total,
                    "memory_used_mib": used,
                }
            )
    return {"devices": sorted(devices, key=lambda d: d["logic_id"])}
