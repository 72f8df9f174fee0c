"""patch.json_copy: the copy every patch starts from is equal to the stored object and shares
nothing mutable with it."""

from __future__ import annotations

from collections import OrderedDict

from testbed.apiserver.patch import apply_merge_patch, json_copy


def test_equal_and_independent() -> None:
    stored = {"metadata": {"name": "n", "labels": {"a": "1"}, "finalizers": ["x"]},
              "spec": {"containers": [{"name": "c", "ports": [{"containerPort": 80}]}]},
              "status": {"capacity": {"gpu": "4"}, "ready": True, "ratio": 0.5, "none": None}}
    c = json_copy(stored)
    assert c == stored
    c["metadata"]["labels"]["b"] = "2"
    c["metadata"]["finalizers"].append("y")
    c["spec"]["containers"][0]["ports"][0]["containerPort"] = 81
    assert stored["metadata"] == {"name": "n", "labels": {"a": "1"}, "finalizers": ["x"]}
    assert stored["spec"]["containers"][0]["ports"][0]["containerPort"] == 80


def test_other_containers_are_deep_copied() -> None:
    inner = {"k": [1]}
    odd = {"o": OrderedDict(a=inner), "t": (inner,)}
    c = json_copy(odd)
    assert c == odd and type(c["o"]) is OrderedDict
    c["o"]["a"]["k"].append(2)
    c["t"][0]["k"].append(3)
    assert inner == {"k": [1]}


def test_a_merge_patch_leaves_the_stored_object_alone() -> None:
    stored = {"metadata": {"annotations": {"a": "1"}}, "status": {"phase": "Pending"}}
    out = apply_merge_patch(stored, b'{"metadata":{"annotations":{"b":"2"}},"status":{"phase":"Running"}}')
    assert out == {"metadata": {"annotations": {"a": "1", "b": "2"}}, "status": {"phase": "Running"}}
    assert stored == {"metadata": {"annotations": {"a": "1"}}, "status": {"phase": "Pending"}}
