"""The ctypes mirror of the shared region agrees with the C header, byte for byte."""

from __future__ import annotations

import ctypes
import json
import subprocess

from hami_stack.enforcer import layout_program
from hami_stack.monitor import region


def test_sizes_and_offsets_match_the_c_header() -> None:
    dump = json.loads(
        subprocess.run([str(layout_program())], capture_output=True, text=True, check=True).stdout
    )
    assert dump["vgpu_region_t"] == ctypes.sizeof(region.Region)
    assert dump["vgpu_slot_t"] == ctypes.sizeof(region.Slot)
    assert dump["magic"] == region.MAGIC and dump["major"] == region.MAJOR
    types = {"vgpu_region_t": region.Region, "vgpu_slot_t": region.Slot}
    checked = 0
    for name, (offset, size) in dump["fields"].items():
        tname, fname = name.split(".")
        fld = getattr(types[tname], fname)
        assert (fld.offset, fld.size) == (offset, size), name
        checked += 1
    # every ctypes field is covered by the dump, so nothing is mirrored by accident only
    assert checked == len(region.Region._fields_) + len(region.Slot._fields_)
