"""gRPC helpers shared by the device-plugin manager, its stub plugin and the PodResources server."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

# Go spells status codes in CamelCase and prints errors as "rpc error: code = X desc = Y"; the kubelet
# embeds that text in its own messages, so ours must read the same.
_GO_CODE_NAMES = {
    grpc.StatusCode.OK: "OK",
    grpc.StatusCode.CANCELLED: "Canceled",
    grpc.StatusCode.UNKNOWN: "Unknown",
    grpc.StatusCode.INVALID_ARGUMENT: "InvalidArgument",
    grpc.StatusCode.DEADLINE_EXCEEDED: "DeadlineExceeded",
    grpc.StatusCode.NOT_FOUND: "NotFound",
    grpc.StatusCode.ALREADY_EXISTS: "AlreadyExists",
    grpc.StatusCode.PERMISSION_DENIED: "PermissionDenied",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "ResourceExhausted",
    grpc.StatusCode.FAILED_PRECONDITION: "FailedPrecondition",
    grpc.StatusCode.ABORTED: "Aborted",
    grpc.StatusCode.OUT_OF_RANGE: "OutOfRange",
    grpc.StatusCode.UNIMPLEMENTED: "Unimplemented",
    grpc.StatusCode.INTERNAL: "Internal",
    grpc.StatusCode.UNAVAILABLE: "Unavailable",
    grpc.StatusCode.DATA_LOSS: "DataLoss",
    grpc.StatusCode.UNAUTHENTICATED: "Unauthenticated",
}

# sun_path is 108 bytes on Linux, including the terminating NUL.
MAX_UNIX_PATH = 107


def go_rpc_error(err: grpc.aio.AioRpcError | grpc.RpcError) -> str:
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    details = err.details() if hasattr(err, "details") else str(err)
    return f"rpc error: code = {_GO_CODE_NAMES.get(code, 'Unknown')} desc = {details or ''}"


# Directories opened to reach sockets whose full path is too long for sun_path; kept open for the
# life of the process because gRPC resolves the address again on every (re)connect.
_DIR_FDS: dict[str, int] = {}


def unix_target(path: Path | str) -> str:
    """A gRPC ``unix:`` address for ``path``, for binding and dialing alike.

    Node roots live under the user's data directory, which can make socket paths longer than the
    108 bytes a unix socket address holds. Such paths go through ``/proc/self/fd/<dir fd>/<name>``,
    which the kernel resolves to the same directory.
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


def remove_sockets(directory: Path, keep: set[str]) -> list[str]:
    """Delete the sockets in ``directory`` (not files, not subdirectories), as the kubelet does at start."""
    removed = []
    for entry in os.scandir(directory):
        if entry.name in keep:
            continue
        try:
            st = os.lstat(entry.path)
        except FileNotFoundError:
            continue
        if stat.S_ISSOCK(st.st_mode):
            os.unlink(entry.path)
            removed.append(entry.name)
    return removed


class UnknownMethodHandler(grpc.GenericRpcHandler):
    """Answers calls to methods this server does not serve the way grpc-go does (Unimplemented,
    "unknown service X" / "unknown method M for service X"), so clients see the real kubelet's text."""

    def __init__(self, services: set[str]) -> None:
        self._services = services

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method  # "/pkg.Service/Method"
        service, _, name = method.lstrip("/").partition("/")
        if service in self._services:
            message = f"unknown method {name} for service {service}"
        else:
            message = f"unknown service {service}"

        async def reject(request: Any, context: grpc.aio.ServicerContext) -> None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, message)

        return grpc.unary_unary_rpc_method_handler(reject)


def fire(callbacks: list[Callable[[], None]], log: Any) -> None:
    for cb in list(callbacks):
        try:
            cb()
        except Exception:  # a broken subscriber must not stop device updates
            log.exception("device manager change callback failed")


async def close_channel(channel: grpc.aio.Channel | None) -> None:
    if channel is not None:
        try:
            await asyncio.wait_for(channel.close(), 2)
        except (TimeoutError, Exception):
            pass
