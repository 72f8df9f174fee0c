"""What the self-test needs from the stack the testbed backend installs: its fault catalogue, and
switching faults on an installed release (``helm upgrade``), with cleanup between faults.

Kept under ``backends/`` (the one place that may know the stack), so ``conformance/selftest.py``
stays a harness module. Faults are switched only the way an installer would: chart values.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

from conformance.backends import BackendError
from conformance.backends.testbed import CHART, RELEASE, REPO, helm_binary

# Node annotations a fault may leave behind (node lock; the device-cordon a case sets and removes)
LEFTOVER_NODE_ANNOTATIONS = ("hami.io/mutex.lock",)
ROLLOUT_TIMEOUT_S = 120


def catalogue() -> list[dict[str, Any]]:
    """The faults the installed stack (this checkout's ``hami_stack``) knows, as plain dicts."""
    from hami_stack.faults.catalogue import CATALOGUE

    return [f.to_dict() for f in CATALOGUE]


def chart_unknown(names: list[str], minor: str) -> list[str]:
    """Names the chart would not deliver to any stack container (rendered with ``helm template``)."""
    if not names:
        return []
    helm = helm_binary(minor)
    cmd = [
        helm,
        "template",
        RELEASE,
        str(CHART),
        "--kube-version",
        f"v{minor}.0",
        "--set",
        "faultInjection.faults={" + ",".join(names) + "}",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False, cwd=REPO)
    if proc.returncode != 0:
        raise BackendError(
            f"helm template of {CHART} with faults {names} failed: {proc.stderr.strip()[-800:]}"
        )
    rendered = proc.stdout
    clean = subprocess.run(
        cmd[:-2], capture_output=True, text=True, timeout=120, check=False, cwd=REPO
    ).stdout
    from hami_stack.faults.catalogue import BY_NAME
    from hami_stack.faults.catalogue import CHART as CHART_KIND

    missing = []
    for n in names:
        fault = BY_NAME.get(n)
        if fault is not None and fault.kind == CHART_KIND:
            # a chart fault must change what the chart renders
            single = subprocess.run(
                [*cmd[:-2], "--set", "faultInjection.faults={" + n + "}"],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
                cwd=REPO,
            )
            if single.stdout == clean:
                missing.append(n)
        elif n not in rendered:
            missing.append(n)
    return missing


def prepare(names: list[str]) -> None:
    """Build the fault shims ahead (the plugin's postStart would otherwise compile them)."""
    from hami_stack.enforcer.build import ensure_built
    from hami_stack.faults.catalogue import BY_NAME, SHIM

    for n in names:
        fault = BY_NAME.get(n)
        if fault is not None and fault.kind == SHIM:
            ensure_built([fault.shim_define])


def switch(kubeconfig: str, minor: str, namespace: str, faults: list[str], base_set: list[str]) -> str:
    """``helm upgrade`` the release to exactly ``faults``, waiting for the rollout.

    Returns "" on success, else why (the self-test still runs the suites: a stack that does not come
    up is a broken stack the suites must catch).
    """
    helm = helm_binary(minor)
    value = "faultInjection.faults={" + ",".join(faults) + "}" if faults else "faultInjection.faults=null"
    cmd = [
        helm,
        "upgrade",
        RELEASE,
        str(CHART),
        "--namespace",
        namespace,
        "--kubeconfig",
        kubeconfig,
        "--reuse-values",
        "--wait",
        "--timeout",
        f"{ROLLOUT_TIMEOUT_S}s",
        "--set",
        value,
        # every node's device plugin restarts at once (one node at a time doubles each switch); only
        # the rollout changes, not what runs
        "--set",
        "devicePlugin.updateStrategy.rollingUpdate.maxUnavailable=100%",
    ]
    for kv in base_set:
        cmd += ["--set", kv]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=ROLLOUT_TIMEOUT_S + 60, check=False, cwd=REPO
    )
    if proc.returncode != 0:
        return f"helm upgrade did not complete: {(proc.stderr or proc.stdout).strip()[-300:]}"
    return ""


def wait_ready(
    kubeconfig: str, nodes: list[str], namespace: str = "hami-system", timeout: float = 45.0
) -> str:
    """Until every GPU node shows allocatable nvidia.com/gpu again (device plugins re-registered) and
    every Service of the stack has a ready endpoint (helm's rollout wait can return while the
    replaced scheduler's endpoints are still being updated: its webhook would fail calls, which a
    case cannot tell from a denial)."""
    from conformance.backends import preflight

    kube = preflight.connect(kubeconfig)
    deadline = time.monotonic() + timeout
    try:
        while True:
            items = {n["metadata"]["name"]: n for n in kube.get("/api/v1/nodes").get("items") or []}
            waiting = [  # nodes of another inventory (an Ascend cell) are not waited for
                f"node {n} (no allocatable nvidia.com/gpu)"
                for n in nodes
                if n in items and not _allocatable(items.get(n))
            ]
            waiting += [
                f"service {x} (no ready endpoint)" for x in _services_without_endpoints(kube, namespace)
            ]
            if not waiting:
                return ""
            if time.monotonic() > deadline:
                return f"after {timeout:.0f}s still waiting for {', '.join(waiting)}"
            time.sleep(0.5)
    finally:
        kube.close()


