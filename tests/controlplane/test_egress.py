"""The egress proxy's resolution: a ClusterIP goes to a ready pod of the Service, other loopback
destinations pass, anything else is refused."""

from __future__ import annotations

import ipaddress
import time
from typing import Any

import pytest

from testbed.controlplane.egress import Resolver, config_yaml


def _resolver(services: list[dict[str, Any]], pods: list[dict[str, Any]]) -> Resolver:
    r = Resolver.__new__(Resolver)  # no apiserver: the lists are served from the cache
    r.cidr = ipaddress.ip_network("10.96.0.0/16")
    far = time.monotonic() + 3600
    r._cache = {"/api/v1/services": (far, services), "/api/v1/namespaces/hami/pods": (far, pods)}
    return r


SVC = {"metadata": {"name": "webhook", "namespace": "hami"},
       "spec": {"clusterIP": "10.96.3.4", "selector": {"app": "hook"},
                "ports": [{"port": 443, "targetPort": "https"}]}}


def _pod(ip: str, ready: bool, app: str = "hook") -> dict[str, Any]:
    return {"metadata": {"name": ip, "labels": {"app": app}},
            "spec": {"containers": [{"ports": [{"name": "https", "containerPort": 9443}]}]},
            "status": {"phase": "Running", "podIP": ip,
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def test_cluster_ip_goes_to_a_ready_selected_pod_by_port_name():
    r = _resolver([SVC], [_pod("127.64.0.5", False), _pod("127.64.0.6", True),
                          _pod("127.64.0.7", True, app="other")])
    assert r.resolve("10.96.3.4", 443) == ("127.64.0.6", 9443)


def test_no_ready_pod_unknown_port_and_outside_addresses_are_refused():
    r = _resolver([SVC], [_pod("127.64.0.5", False)])
    with pytest.raises(LookupError, match="no ready endpoint"):
        r.resolve("10.96.3.4", 443)
    with pytest.raises(LookupError, match="no port 80"):
        r.resolve("10.96.3.4", 80)
    with pytest.raises(LookupError, match="no Service has ClusterIP"):
        r.resolve("10.96.9.9", 443)
    with pytest.raises(LookupError, match="neither a ClusterIP nor a loopback"):
        r.resolve("192.0.2.1", 10250)
    assert r.resolve("127.0.0.2", 10250) == ("127.0.0.2", 10250)  # a node agent's kubelet API


def test_egress_configuration_uses_the_unix_socket_transport():
    text = config_yaml("/run/x.sock", 33)
    assert "apiserver.k8s.io/v1beta1" in text and "udsName: /run/x.sock" in text
    assert "proxyProtocol: HTTPConnect" in text and "name: cluster" in text
    assert "v1alpha1" in config_yaml("/run/x.sock", 19)
