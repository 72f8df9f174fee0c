"""ssh's multiplexing sockets of a lab live in a short private directory: a lab state under a deep
path (pytest's tmp dirs under xdist) made ssh fail with "too long for Unix domain socket"."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from conformance.backends.lab import LabRunError, control_dir

# ssh's temporary socket name: <ControlPath %C, 10 chars here>.<16 random chars>
SOCKET_NAME = "0123456789.abcdefghijklmnop"


def test_a_deep_state_gets_a_short_private_socket_dir(tmp_path: Path) -> None:
    deep = tmp_path.joinpath(*["a-rather-long-directory-name"] * 6, "state")
    d = control_dir(deep)
    assert len(str(d / SOCKET_NAME).encode()) < 108
    assert d.stat().st_mode & 0o777 == 0o700 and d.parent.stat().st_mode & 0o777 == 0o700
    assert control_dir(deep) == d and control_dir(tmp_path / "other") != d


def test_a_shared_socket_dir_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    base = tmp_path / f"hcl-cp-{os.getuid()}"
    base.mkdir(mode=0o700)
    base.chmod(0o777)  # another local user could plant or take over sockets here
    with pytest.raises(LabRunError, match="mode 0700"):
        control_dir(tmp_path / "state")


def test_a_corrupt_facts_file_is_a_lab_error_naming_it(tmp_path: Path) -> None:
    # certify's verdict reads the fetched bundle and the run's gathered facts: a damaged facts file
    # is a clear error (exit 5 through the CLI), not a traceback
    from conformance.backends.lab import _verdict

    bundle = tmp_path / "run" / "cell" / "bundle"
    bundle.mkdir(parents=True)
    (bundle / "results.json").write_text('{"verdict": "PASSED"}')
    (bundle / "environment.json").write_text('{"extra": {"labHosts": {"node1": {}}}}')
    facts = tmp_path / "run" / "lab-facts.json"
    facts.write_text('{"node1": {"ansible_kernel": "6.1"}}')
    assert _verdict(bundle) == "PASSED"
    facts.write_text('{"node1": ')
    with pytest.raises(LabRunError, match=r"lab-facts.json: not readable JSON"):
        _verdict(bundle)
    facts.write_text("[]")
    with pytest.raises(LabRunError, match=r"want a JSON object of host facts, got list"):
        _verdict(bundle)
