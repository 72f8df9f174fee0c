"""Pod IPs are unique on the host: allocators share a flock-protected registry of /24 block leases."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from testbed.node.podips import PodIPAllocator


def test_two_allocators_never_hand_out_the_same_address(tmp_path: Path) -> None:
    reg = tmp_path / "leases.json"
    a, b = PodIPAllocator(reg), PodIPAllocator(reg)
    try:
        ips_a = [a.allocate() for _ in range(300)]  # more than one block
        ips_b = [b.allocate() for _ in range(300)]
        assert len(set(ips_a)) == len(ips_a) == 300 and len(set(ips_b)) == 300
        assert not set(ips_a) & set(ips_b)
        assert not set(a.leased_blocks()) & set(b.leased_blocks())
        for ip in ips_a + ips_b:
            o = [int(x) for x in ip.split(".")]
            assert o[0] == 127 and 64 <= o[1] < 128 and 1 <= o[3] <= 254, ip
        leases = json.loads(reg.read_text())["blocks"]
        assert {int(k) for k in leases} == set(a.leased_blocks()) | set(b.leased_blocks())
    finally:
        a.close()
        b.close()
    assert json.loads(reg.read_text())["blocks"] == {}


def test_released_addresses_are_reused_before_a_new_block(tmp_path: Path) -> None:
    a = PodIPAllocator(tmp_path / "leases.json")
    first = [a.allocate() for _ in range(254)]
    a.release(first[10])
    assert a.allocate() == first[10]
    assert len(a.leased_blocks()) == 1
    a.close()


def test_leases_of_a_dead_process_are_reclaimed(tmp_path: Path) -> None:
    reg = tmp_path / "leases.json"
    code = (
        "import sys; from testbed.node.podips import PodIPAllocator; "
        "print(PodIPAllocator(sys.argv[1]).allocate())"
    )
    out = subprocess.run([sys.executable, "-c", code, str(reg)], capture_output=True, text=True, check=True)
    dead_ip = out.stdout.strip()
    assert len(json.loads(reg.read_text())["blocks"]) == 1  # the exited process never gave it back
    a = PodIPAllocator(reg)
    try:
        assert a.allocate() == dead_ip  # its block was free again
        assert [v["owner"] for v in json.loads(reg.read_text())["blocks"].values()] == [a.owner]
    finally:
        a.close()


def test_a_corrupt_registry_does_not_wedge_allocation(tmp_path: Path) -> None:
    reg = tmp_path / "leases.json"
    reg.write_text("{not json")
    a = PodIPAllocator(reg)
    assert a.allocate().startswith("127.64.0.")
    a.close()


def test_the_host_registry_ignores_tmpdir(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Two runs with different TMPDIRs on one host must share one registry, or they share pod IPs."""
    from testbed.node.podips import ENV, HOST_REGISTRY, default_registry

    monkeypatch.delenv(ENV, raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR, as a fresh process would
    assert tempfile.gettempdir() == str(tmp_path)
    assert default_registry() == Path(HOST_REGISTRY)
    monkeypatch.setenv(ENV, str(tmp_path / "mine.json"))
    assert default_registry() == tmp_path / "mine.json"
