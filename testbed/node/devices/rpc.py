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

def go_rpc_error(err: grpc.aio.AioRpcError | grpc.RpcError) -> str:
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    details = err.details() if hasattr(err, "details") else str(err)
    return f"rpc error: code = {_GO_CODE_NAMES.get(code, 'Unknown')} desc = {details or ''}"


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
