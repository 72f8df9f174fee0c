"""Ephemeral containers (``kubectl debug``): the apiserver's ``pods/ephemeralcontainers`` subresource
and the node agent starting them.

Apiserver side (:func:`apply_update`, called from ``testbed/apiserver/server.py``): GET returns the
pod; PUT and PATCH (JSON, merge or strategic merge) may only add ephemeral containers: existing ones
cannot change or go, names must be unique among all the pod's containers, and the fields Kubernetes
forbids for them (ports, probes, lifecycle, resources) are refused. Defaults as the API sets them.

Node side (:func:`run`, on each agent's loop): every ``POLL`` seconds each running pod's ephemeral
containers that have not been started are started like app containers (image catalog, env, mounts,
user, the pod's namespaces) and reported in ``status.ephemeralContainerStatuses``; they are never
restarted, and are killed when their pod goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import signal
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .agent import NodeAgent
    from .runtime import CState, PodWorker

log = logging.getLogger("testbed.node.ephemeral")
POLL = 0.3
_FORBIDDEN = ("ports", "livenessProbe", "readinessProbe", "startupProbe", "lifecycle", "resources",
              "resizePolicy")


class Invalid(Exception):
    """The update is not allowed (422)."""


def _defaults(c: dict[str, Any]) -> None:
    c.setdefault("terminationMessagePath", "/dev/termination-log")
    c.setdefault("terminationMessagePolicy", "File")
    image = str(c.get("image") or "")
    tail = image.rsplit("/", 1)[-1]
    latest = ":" not in tail or tail.endswith(":latest")
    c.setdefault("imagePullPolicy", "Always" if latest and "@" not in image else "IfNotPresent")


def apply_update(cur: dict[str, Any], new_spec_ephemeral: list[dict[str, Any]]) -> dict[str, Any]:
    """The pod with its ephemeral containers replaced by ``new_spec_ephemeral``, checked."""
    spec = cur.get("spec") or {}
    old = {c["name"]: c for c in spec.get("ephemeralContainers") or []}
    new = [copy.deepcopy(c) for c in new_spec_ephemeral or []]
    names = [c.get("name") for c in new]
    for i, c in enumerate(new):
        path = f"spec.ephemeralContainers[{i}]"
        if not c.get("name"):
            raise Invalid(f"{path}.name: Required value")
        if not c.get("image"):
            raise Invalid(f"{path}.image: Required value")
        if names.count(c["name"]) > 1:
            raise Invalid(f'{path}.name: Duplicate value: "{c["name"]}"')
        for field in _FORBIDDEN:
            if c.get(field):
                raise Invalid(f"{path}.{field}: Forbidden: cannot be set for an Ephemeral Container")
        _defaults(c)
    for name, c in old.items():
        match = next((n for n in new if n.get("name") == name), None)
        if match is None:
            raise Invalid("spec.ephemeralContainers: Forbidden: existing ephemeral containers "
                          f'"{name}" may not be removed')
        if match != c:
            raise Invalid(f'spec.ephemeralContainers: Forbidden: existing ephemeral containers "{name}" '
                          "may not be changed")
    regular = {c["name"] for c in (spec.get("containers") or []) + (spec.get("initContainers") or [])}
    for c in new:
        if c["name"] in regular and c["name"] not in old:
            raise Invalid(f'spec.ephemeralContainers: Duplicate value: "{c["name"]}"')
        target = c.get("targetContainerName")
        if target and target not in regular:
            raise Invalid(f'spec.ephemeralContainers.targetContainerName: Not found: "{target}"')
    out = copy.deepcopy(cur)
    out.setdefault("spec", {})["ephemeralContainers"] = new
    return out


def ephemeral_from_body(method: str, ctype: str, raw: bytes, cur: dict[str, Any],
                        patch_fns: dict[str, Any]) -> list[dict[str, Any]]:
    """The ephemeral containers a PUT body or a PATCH of the current pod asks for."""
    if method == "PUT":
        body = json.loads(raw or b"{}")
        if body.get("kind") == "EphemeralContainers":  # the subresource's own kind up to 1.21
            return list(body.get("ephemeralContainers") or [])
        return list((body.get("spec") or {}).get("ephemeralContainers") or [])
    kind = ctype.split(";")[0].strip()
    fn = patch_fns.get(kind)
    if fn is None:
        raise Invalid(f"unsupported patch type {kind!r}")
    patched = fn(copy.deepcopy(cur), raw)
    return list((patched.get("spec") or {}).get("ephemeralContainers") or [])


# -- node side --------------------------------------------------------------------------------------


class _State:
    def __init__(self) -> None:
        self.started: dict[str, dict[str, CState]] = {}  # pod uid -> name -> state


def _worker_ephemeral(w: PodWorker) -> list[CState]:
    return list(getattr(w, "ephemeral", []))


def _start(w: PodWorker, spec: dict[str, Any]) -> CState:
    """Register the container at once (status shows it waiting) and launch it on a thread of its own:
    an image that fails to pull keeps retrying there, as the kubelet's pull back-off does."""
    from .runtime import CState

    c = CState(spec["name"], spec.get("image", ""))
    w.specs[c.name] = spec
    if not hasattr(w, "ephemeral"):
        w.ephemeral = []  # type: ignore[attr-defined]
    w.ephemeral.append(c)  # type: ignore[attr-defined]

    def launch() -> None:
        try:
            w._launch(c)
        except Exception as e:  # the pod is being deleted (pull loop), or a bug: the pod keeps going
            log.info("pod %s: ephemeral container %s not started: %r", w.key, c.name, e)
        c.ready = False  # ephemeral containers are never ready
        with contextlib.suppress(Exception):
            w._write_status()

    threading.Thread(target=launch, name=f"ephemeral {w.key}/{c.name}", daemon=True).start()
    return c


