"""Fixtures of the report tests: a written run directory and signing key pairs."""

from __future__ import annotations

from pathlib import Path

import pytest

from reports import attest
from tests.reports.helpers import write_run


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    d = tmp_path / "run"
    write_run(d)
    return d


@pytest.fixture(scope="session")
def keypair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return attest.keygen(tmp_path_factory.mktemp("keys") / "ed25519.pem")


@pytest.fixture(scope="session")
def other_keypair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return attest.keygen(tmp_path_factory.mktemp("otherkeys") / "other.pem")
