"""The extra image catalog ($TESTBED_IMAGE_CATALOG) is parsed once per change of the file, not per lookup."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from testbed.node import images


def _catalog(path: Path, cmd: str) -> None:
    path.write_text(f"images:\n  - match: 'example.com/tool:*'\n    cmd: [{cmd}]\n")


def test_lookups_follow_the_file_and_reuse_its_parse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cat = tmp_path / "catalog.yaml"
    _catalog(cat, "one")
    monkeypatch.setenv("TESTBED_IMAGE_CATALOG", str(cat))
    parses = []
    real = images._parse_file
    monkeypatch.setattr(images, "_parse_file", lambda p: parses.append(p) or real(p))
    first = images.lookup("example.com/tool:1")
    assert first is not None and first.cmd == ("one",)
    assert images.lookup("example.com/tool:2") is first  # same entry object: the file was not parsed again
    assert len(parses) == 1
    _catalog(cat, "twotwo")  # a changed file (size and mtime) is read again
    st = cat.stat()
    os.utime(cat, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    again = images.lookup("example.com/tool:1")
    assert again is not None and again.cmd == ("twotwo",) and len(parses) == 2
    cat.unlink()  # a vanished file is an error again, not a stale answer
    with pytest.raises(OSError):
        images.lookup("example.com/tool:1")