def sync_once(agent: NodeAgent, state: _State) -> None:
    workers = {w.uid: w for w in list(agent.runtime.workers.values())}
    for uid in [u for u in state.started if u not in workers or workers[u].stopping.is_set()]:
        for c in state.started.pop(uid).values():
            if c.proc is not None and c.proc.poll() is None:
                c.proc.signal(signal.SIGKILL)
    for uid, w in workers.items():
        if w.stopping.is_set() or w.phase in ("Succeeded", "Failed") or not w.sandbox_ready:
            continue
        started = state.started.setdefault(uid, {})
        for spec in (w.pod.get("spec") or {}).get("ephemeralContainers") or []:
            if spec["name"] not in started:
                started[spec["name"]] = _start(w, spec)
        for c in started.values():
            if c.proc is not None and c.proc.poll() is not None:
                w._terminated(c, c.proc.exit_code())
                with contextlib.suppress(Exception):
                    w._write_status()


async def run(agent: NodeAgent) -> None:
    state = _State()
    while True:
        await asyncio.sleep(POLL)
        # the thread hop only when there is something to do: an idle node has no ephemeral container
        if state.started or any(
            (w.pod.get("spec") or {}).get("ephemeralContainers") for w in list(agent.runtime.workers.values())
        ):
            with contextlib.suppress(Exception):
                await asyncio.to_thread(sync_once, agent, state)


def target_pid(w: PodWorker, spec: dict[str, Any]) -> int | None:
    """The process whose PID namespace an ephemeral container with ``targetContainerName`` joins
    (``kubectl debug --target``: it sees the target's processes), while that container runs."""
    name = spec.get("targetContainerName")
    c = next((c for c in w.apps if c.name == name), None) if name else None
    if c is None or c.proc is None or c.proc.poll() is not None:
        return None
    return c.proc.pid


def containers_of(w: PodWorker) -> list[CState]:
    return _worker_ephemeral(w)
