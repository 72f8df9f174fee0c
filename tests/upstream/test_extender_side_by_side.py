"""Our extender and upstream HAMi's make the same decisions on the same cluster.

Both run as processes against a freshly seeded testbed apiserver each (4 nodes of 8 A100-80GB with
existing usage, ``bench/extender_stacks.py``); the same pods are filtered and bound in the same
order, and every answer is compared: the node chosen, the nodes refused with their reasons, and the
devices the filter wrote into the pod (``hami.io/vgpu-devices-to-allocate``, ``hami.io/vgpu-node``).

Needs upstream's build (``python -m testbed.upstream build v2.10.0 --source GIT_DIR``; the Go module
proxy refuses upstream's module, see ``testbed/upstream/source.py``) and ``HAMI_UPSTREAM_TESTS=1``
(``needs_build.py``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from .needs_build import BUILT, TAG, requires_build

pytestmark = requires_build


def _pod(name: str, limits: dict[str, str], annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "annotations": annotations or {}},
        "spec": {
            "schedulerName": "hami-scheduler",
            "containers": [{"name": "c", "image": "busybox", "resources": {"limits": limits}}],
        },
    }


PODS = [
    _pod("small", {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "3000"}),
    _pod("cores", {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "8000", "nvidia.com/gpucores": "20"}),
    _pod("two", {"nvidia.com/gpu": "2", "nvidia.com/gpumem": "4000", "nvidia.com/gpucores": "10"}),
    _pod("percent", {"nvidia.com/gpu": "1", "nvidia.com/gpumem-percentage": "50"}),
    _pod("whole", {"nvidia.com/gpu": "1", "nvidia.com/gpucores": "100"}),
    _pod(
        "spread",
        {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "1000"},
        {"hami.io/gpu-scheduler-policy": "spread"},
    ),
    _pod(
        "binpack",
        {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "1000"},
        {"hami.io/gpu-scheduler-policy": "binpack"},
    ),
    _pod("toobig", {"nvidia.com/gpu": "1", "nvidia.com/gpumem": "90000"}),
    _pod("toomany", {"nvidia.com/gpu": "9", "nvidia.com/gpumem": "1000"}),
    _pod("wrongtype", {"nvidia.com/gpu": "1"}, {"nvidia.com/use-gputype": "H100"}),
]


def _decisions(stack: str, work: Path, pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from bench.extender_stacks import live, make_tls

    out = []
    with live(stack, 4, make_tls(work, f"upstream@{TAG}"), work) as lv:
        for pod in pods:
            _f, b_ms, res, after = lv.round(pod)
            ann = after["metadata"].get("annotations") or {}
            out.append(
                {
                    "pod": pod["metadata"]["name"],
                    "nodes": res.get("NodeNames"),
                    "failed": res.get("FailedNodes") or {},
                    "error": res.get("Error") or "",
                    "to_allocate": ann.get("hami.io/vgpu-devices-to-allocate"),
                    "vgpu_node": ann.get("hami.io/vgpu-node"),
                    "bound": b_ms is not None,
                }
            )
    return out


def _compare(ours: list[dict[str, Any]], upstream: list[dict[str, Any]]) -> None:
    # On success upstream answers the chosen node alone (pkg/scheduler/scheduler.go:1152 at v2.10.0)
    # where ours also lists the nodes that did not fit; kube-scheduler reads FailedNodes only when no
    # node is left (hami_stack/UPSTREAM-DIFFERENCES.md), so refusals are compared on refused pods.
    for d in (*ours, *upstream):
        if d["nodes"]:
            d["failed"] = "(not compared on success)"
    diffs = [
        (o["pod"], k, o[k], u[k]) for o, u in zip(ours, upstream, strict=True) for k in o if o[k] != u[k]
    ]
    assert not diffs, "pod, field, ours, upstream:\n" + "\n".join(map(repr, diffs))


def test_same_decisions_as_upstream(tmp_path: Path) -> None:
    ours = _decisions("ours", tmp_path / "ours", PODS)
    upstream = _decisions(f"upstream@{TAG}", tmp_path / "upstream", PODS)
    _compare(ours, upstream)
    # the comparison means something: pods were placed and some were refused, on both sides
    assert sum(d["bound"] for d in ours) >= 6 and sum(not d["nodes"] for d in ours) == 3


def _example_pods() -> list[dict[str, Any]]:
    """Every Pod of upstream's NVIDIA examples (``examples/nvidia/*.yaml`` in the built tree), renamed
    ``<file>-<n>`` into ``default`` (PVC-backed volumes play no part in filter and bind), with the
    ``schedulerName`` the webhook would give them."""
    assert BUILT is not None
    pods = []
    for path in sorted((Path(BUILT.manifest["tree"]) / "examples" / "nvidia").glob("*.yaml")):
        for n, doc in enumerate(
            d for d in yaml.safe_load_all(path.read_text()) if d and d.get("kind") == "Pod"
        ):
            meta = doc.setdefault("metadata", {})
            meta["name"] = f"{path.stem.replace('_', '-')}-{n}"
            meta["namespace"] = "default"
            doc.setdefault("spec", {})["schedulerName"] = "hami-scheduler"
            pods.append(doc)
    return pods


def test_upstream_examples_decide_alike(tmp_path: Path) -> None:
    pods = _example_pods()
    assert len(pods) >= 12
    ours = _decisions("ours", tmp_path / "ours", pods)
    upstream = _decisions(f"upstream@{TAG}", tmp_path / "upstream", pods)
    _compare(ours, upstream)
    assert sum(d["bound"] for d in ours) >= 6


def _admissions(stack: str, work: Path, pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each pod, without its schedulerName, through the stack's webhook: allowed, message, patched pod."""
    import base64
    import copy

    import jsonpatch

    from bench.extender_stacks import live, make_tls

    out = []
    with live(stack, 1, make_tls(work, f"upstream@{TAG}"), work) as lv:
        for pod in pods:
            sent = copy.deepcopy(pod)
            sent["spec"].pop("schedulerName", None)
            res = lv.admit(sent)
            patched = sent
            if res.get("patch"):
                assert res.get("patchType") == "JSONPatch", res
                ops = json.loads(base64.b64decode(res["patch"]))
                patched = jsonpatch.apply_patch(sent, ops)
            out.append(
                {
                    "pod": pod["metadata"]["name"],
                    "allowed": res.get("allowed"),
                    "message": (res.get("status") or {}).get("message", ""),
                    "patched": _canonical(patched),
                }
            )
    return out


