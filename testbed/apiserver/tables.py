"""Server-side printing: ``meta.k8s.io`` Table responses for ``kubectl get``.

Columns follow the real apiserver's printers for the kinds the project touches; every other kind
gets the real default of Name and Created At.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

Column = tuple[str, str, str, int]  # name, type, description, priority (1 = wide only)


def _age(meta: dict[str, Any]) -> str:
    ts = meta.get("creationTimestamp")
    if not ts:
        return "<unknown>"
    try:
        then = dt.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        return "<unknown>"
    return human_duration((dt.datetime.now(dt.UTC) - then).total_seconds())


def human_duration(seconds: float) -> str:
    s = int(max(seconds, 0))
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    h = m // 60
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    d = h // 24
    if d < 8:
        return f"{d}d{h % 24}h" if h % 24 else f"{d}d"
    if d < 365 * 2:
        return f"{d}d"
    return f"{d // 365}y{d % 365}d"


def _pod_row(o: dict[str, Any]) -> list[Any]:
    spec, status = o.get("spec", {}), o.get("status", {})
    cs = status.get("containerStatuses") or []
    total = len(spec.get("containers") or [])
    ready = sum(1 for c in cs if c.get("ready"))
    restarts = sum(int(c.get("restartCount", 0)) for c in cs)
    reason = status.get("reason") or status.get("phase") or "Unknown"
    for c in cs:
        st = c.get("state") or {}
        if "waiting" in st and st["waiting"].get("reason"):
            reason = st["waiting"]["reason"]
        elif "terminated" in st:
            t = st["terminated"]
            reason = t.get("reason") or (
                f"Signal:{t['signal']}" if t.get("signal") else f"ExitCode:{t.get('exitCode', 0)}"
            )
    if o["metadata"].get("deletionTimestamp"):
        reason = "Terminating"
    gates = spec.get("readinessGates") or []
    return [
        o["metadata"]["name"],
        f"{ready}/{total}",
        reason,
        restarts,
        _age(o["metadata"]),
        status.get("podIP") or "<none>",
        spec.get("nodeName") or "<none>",
        status.get("nominatedNodeName") or "<none>",
        "<none>" if not gates else f"{len(gates)}",
    ]


def _node_row(o: dict[str, Any]) -> list[Any]:
    status = o.get("status", {})
    conds = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    st = "Ready" if conds.get("Ready") == "True" else ("NotReady" if "Ready" in conds else "Unknown")
    if o.get("spec", {}).get("unschedulable"):
        st += ",SchedulingDisabled"
    labels = o["metadata"].get("labels") or {}
    roles = sorted(k.split("/", 1)[1] for k in labels if k.startswith("node-role.kubernetes.io/"))
    info = status.get("nodeInfo") or {}
    addrs = {a.get("type"): a.get("address") for a in status.get("addresses") or []}
    return [
        o["metadata"]["name"],
        st,
        ",".join(roles) or "<none>",
        _age(o["metadata"]),
        info.get("kubeletVersion", ""),
        addrs.get("InternalIP", "<none>"),
        addrs.get("ExternalIP", "<none>"),
        info.get("osImage", ""),
        info.get("kernelVersion", ""),
        info.get("containerRuntimeVersion", ""),
    ]


def _workload_row(o: dict[str, Any]) -> list[Any]:
    s, st = o.get("spec", {}), o.get("status", {})
    return [
        o["metadata"]["name"],
        f"{st.get('readyReplicas', 0)}/{s.get('replicas', 0)}",
        st.get("updatedReplicas", 0),
        st.get("availableReplicas", 0),
        _age(o["metadata"]),
    ]


def _ds_row(o: dict[str, Any]) -> list[Any]:
    st = o.get("status", {})
    sel = (o.get("spec", {}).get("template", {}).get("spec", {}) or {}).get("nodeSelector") or {}
    return [
        o["metadata"]["name"],
        st.get("desiredNumberScheduled", 0),
        st.get("currentNumberScheduled", 0),
        st.get("numberReady", 0),
        st.get("updatedNumberScheduled", 0),
        st.get("numberAvailable", 0),
        ",".join(f"{k}={v}" for k, v in sel.items()) or "<none>",
        _age(o["metadata"]),
    ]


def _rs_row(o: dict[str, Any]) -> list[Any]:
    s, st = o.get("spec", {}), o.get("status", {})
    return [
        o["metadata"]["name"],
        s.get("replicas", 0),
        st.get("replicas", 0),
        st.get("readyReplicas", 0),
        _age(o["metadata"]),
    ]


def _seconds(ts: str | None) -> float | None:
    try:
        return dt.datetime.strptime(ts or "", "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC).timestamp()
    except ValueError:
        return None


def _job_duration(st: dict[str, Any]) -> str:
    """kubectl's DURATION: start to completion, or start to now while running; blank before start."""
    start = _seconds(st.get("startTime"))
    if start is None:
        return ""
    end = _seconds(st.get("completionTime"))
    return human_duration((end if end is not None else dt.datetime.now(dt.UTC).timestamp()) - start)


