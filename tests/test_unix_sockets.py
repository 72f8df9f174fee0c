"""kubeletapi.sockets: a gRPC server binds and a client dials however long the socket's path is."""

from __future__ import annotations

import os
import shutil
import tempfile
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from kubeletapi.sockets import unix_target


@pytest.mark.parametrize("length", [40, 100, 101, 105, 106, 107, 108, 180])
def test_grpc_binds_and_dials_at_any_path_length(length: int) -> None:
    tmp_path = Path(tempfile.mkdtemp(prefix="uds", dir="/tmp"))  # short, so every length can be built
    try:
        _bind_and_dial(tmp_path, length)
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)


def _bind_and_dial(tmp_path: Path, length: int) -> None:
    name = "s.sock"
    prefix = len(os.fsencode(str(tmp_path))) + 1 + len(name)
    assert prefix < length, "the temp dir alone is longer than the case"
    pad = length - prefix - 1  # one more '/' joins the padding directory
    directory = tmp_path / ("d" * pad)
    directory.mkdir()
    path = directory / name
    assert len(os.fsencode(str(path))) == length
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    try:
        assert server.add_insecure_port(unix_target(path)) == 1  # raises when the address is refused
        server.start()
        assert path.exists()
        with grpc.insecure_channel(unix_target(path)) as channel:
            grpc.channel_ready_future(channel).result(timeout=5)
    finally:
        server.stop(None)