def _canonical(pod: dict[str, Any]) -> dict[str, Any]:
    """What the apiserver would store either way: quantities by value (upstream's webhook patches the
    whole pod as Go re-serialises it: ``3000`` becomes ``3k``, ints become strings), no empty
    ``annotations`` or ``status``."""
    from testbed.k8s.quantity import parse_quantity

    pod = json.loads(json.dumps(pod))
    for c in [*pod["spec"].get("initContainers", []), *pod["spec"].get("containers", [])]:
        for kind in ("limits", "requests"):
            values = (c.get("resources") or {}).get(kind)
            if values:
                c["resources"][kind] = {k: parse_quantity(str(v)).nanos for k, v in values.items()}
    for key, parent in (("annotations", pod["metadata"]), ("status", pod)):
        if not parent.get(key):
            parent.pop(key, None)
    return pod


def test_webhooks_mutate_alike(tmp_path: Path) -> None:
    pods = PODS + _example_pods()
    ours = _admissions("ours", tmp_path / "ours", pods)
    upstream = _admissions(f"upstream@{TAG}", tmp_path / "upstream", pods)
    diffs = [
        (o["pod"], k, o[k], u[k]) for o, u in zip(ours, upstream, strict=True) for k in o if o[k] != u[k]
    ]
    assert not diffs, "pod, field, ours, upstream:\n" + "\n".join(map(repr, diffs))
    # meaningful: the webhook did route HAMi pods to hami-scheduler on both sides
    routed = [d["pod"] for d in ours if d["patched"]["spec"].get("schedulerName") == "hami-scheduler"]
    assert len(routed) == len(pods) - 1 and "mig-example-0" not in routed  # its resource is not HAMi's