def _services_without_endpoints(kube: Any, namespace: str) -> list[str]:
    out = []
    for svc in kube.get(f"/api/v1/namespaces/{namespace}/services").get("items") or []:
        selector = (svc.get("spec") or {}).get("selector")
        if not selector:
            continue  # endpoints managed by hand, if at all
        name = svc["metadata"]["name"]
        labels = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
        if not kube.get(f"/api/v1/namespaces/{namespace}/pods", labelSelector=labels).get("items"):
            continue  # no pod to wait for (the monitor DaemonSet on a cluster without GPU nodes)
        try:
            ep = kube.get(f"/api/v1/namespaces/{namespace}/endpoints/{name}")
        except Exception:
            out.append(name)
            continue
        live = [
            a
            for sub in ep.get("subsets") or []
            for a in sub.get("addresses") or []
            if _live_pod(kube, namespace, (a.get("targetRef") or {}).get("name"))
        ]
        if not live:  # none, or only the replaced pod's address on its way out
            out.append(name)
    return out


def _live_pod(kube: Any, namespace: str, name: str | None) -> bool:
    if not name:
        return True  # an address without a pod reference: nothing to check
    try:
        pod = kube.get(f"/api/v1/namespaces/{namespace}/pods/{name}")
    except Exception:
        return False
    running = (pod.get("status") or {}).get("phase") == "Running"
    return running and not pod["metadata"].get("deletionTimestamp")


def _allocatable(node: dict[str, Any] | None) -> bool:
    if node is None:
        return False
    value = str(((node.get("status") or {}).get("allocatable") or {}).get("nvidia.com/gpu", "0"))
    return value.isdigit() and int(value) > 0


def cleanup(kubeconfig: str, keep_namespaces: set[str]) -> None:
    """Delete namespaces the suites left behind and node annotations a fault left (lock)."""
    from conformance.backends import preflight

    kube = preflight.connect(kubeconfig)
    try:
        for ns in kube.get("/api/v1/namespaces").get("items") or []:
            name = ns["metadata"]["name"]
            if name not in keep_namespaces and not (ns["metadata"].get("deletionTimestamp")):
                try:
                    kube.delete(f"/api/v1/namespaces/{name}")
                except Exception:
                    pass
        for node in kube.get("/api/v1/nodes").get("items") or []:
            annotations = node["metadata"].get("annotations") or {}
            drop = {k: None for k in LEFTOVER_NODE_ANNOTATIONS if k in annotations}
            if drop:
                kube.patch(
                    f"/api/v1/nodes/{node['metadata']['name']}", {"metadata": {"annotations": drop}}, "merge"
                )
    finally:
        kube.close()


HARNESS_LABEL = ("app.kubernetes.io/managed-by", "hami-conformance")  # the suites' per-case namespaces


def namespaces(kubeconfig: str) -> set[str]:
    """The namespaces to keep: all but those the suites created (labelled by the harness)."""
    from conformance.backends import preflight

    kube = preflight.connect(kubeconfig)
    key, value = HARNESS_LABEL
    try:
        return {
            n["metadata"]["name"]
            for n in kube.get("/api/v1/namespaces").get("items") or []
            if (n["metadata"].get("labels") or {}).get(key) != value
        }
    finally:
        kube.close()


def gpu_nodes() -> list[str]:
    from conformance.backends.testbed import INVENTORY, expected_gpu_nodes

    return expected_gpu_nodes(Path(INVENTORY))


def teardown(kubeconfig: str) -> None:
    """Stop a testbed kept by ``--keep-cluster`` (its data dir holds state.json next to the kubeconfig)."""
    import shutil
    import sys

    path = Path(kubeconfig).resolve()
    data_dir = next((p for p in [path.parent, *path.parents] if (p / "state.json").is_file()), None)
    if data_dir is None:
        return
    subprocess.run(
        [sys.executable, "-m", "testbed", "down", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO,
    )
    shutil.rmtree(data_dir, ignore_errors=True)


def teardown_all(tmp: Path) -> None:
    """Stop every testbed whose data dir is under ``tmp`` (an interrupted self-test's clean run)."""
    for state in sorted(Path(tmp).glob("hami-conformance-*/state.json")):
        teardown(str(state.parent / "kubeconfig"))