def _job_row(o: dict[str, Any]) -> list[Any]:
    s, st = o.get("spec", {}), o.get("status", {})
    return [
        o["metadata"]["name"],
        f"{st.get('succeeded', 0)}/{s.get('completions', 1)}",
        _job_duration(st),
        _age(o["metadata"]),
    ]


def _svc_row(o: dict[str, Any]) -> list[Any]:
    s = o.get("spec", {})
    ports = ",".join(f"{p.get('port')}/{p.get('protocol', 'TCP')}" for p in s.get("ports") or [])
    return [
        o["metadata"]["name"],
        s.get("type", "ClusterIP"),
        s.get("clusterIP", "<none>"),
        "<none>",
        ports or "<none>",
        _age(o["metadata"]),
    ]


def _event_row(o: dict[str, Any]) -> list[Any]:
    inv = o.get("involvedObject") or o.get("regarding") or {}
    last = o.get("lastTimestamp") or o.get("eventTime") or o["metadata"].get("creationTimestamp")
    return [
        _age({"creationTimestamp": last}) if last else "<unknown>",
        o.get("type", ""),
        o.get("reason", ""),
        f"{(inv.get('kind') or '').lower()}/{inv.get('name', '')}",
        o.get("message") or o.get("note", ""),
    ]


def _ns_row(o: dict[str, Any]) -> list[Any]:
    return [o["metadata"]["name"], o.get("status", {}).get("phase", "Active"), _age(o["metadata"])]


def _cm_row(o: dict[str, Any]) -> list[Any]:
    return [
        o["metadata"]["name"],
        len(o.get("data") or {}) + len(o.get("binaryData") or {}),
        _age(o["metadata"]),
    ]


def _secret_row(o: dict[str, Any]) -> list[Any]:
    return [o["metadata"]["name"], o.get("type", "Opaque"), len(o.get("data") or {}), _age(o["metadata"])]


def _lease_row(o: dict[str, Any]) -> list[Any]:
    return [o["metadata"]["name"], o.get("spec", {}).get("holderIdentity", ""), _age(o["metadata"])]


def _default_row(o: dict[str, Any]) -> list[Any]:
    return [o["metadata"]["name"], o["metadata"].get("creationTimestamp", "")]


