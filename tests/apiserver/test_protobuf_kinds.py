"""Every built-in kind as ``application/vnd.kubernetes.protobuf``, both ways.

1. The codec against an independent implementation: for every message of the compiled 1.33 schema
   that is a kind (has ``metadata``) or a list, the ``google.protobuf`` library builds a message
   with every field set (nested to a depth), serialises it; the testbed decodes it to JSON, encodes
   that back, and the library parses the result into the same message.
2. The server: every kind 1.33 serves with a ``create`` verb is created from a protobuf body with a
   protobuf ``Accept``, then read back by get and list in protobuf; the answer parses with the
   library as that kind's message and names the object.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from testbed.apiserver import k8sproto, protobuf, transcode
from testbed.apiserver.versions import profile

from .helpers import raw

MINOR = 33
pytestmark = pytest.mark.skipif(
    protobuf.schema(MINOR) is None,
    reason="no compiled Kubernetes API schema for 1.33 in the cache: run `make clients` "
    "(python -m testbed.apiserver.k8sproto fetch 1.33)",
)
PB = transcode.MEDIA_TYPE
F = descriptor_pb2.FieldDescriptorProto


def _pool() -> descriptor_pool.DescriptorPool:
    data, _ = k8sproto.load(MINOR)
    pool = descriptor_pool.DescriptorPool()
    for f in descriptor_pb2.FileDescriptorSet.FromString(data).file:
        pool.Add(f)
    return pool


def _fill(msg: Any, depth: int) -> None:
    """Set every field of ``msg`` to a non-zero value the JSON form can carry exactly."""
    d = msg.DESCRIPTOR
    name = d.full_name
    if name.endswith("meta.v1.Time"):
        msg.seconds = 1_700_000_000
        return
    if name.endswith("meta.v1.MicroTime"):
        msg.seconds, msg.nanos = 1_700_000_000, 123_456_000
        return
    if name.endswith("meta.v1.Duration"):
        msg.duration = 90 * 10**9
        return
    if name.endswith("resource.Quantity"):
        msg.string = "1500m"
        return
    if name.endswith("intstr.IntOrString"):
        msg.type, msg.intVal, msg.strVal = 1, 0, "25%"
        return
    if name.endswith("runtime.RawExtension") or name.endswith("meta.v1.FieldsV1"):
        setattr(msg, d.fields[0].name, b'{"a":1}')
        return
    for f in d.fields:
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            vt = f.message_type.fields_by_name["value"]
            target = getattr(msg, f.name)
            if vt.message_type is None:
                target["k"] = _scalar(vt)
            elif depth > 0:
                _fill(target["k"], depth - 1)
            continue
        if f.message_type is not None:
            if depth <= 0:
                continue
            if f.is_repeated:
                _fill(getattr(msg, f.name).add(), depth - 1)
            else:
                _fill(getattr(msg, f.name), depth - 1)
            continue
        if f.is_repeated:
            getattr(msg, f.name).append(_scalar(f))
        else:
            setattr(msg, f.name, _scalar(f))


def _scalar(f: Any) -> Any:
    if f.type == F.TYPE_STRING:
        return f"v-{f.name}"
    if f.type == F.TYPE_BYTES:
        return b"\x00\xffbytes"
    if f.type == F.TYPE_BOOL:
        return True
    if f.type in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
        return 0.5
    return -(f.number + 7) if f.type in (F.TYPE_INT32, F.TYPE_INT64) else f.number + 7


def _kinds() -> list[str]:
    sch = protobuf.schema(MINOR)
    if sch is None:
        return []
    return sorted(
        n[1:] for n, m in sch.messages.items() if n.startswith(".k8s.io.api.") and "metadata" in m.by_name
    )


@pytest.mark.parametrize("full_name", _kinds())
def test_codec_round_trips_every_kind_against_the_protobuf_library(full_name: str) -> None:
    sch = protobuf.schema(MINOR)
    assert sch is not None
    cls = message_factory.GetMessageClass(_POOL.FindMessageTypeByName(full_name))
    original = cls()
    _fill(original, depth=7)
    wire = original.SerializeToString()
    msg = sch.messages["." + full_name]
    as_json = sch.decode_message(wire, msg)
    again = cls.FromString(sch.encode_message(as_json, msg))
    assert again == original, full_name


_POOL = _pool() if protobuf.schema(MINOR) is not None else None


def test_special_types_have_their_json_shapes() -> None:
    sch = protobuf.schema(MINOR)
    assert sch is not None
    obj = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "d",
            "creationTimestamp": "2024-01-02T03:04:05Z",
            "managedFields": [{"manager": "m", "fieldsV1": {"f:spec": {}}}],
        },
        "spec": {
            "replicas": 0,
            "strategy": {"rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1}},
            "selector": {"matchLabels": {"app": "d"}},
            "template": {
                "spec": {
                    "containers": [{"name": "c", "image": "i", "resources": {"limits": {"cpu": "500m"}}}]
                }
            },
        },
    }
    wire = sch.encode_object(obj)
    assert wire.startswith(b"k8s\x00")
    back = sch.decode_object(wire)
    assert back == {**obj, "spec": {**obj["spec"]}}
    assert back["spec"]["replicas"] == 0  # a pointer: kept although zero
    assert transcode.format_duration(90 * 10**9) == "1m30s"
    assert transcode.format_duration(1_500_000) == "1.5ms"
    assert transcode.parse_duration("1h2m3.5s") == (3723 * 10**9 + 5 * 10**8)
    ev = sch.decode_object(
        sch.encode_object(
            {
                "apiVersion": "events.k8s.io/v1",
                "kind": "Event",
                "metadata": {"name": "e"},
                "eventTime": "2024-01-02T03:04:05.123456Z",
            }
        )
    )
    assert ev["eventTime"] == "2024-01-02T03:04:05.123456Z"


# -- the server: every served kind, created, read and listed in protobuf -------------------------
NOW = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000000Z")
POD_SPEC = {"containers": [{"name": "c", "image": "busybox"}]}
TEMPLATE = {"metadata": {"labels": {"app": "x"}}, "spec": POD_SPEC}
SELECTOR = {"matchLabels": {"app": "x"}}
BODIES: dict[str, dict[str, Any]] = {
    "ControllerRevision": {"revision": 1, "data": {"a": 1}},
    "DaemonSet": {"spec": {"selector": SELECTOR, "template": TEMPLATE}},
    "Deployment": {"spec": {"replicas": 0, "selector": SELECTOR, "template": TEMPLATE}},
    "ReplicaSet": {"spec": {"replicas": 0, "selector": SELECTOR, "template": TEMPLATE}},
    "StatefulSet": {"spec": {"replicas": 0, "serviceName": "s", "selector": SELECTOR, "template": TEMPLATE}},
    "ReplicationController": {"spec": {"replicas": 0, "selector": {"app": "x"}, "template": TEMPLATE}},
    "Job": {"spec": {"template": {"spec": {**POD_SPEC, "restartPolicy": "Never"}}}},
    "CronJob": {
        "spec": {
            "schedule": "*/5 * * * *",
            "suspend": True,
            "jobTemplate": {"spec": {"template": {"spec": {**POD_SPEC, "restartPolicy": "Never"}}}},
        }
    },
    "HorizontalPodAutoscaler": {
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "d"},
            "maxReplicas": 3,
        }
    },
    "Event@events.k8s.io/v1": {
        "eventTime": NOW,
        "reportingController": "t/c",
        "reportingInstance": "t-1",
        "action": "Act",
        "reason": "Why",
        "type": "Normal",
        "regarding": {"kind": "Pod", "name": "p", "namespace": "{ns}"},
    },
    "Event@v1": {
        "involvedObject": {"kind": "Pod", "name": "p", "namespace": "{ns}"},
        "reason": "Why",
        "message": "m",
        "type": "Normal",
        "firstTimestamp": "2024-01-01T00:00:00Z",
    },
    "IngressClass": {"spec": {"controller": "example.com/ingress"}},
    "Ingress": {"spec": {"defaultBackend": {"service": {"name": "s", "port": {"number": 80}}}}},
    "NetworkPolicy": {"spec": {"podSelector": {}}},
    "PodDisruptionBudget": {"spec": {"minAvailable": 1, "selector": SELECTOR}},
    "ClusterRole": {"rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]},
    "Role": {"rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]},
    "ClusterRoleBinding": {
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "User", "name": "u", "apiGroup": "rbac.authorization.k8s.io"}],
    },
    "RoleBinding": {
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "User", "name": "u", "apiGroup": "rbac.authorization.k8s.io"}],
    },
    "CSIDriver": {"spec": {}},
    "CSINode": {"spec": {"drivers": []}},
    "CSIStorageCapacity": {"storageClassName": "sc"},
    "StorageClass": {"provisioner": "example.com/p"},
    "VolumeAttachment": {
        "spec": {"attacher": "example.com/a", "nodeName": "n", "source": {"persistentVolumeName": "pv"}}
    },
    "PriorityClass": {"value": 1000},
    "Lease": {"spec": {"holderIdentity": "h", "leaseDurationSeconds": 15}},
    "RuntimeClass": {"handler": "runc"},
    "EndpointSlice": {"addressType": "IPv4", "endpoints": [{"addresses": ["10.0.0.1"]}]},
    "FlowSchema": {
        "spec": {"priorityLevelConfiguration": {"name": "global-default"}, "matchingPrecedence": 9000}
    },
    "PriorityLevelConfiguration": {
        "spec": {
            "type": "Limited",
            "limited": {"nominalConcurrencyShares": 5, "limitResponse": {"type": "Reject"}},
        }
    },
    "Endpoints": {"subsets": [{"addresses": [{"ip": "10.0.0.1"}], "ports": [{"port": 80}]}]},
    "LimitRange": {"spec": {"limits": [{"type": "Container", "default": {"cpu": "500m"}}]}},
    "Node": {"status": {"capacity": {"cpu": "4"}}},
    "PersistentVolumeClaim": {
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
    },
    "PersistentVolume": {
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "capacity": {"storage": "1Gi"},
            "hostPath": {"path": "/tmp/pv"},
        }
    },
    "Pod": {"spec": POD_SPEC},
    "PodTemplate": {"template": TEMPLATE},
    "ResourceQuota": {"spec": {"hard": {"pods": "10"}}},
    "Secret": {"data": {"k": "AAEC"}, "type": "Opaque"},
    "ServiceAccount": {},
    "ConfigMap": {"data": {"k": "v"}},
    "Service": {"spec": {"ports": [{"port": 80, "targetPort": 8080}], "selector": {"app": "x"}}},
    "Namespace": {},
    "CertificateSigningRequest": None,  # needs a real PKCS#10 request: built in the test
    "MutatingWebhookConfiguration": {},
    "ValidatingWebhookConfiguration": {},
}


def _served() -> list[tuple[str, str, str, bool]]:
    p = profile(MINOR)
    sch = protobuf.schema(MINOR)
    out = []
    for group in ["", *p.groups()]:
        for gv in p.group_versions(group):
            for plural in gv.resources:
                rt = p.resource(group, gv.version, plural)
                if rt is None or rt.virtual or "create" not in rt.verbs or "/" in plural:
                    continue
                if sch is not None:
                    try:
                        sch.message_for(gv.api_version, rt.kind)
                    except transcode.UnknownKind:
                        continue  # APIService, CustomResourceDefinition: other modules (JSON only)
                out.append((gv.api_version, plural, rt.kind, rt.namespaced))
    return out


def _csr() -> str:
    import base64

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    req = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "u")]))
        .sign(key, hashes.SHA256())
    )
    return base64.b64encode(req.public_bytes(Encoding.PEM)).decode()


def _body(api_version: str, kind: str, name: str, ns: str) -> dict[str, Any]:
    spec = BODIES.get(f"{kind}@{api_version}", BODIES.get(kind))
    if kind == "CertificateSigningRequest":
        spec = {"spec": {"request": _csr(), "signerName": "example.com/signer", "usages": ["client auth"]}}
    assert spec is not None or kind in BODIES, f"no minimal body for {kind} ({api_version}) in BODIES"
    return {"apiVersion": api_version, "kind": kind, "metadata": {"name": name}, **_subst(spec or {}, ns)}


def _subst(v: Any, ns: str) -> Any:
    if isinstance(v, dict):
        return {k: _subst(x, ns) for k, x in v.items()}
    if isinstance(v, list):
        return [_subst(x, ns) for x in v]
    return ns if v == "{ns}" else v


@pytest.mark.parametrize("api_version,plural,kind,namespaced", _served())
def test_every_served_kind_created_read_and_listed_in_protobuf(
    testbed, api_version: str, plural: str, kind: str, namespaced: bool
) -> None:
    sch = protobuf.schema(MINOR)
    assert sch is not None and _POOL is not None
    ns = "pbkinds"
    raw(
        testbed,
        "POST",
        "/api/v1/namespaces",
        b'{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"pbkinds"}}',
    )
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    coll = f"{prefix}/namespaces/{ns}/{plural}" if namespaced else f"{prefix}/{plural}"
    name = f"pb-{api_version.replace('/', '-').replace('.', '-')}-{plural}"
    obj = _body(api_version, kind, name, ns)
    headers = {"Accept": f"{PB}, application/json"}
    code, h, data = raw(testbed, "POST", coll, sch.encode_object(obj), content_type=PB, headers=headers)
    assert code == 201, data[:500]
    assert h["Content-Type"] == PB
    msg_type = _POOL.FindMessageTypeByName(sch.message_for(api_version, kind).full_name[1:])
    created = sch.decode_object(data)
    assert created["kind"] == kind and created["metadata"]["name"] == name
    assert created["metadata"]["uid"] and created["metadata"]["creationTimestamp"]
    # the library reads the same bytes as this kind's message
    env = _POOL.FindMessageTypeByName("k8s.io.apimachinery.pkg.runtime.Unknown")
    unknown = message_factory.GetMessageClass(env).FromString(data[4:])
    assert unknown.typeMeta.kind == kind
    lib_obj = message_factory.GetMessageClass(msg_type).FromString(unknown.raw)
    assert lib_obj.metadata.name == name

    code, h, data = raw(testbed, "GET", f"{coll}/{name}", headers={"Accept": PB})
    assert code == 200 and h["Content-Type"] == PB, data[:300]
    got = sch.decode_object(data)
    assert got["metadata"]["uid"] == created["metadata"]["uid"]
    for key, value in obj.items():
        if key not in ("metadata", "apiVersion", "kind", "status") and isinstance(value, dict):
            assert key in got, f"{key} of {kind} lost on the way"
    code, h, data = raw(testbed, "GET", coll, headers={"Accept": PB})
    assert code == 200 and h["Content-Type"] == PB
    listed = sch.decode_object(data)
    assert listed["kind"] == f"{kind}List" and name in [i["metadata"]["name"] for i in listed["items"]]


def test_errors_and_delete_options_in_protobuf(testbed) -> None:
    sch = protobuf.schema(MINOR)
    assert sch is not None
    code, h, data = raw(testbed, "GET", "/api/v1/namespaces/default/configmaps/nope", headers={"Accept": PB})
    assert code == 404 and h["Content-Type"] == PB
    status = sch.decode_object(data)
    assert status["kind"] == "Status" and status["reason"] == "NotFound" and status["code"] == 404
    raw(
        testbed,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        b'{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"gone"}}',
    )
    opts = sch.encode_object(
        {
            "apiVersion": "meta.k8s.io/v1",
            "kind": "DeleteOptions",
            "gracePeriodSeconds": 0,
            "propagationPolicy": "Background",
        }
    )
    code, h, data = raw(
        testbed,
        "DELETE",
        "/api/v1/namespaces/default/configmaps/gone",
        opts,
        content_type=PB,
        headers={"Accept": f"{PB},application/json"},
    )
    assert code == 200, data
    # a client that prefers JSON still gets JSON
    code, h, _ = raw(
        testbed, "GET", "/api/v1/namespaces/default", headers={"Accept": f"application/json,{PB}"}
    )
    assert code == 200 and h["Content-Type"].startswith("application/json")


def test_scale_subresource_in_protobuf(testbed) -> None:
    sch = protobuf.schema(MINOR)
    assert sch is not None
    dep = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "scaled"},
        "spec": {"replicas": 2, "selector": SELECTOR, "template": TEMPLATE},
    }
    code, _, data = raw(
        testbed,
        "POST",
        "/apis/apps/v1/namespaces/default/deployments",
        sch.encode_object(dep),
        content_type=PB,
    )
    assert code == 201, data
    code, h, data = raw(
        testbed, "GET", "/apis/apps/v1/namespaces/default/deployments/scaled/scale", headers={"Accept": PB}
    )
    assert code == 200 and h["Content-Type"] == PB
    scale = sch.decode_object(data)
    assert scale["kind"] == "Scale" and scale["spec"]["replicas"] == 2
    scale["spec"]["replicas"] = 0
    code, _, data = raw(
        testbed,
        "PUT",
        "/apis/apps/v1/namespaces/default/deployments/scaled/scale",
        sch.encode_object(scale),
        content_type=PB,
        headers={"Accept": PB},
    )
    assert code == 200, data
    # a plain int32: zero is left out of the JSON form, as Go's omitempty does
    assert sch.decode_object(data)["spec"].get("replicas", 0) == 0
    code, _, data = raw(testbed, "GET", "/apis/apps/v1/namespaces/default/deployments/scaled")
    assert code == 200 and b'"replicas":0' in data


# -- older minors: their own schema, including kinds later releases removed ----------------------
@pytest.mark.parametrize("minor", [18, 20, 22, 25, 28, 30])
def test_every_kind_each_minor_serves_has_a_protobuf_message(minor: int) -> None:
    sch = protobuf.schema(minor)
    if sch is None:
        pytest.skip(f"no schema cached for 1.{minor}: python -m testbed.apiserver.k8sproto fetch 1.{minor}")
    p = profile(minor)
    missing = []
    for group in ["", *p.groups()]:
        for gv in p.group_versions(group):
            for plural in gv.resources:
                rt = p.resource(group, gv.version, plural)
                if rt is None or "/" in plural or group in ("apiregistration.k8s.io", "apiextensions.k8s.io"):
                    continue
                try:
                    sch.message_for(gv.api_version, rt.kind)
                except transcode.UnknownKind:
                    missing.append(f"{gv.api_version}/{rt.kind}")
    assert not missing


def test_removed_kinds_round_trip_on_the_minor_that_serves_them() -> None:
    from testbed.embedded import EmbeddedTestbed

    sch = protobuf.schema(20)
    if sch is None:
        pytest.skip("no schema cached for 1.20: python -m testbed.apiserver.k8sproto fetch 1.20")
    cron = {
        "apiVersion": "batch/v1beta1",
        "kind": "CronJob",
        "metadata": {"name": "old"},
        "spec": {
            "schedule": "*/5 * * * *",
            "jobTemplate": {"spec": {"template": {"spec": {**POD_SPEC, "restartPolicy": "Never"}}}},
        },
    }
    with EmbeddedTestbed(20) as tb:
        code, h, data = raw(
            tb,
            "POST",
            "/apis/batch/v1beta1/namespaces/default/cronjobs",
            sch.encode_object(cron),
            content_type=PB,
            headers={"Accept": PB},
        )
        assert code == 201, data[:300]
        assert h["Content-Type"] == PB
        got = sch.decode_object(data)
        assert got["apiVersion"] == "batch/v1beta1" and got["spec"]["schedule"] == "*/5 * * * *"


def test_inline_structs_are_merged_into_their_parent(testbed) -> None:
    """``Volume`` embeds ``VolumeSource`` inline: a field in protobuf, flat keys in JSON."""
    sch = protobuf.schema(MINOR)
    assert sch is not None
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "inline"},
        "spec": {**POD_SPEC, "volumes": [{"name": "s", "secret": {"secretName": "x", "defaultMode": 0}}]},
    }
    code, _, data = raw(
        testbed, "POST", "/api/v1/namespaces/default/pods", sch.encode_object(pod), content_type=PB
    )
    assert code == 201, data
    code, _, data = raw(testbed, "GET", "/api/v1/namespaces/default/pods/inline")
    volume = json.loads(data)["spec"]["volumes"][0]
    assert volume == {"name": "s", "secret": {"secretName": "x", "defaultMode": 0}}
    assert "volumeSource" not in volume


def test_field_facts_from_go_struct_tags() -> None:
    src = (
        "type Thing struct {\n"
        '\tName string `json:"name" protobuf:"bytes,1,opt,name=name"`\n'
        '\tCount *int32 `json:"count,omitempty" protobuf:"varint,2,opt,name=count"`\n'
        '\tSource `json:",inline" protobuf:"bytes,3,opt,name=source"`\n'
        '\tNote string `json:"note,omitempty" protobuf:"bytes,4,opt,name=note"`\n'
        '\tLocal string `json:"-"`\n'
        "}\n"
    )
    assert k8sproto.field_facts(src) == {"Thing": {"pointer": [2], "always": [1], "inline": [3]}}
