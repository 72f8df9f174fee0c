"""Fixtures shared by the project's own tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from testbed.embedded import EmbeddedTestbed


@pytest.fixture(scope="module")
def testbed() -> Iterator[EmbeddedTestbed]:
    """A live testbed apiserver (Kubernetes 1.33 profile) shared by one test module."""
    with EmbeddedTestbed(33, bookmark_interval=0.5, history=2000) as tb:
        yield tb


@pytest.fixture(scope="module")
def api(testbed: EmbeddedTestbed):  # type: ignore[no-untyped-def]
    return testbed.api_client()


@pytest.fixture(scope="module")
def core(api):  # type: ignore[no-untyped-def]
    from kubernetes import client

    return client.CoreV1Api(api)


_counter = iter(range(1_000_000))


@pytest.fixture
def ns(core) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A fresh namespace per test."""
    name = f"t{next(_counter)}"
    core.create_namespace({"metadata": {"name": name}})
    yield name