_S, _I = "string", "integer"
_TABLES: dict[str, tuple[list[Column], Callable[[dict[str, Any]], list[Any]]]] = {
    "pods": (
        [
            ("Name", _S, "", 0),
            ("Ready", _S, "", 0),
            ("Status", _S, "", 0),
            ("Restarts", _S, "", 0),
            ("Age", _S, "", 0),
            ("IP", _S, "", 1),
            ("Node", _S, "", 1),
            ("Nominated Node", _S, "", 1),
            ("Readiness Gates", _S, "", 1),
        ],
        _pod_row,
    ),
    "nodes": (
        [
            ("Name", _S, "", 0),
            ("Status", _S, "", 0),
            ("Roles", _S, "", 0),
            ("Age", _S, "", 0),
            ("Version", _S, "", 0),
            ("Internal-IP", _S, "", 1),
            ("External-IP", _S, "", 1),
            ("OS-Image", _S, "", 1),
            ("Kernel-Version", _S, "", 1),
            ("Container-Runtime", _S, "", 1),
        ],
        _node_row,
    ),
    "deployments.apps": (
        [
            ("Name", _S, "", 0),
            ("Ready", _S, "", 0),
            ("Up-to-date", _I, "", 0),
            ("Available", _I, "", 0),
            ("Age", _S, "", 0),
        ],
        _workload_row,
    ),
    "statefulsets.apps": (
        [("Name", _S, "", 0), ("Ready", _S, "", 0), ("Age", _S, "", 0)],
        lambda o: [*_workload_row(o)[:2], _workload_row(o)[4]],
    ),
    "daemonsets.apps": (
        [
            ("Name", _S, "", 0),
            ("Desired", _I, "", 0),
            ("Current", _I, "", 0),
            ("Ready", _I, "", 0),
            ("Up-to-date", _I, "", 0),
            ("Available", _I, "", 0),
            ("Node Selector", _S, "", 0),
            ("Age", _S, "", 0),
        ],
        _ds_row,
    ),
    "replicasets.apps": (
        [
            ("Name", _S, "", 0),
            ("Desired", _I, "", 0),
            ("Current", _I, "", 0),
            ("Ready", _I, "", 0),
            ("Age", _S, "", 0),
        ],
        _rs_row,
    ),
    "jobs.batch": (
        [("Name", _S, "", 0), ("Completions", _S, "", 0), ("Duration", _S, "", 0), ("Age", _S, "", 0)],
        _job_row,
    ),
    "services": (
        [
            ("Name", _S, "", 0),
            ("Type", _S, "", 0),
            ("Cluster-IP", _S, "", 0),
            ("External-IP", _S, "", 0),
            ("Port(s)", _S, "", 0),
            ("Age", _S, "", 0),
        ],
        _svc_row,
    ),
    "events": (
        [
            ("Last Seen", _S, "", 0),
            ("Type", _S, "", 0),
            ("Reason", _S, "", 0),
            ("Object", _S, "", 0),
            ("Message", _S, "", 0),
        ],
        _event_row,
    ),
    "namespaces": ([("Name", _S, "", 0), ("Status", _S, "", 0), ("Age", _S, "", 0)], _ns_row),
    "configmaps": ([("Name", _S, "", 0), ("Data", _I, "", 0), ("Age", _S, "", 0)], _cm_row),
    "secrets": (
        [("Name", _S, "", 0), ("Type", _S, "", 0), ("Data", _I, "", 0), ("Age", _S, "", 0)],
        _secret_row,
    ),
    "leases.coordination.k8s.io": (
        [("Name", _S, "", 0), ("Holder", _S, "", 0), ("Age", _S, "", 0)],
        _lease_row,
    ),
}
_DEFAULT: tuple[list[Column], Callable[[dict[str, Any]], list[Any]]] = (
    [
        ("Name", _S, "Name must be unique within a namespace.", 0),
        (
            "Created At",
            "date",
            "CreationTimestamp is a timestamp representing the server time when this object was created.",
            0,
        ),
    ],
    _default_row,
)


def table(
    store_key: str,
    objects: list[dict[str, Any]],
    list_meta: dict[str, Any],
    include_object: str,
    table_version: str,
) -> dict[str, Any]:
    cols, row_fn = _TABLES.get(store_key, _DEFAULT)
    rows = []
    for o in objects:
        row: dict[str, Any] = {"cells": row_fn(o)}
        if include_object == "Object":
            row["object"] = o
        elif include_object != "None":
            row["object"] = {
                "kind": "PartialObjectMetadata",
                "apiVersion": f"meta.k8s.io/{table_version}",
                "metadata": o["metadata"],
            }
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": f"meta.k8s.io/{table_version}",
        "metadata": list_meta,
        "columnDefinitions": [
            {"name": n, "type": t, "format": "name" if n == "Name" else "", "description": d, "priority": p}
            for n, t, d, p in cols
        ],
        "rows": rows,
    }
