"""The monitor labels series with pod names it learns by watching its node's pods."""

from __future__ import annotations

import time

from hami_stack.monitor.podnames import NodePodNames
from kubeclient.client import Kube
from testbed.embedded import EmbeddedTestbed


def test_uids_resolve_to_namespace_and_name_for_this_node_only() -> None:
    with EmbeddedTestbed(33) as tb:
        kube = Kube.from_config(str(tb.kubeconfig_path))
        names = NodePodNames(kube, "n1").start()
        try:
            uids = {}
            for name, node in (("here", "n1"), ("elsewhere", "n2")):
                pod = kube.create("/api/v1/namespaces/default/pods", {
                    "metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "i"}]}})
                kube.create(f"/api/v1/namespaces/default/pods/{name}/binding",
                            {"metadata": {"name": name}, "target": {"kind": "Node", "name": node}})
                uids[name] = pod["metadata"]["uid"]
            deadline = time.monotonic() + 5
            while names.resolve(uids["here"]) is None and time.monotonic() < deadline:
                time.sleep(0.02)
            assert names.resolve(uids["here"]) == ("default", "here")
            assert names.resolve(uids["elsewhere"]) is None
            kube.delete("/api/v1/namespaces/default/pods/here", gracePeriodSeconds=0)
            deadline = time.monotonic() + 5
            while names.resolve(uids["here"]) is not None and time.monotonic() < deadline:
                time.sleep(0.02)
            assert names.resolve(uids["here"]) is None
        finally:
            names.stop()
            kube.close()
