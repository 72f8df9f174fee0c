"""The probe (a workload: it must not import the stack) restates the DCMI structures the Ascend plugin
binds; this cross-check keeps the two statements of the C ABI identical."""

from __future__ import annotations

import ctypes

import pytest

from conformance.probe import dcmi as probe
from hami_stack.device_plugin.ascend import dcmi as plugin


def _layout(struct: type[ctypes.Structure]) -> list[tuple[str, str, int, int]]:
    return [(name, ctype.__name__, getattr(struct, name).offset, ctypes.sizeof(ctype))
            for name, ctype in struct._fields_]


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [("_ChipInfo", "_ChipInfo"), ("_DieId", "_DieId"), ("_Hbm", "_HbmInfo"), ("_Mem", "_MemInfo")],
)
def test_probe_and_plugin_declare_the_same_dcmi_structures(ours: str, theirs: str) -> None:
    a, b = getattr(probe, ours), getattr(plugin, theirs)
    assert _layout(a) == _layout(b)
    assert ctypes.sizeof(a) == ctypes.sizeof(b)
