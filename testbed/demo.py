"""``python -m testbed demo``: start a testbed, drive it with the official client, report, stop.

It is the project's main job until the conformance run exists: it proves on a fresh machine that
the emulated control plane answers real clients for the chosen minor.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.table import Table


def run_demo(minor: str, keep: bool = False) -> int:
    from kubernetes import client, watch

    from .embedded import EmbeddedTestbed

    console = Console()
    results: list[tuple[str, str, str]] = []

    def step(name: str, fn: Any) -> Any:
        t0 = time.perf_counter()
        try:
            out = fn()
        except Exception as e:
            results.append((name, "[red]failed[/red]", str(e).splitlines()[0][:80]))
            raise
        results.append((name, "[green]ok[/green]", f"{(time.perf_counter() - t0) * 1000:.1f} ms"))
        return out

    with console.status(f"starting testbed for Kubernetes {minor}..."):
        t0 = time.perf_counter()
        tb = EmbeddedTestbed(minor).start()
        started = time.perf_counter() - t0
    try:
        api = tb.api_client()
        core = client.CoreV1Api(api)
        version = client.VersionApi(api).get_code()
        console.print(f"testbed [bold]{version.git_version}[/bold] at {tb.url} (started in {started:.2f}s)")
        console.print(f"kubeconfig: {tb.kubeconfig_path}")
        ns = "demo"
        step("create namespace", lambda: core.create_namespace({"metadata": {"name": ns}}))
        step(
            "default service account",
            lambda: _wait(lambda: core.read_namespaced_service_account("default", ns)),
        )
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "probe", "labels": {"app": "demo"}},
            "spec": {
                "containers": [
                    {
                        "name": "main",
                        "image": "busybox",
                        "command": ["true"],
                        "resources": {"limits": {"nvidia.com/gpu": "1"}},
                    }
                ]
            },
        }
        created = step("create pod", lambda: core.create_namespaced_pod(ns, pod))
        step(
            "defaults applied",
            lambda: _check(
                created.spec.scheduler_name == "default-scheduler" and created.status.phase == "Pending",
                "schedulerName/phase not defaulted",
            ),
        )
        step(
            "strategic merge patch",
            lambda: core.patch_namespaced_pod("probe", ns, {"metadata": {"labels": {"tier": "gpu"}}}),
        )
        step(
            "list by label selector",
            lambda: _check(
                len(core.list_namespaced_pod(ns, label_selector="app=demo,tier in (gpu)").items) == 1,
                "selector did not match",
            ),
        )
        w = watch.Watch()
        rv = core.list_namespaced_pod(ns).metadata.resource_version
        step(
            "bind pod to a node",
            lambda: core.create_namespaced_binding(
                ns,
                {"metadata": {"name": "probe"}, "target": {"kind": "Node", "name": "node-a"}},
                _preload_content=False,
            ),
        )

        def see_binding() -> None:
            for ev in w.stream(core.list_namespaced_pod, ns, resource_version=rv, timeout_seconds=5):
                if ev["object"].spec.node_name == "node-a":
                    w.stop()
                    return
            raise RuntimeError("no watch event for the binding")

        step("watch sees the binding", see_binding)
        step("delete namespace", lambda: core.delete_namespace(ns))
    finally:
        if keep:
            console.print("testbed kept running; press Ctrl-C to stop")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
        tb.stop()
    table = Table(title=f"testbed demo, Kubernetes {minor}")
    for col in ("step", "result", "detail"):
        table.add_column(col)
    for row in results:
        table.add_row(*row)
    console.print(table)
    return 0 if all("ok" in r[1] for r in results) else 1


def _wait(fn: Any, timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _check(ok: bool, why: str) -> None:
    if not ok:
        raise AssertionError(why)
