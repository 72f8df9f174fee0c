"""gRPC addresses of unix sockets, usable however deep the socket's directory is."""

from __future__ import annotations

import os
from pathlib import Path

# sun_path is 108 bytes on Linux, including the terminating NUL, but gRPC 1.85 already refuses paths
# of 106 bytes ("Path name should not have more than 107 characters", seen under pytest-xdist's deeper
# temp dirs; measured in tests/test_unix_sockets.py), so longer paths take the short route, with margin.
MAX_UNIX_PATH = 100

# Directories opened to reach sockets whose full path is too long for sun_path; kept open for the
# life of the process because gRPC resolves the address again on every (re)connect.
_DIR_FDS: dict[str, int] = {}


def unix_target(path: Path | str) -> str:
    """A gRPC ``unix:`` address for ``path``, for binding and dialing alike.

    Paths longer than a unix socket address holds (deep node roots, pytest temp dirs) go through
    ``/proc/self/fd/<dir fd>/<name>``, which the kernel resolves to the same directory.
    """
    full = os.path.abspath(path)
    if len(os.fsencode(full)) <= MAX_UNIX_PATH:
        return f"unix://{full}"
    directory, name = os.path.split(full)
    fd = _DIR_FDS.get(directory)
    if fd is None:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        _DIR_FDS[directory] = fd
    short = f"/proc/self/fd/{fd}/{name}"
    if len(os.fsencode(short)) > MAX_UNIX_PATH:
        raise ValueError(f"unix socket name too long ({len(name)} bytes): {name}")
    return f"unix://{short}"
