"""Label and field selector vectors: every operator, whitespace, errors with the real texts."""

from __future__ import annotations

import pytest

from testbed.apiserver.errors import APIError
from testbed.apiserver.selectors import (
    label_selector_from_object,
    parse_field_selector,
    parse_label_selector,
)

LABELS = {"app": "web", "tier": "front", "n": "5", "empty": ""}


@pytest.mark.parametrize(("text", "matches"), [
    ("", True),
    ("app=web", True),
    ("app==web", True),
    ("app!=web", False),
    ("app!=db", True),
    ("missing!=x", True),
    ("app in (web,db)", True),
    ("app in (db)", False),
    ("app notin (db)", True),
    ("missing notin (db)", True),
    ("app", True),
    ("missing", False),
    ("!missing", True),
    ("!app", False),
    ("n>4", True),
    ("n>5", False),
    ("n<6", True),
    ("app>1", False),
    ("empty in ()", True),
    ("empty=", True),
    ("  app = web ,  tier in ( front ) ", True),
    ("app=web,tier=back", False),
])
def test_label_selector_matching(text: str, matches: bool) -> None:
    assert parse_label_selector(text).matches(LABELS) is matches


def test_label_selector_string_form_sorted_by_key() -> None:
    assert str(parse_label_selector("z=1,a in (y,x),!b")) == "a in (x,y),!b,z=1"


@pytest.mark.parametrize(("text", "message"), [
    ("a b", "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt"),
    ("a=b=c", "found '=', expected: ',' or 'end of string'"),
    ("a,", "found '', expected: identifier after ','"),
    ("=a", "found '=', expected: !, identifier, or 'end of string'"),
    ("a in x", "unable to parse requirement: found 'x' expected: '('"),
    ("a in (b c)", "unable to parse requirement: found 'c', expected: ',' or ')'"),
    ("!", "unable to parse requirement: found '', expected: identifier"),
    ("a>x", "unable to parse requirement: values[0]: Invalid value: \"x\": for 'Gt', 'Lt' operators, "
            "the value must be an integer"),
    ("app:monolith", "unable to parse requirement: <nil>: Invalid value: \"app:monolith\": name part must "
                     "consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
                     "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for "
                     "validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"),
    ("k=" + "v" * 64, "unable to parse requirement: values[0][k]: Invalid value: \"" + "v" * 64
     + "\": must be no more than 63 characters"),
])
def test_label_selector_errors(text: str, message: str) -> None:
    with pytest.raises(APIError) as exc:
        parse_label_selector(text)
    assert exc.value.code == 400
    assert exc.value.reason == "BadRequest"
    assert exc.value.message == message


def test_label_selector_prefix_error() -> None:
    with pytest.raises(APIError) as exc:
        parse_label_selector("app.kubernetes_io/name=x")
    assert exc.value.message.startswith(
        'unable to parse requirement: <nil>: Invalid value: "app.kubernetes_io/name": prefix part a '
        "lowercase RFC 1123 subdomain must consist of")


def test_selector_from_object() -> None:
    assert label_selector_from_object({}).matches({"x": "y"})
    assert label_selector_from_object({}).empty()
    assert not label_selector_from_object(None).matches({})
    assert label_selector_from_object(None, nil_matches=True).matches({})
    sel = label_selector_from_object({
        "matchLabels": {"app": "web"},
        "matchExpressions": [{"key": "tier", "operator": "In", "values": ["front", "back"]},
                             {"key": "legacy", "operator": "DoesNotExist"}],
    })
    assert sel.matches(LABELS)
    assert not sel.matches({"app": "web", "tier": "front", "legacy": "1"})
    assert sel.requires_exact_match("app") == "web"
    with pytest.raises(APIError) as exc:
        label_selector_from_object({"matchExpressions": [{"key": "a", "operator": "Has"}]})
    assert exc.value.message == '"Has" is not a valid label selector operator'


def _pod(node: str | None = None, phase: str = "Pending") -> dict:
    spec: dict = {"containers": [{"name": "c", "image": "i"}], "restartPolicy": "Always"}
    if node:
        spec["nodeName"] = node
    return {"metadata": {"name": "p1", "namespace": "ns"}, "spec": spec, "status": {"phase": phase}}


def test_field_selector_pods() -> None:
    sel = parse_field_selector("spec.nodeName=n1,status.phase!=Failed", "", "pods")
    assert sel.matches(_pod("n1"))
    assert not sel.matches(_pod("n2"))
    assert not sel.matches(_pod("n1", "Failed"))
    assert sel.requirement_for("spec.nodeName") == "n1"
    assert sel.requirement_for("status.phase") is None
    # an unscheduled pod's nodeName reads as ""
    assert parse_field_selector("spec.nodeName=", "", "pods").matches(_pod())
    assert parse_field_selector("spec.nodeName==n1", "", "pods").matches(_pod("n1"))
    # legacy alias
    assert parse_field_selector("spec.host=n1", "", "pods").requirement_for("spec.nodeName") == "n1"
    assert parse_field_selector("spec.hostNetwork=false", "", "pods").matches(_pod())
    assert parse_field_selector("metadata.name=p1,metadata.namespace=ns", "", "pods").matches(_pod())


def test_field_selector_other_kinds() -> None:
    node = {"metadata": {"name": "n1"}, "spec": {}}
    assert parse_field_selector("spec.unschedulable=false", "", "nodes").matches(node)
    event = {"metadata": {"name": "e", "namespace": "ns"},
             "involvedObject": {"kind": "Pod", "name": "p1", "namespace": "ns"},
             "reason": "Scheduled", "type": "Normal", "source": {"component": "sched"}}
    sel = parse_field_selector("involvedObject.kind=Pod,involvedObject.name=p1,reason=Scheduled,source=sched",
                               "", "events")
    assert sel.matches(event)
    new_event = {"metadata": {"name": "e", "namespace": "ns"}, "regarding": {"kind": "Pod", "name": "p1"},
                 "reportingController": "kubelet", "reason": "Pulled"}
    assert parse_field_selector("regarding.name=p1,reportingController=kubelet", "events.k8s.io",
                                "events").matches(new_event)
    assert parse_field_selector("type=kubernetes.io/tls", "", "secrets").matches(
        {"metadata": {"name": "s"}, "type": "kubernetes.io/tls"})
    assert parse_field_selector("status.successful=0", "batch", "jobs").matches({"metadata": {"name": "j"}})
    assert parse_field_selector("status.phase=Active", "", "namespaces").matches(
        {"metadata": {"name": "x"}, "status": {"phase": "Active"}})


def test_field_selector_escapes() -> None:
    sel = parse_field_selector(r"metadata.name=a\,b", "", "configmaps")
    assert sel.matches({"metadata": {"name": "a,b"}})


@pytest.mark.parametrize(("text", "group", "plural", "message"), [
    ("spec.foo=x", "", "pods", "field label not supported: spec.foo"),
    ("metadata.namespace=x", "", "nodes", "field label not supported: metadata.namespace"),
    ("status.replicas=1", "apps", "replicasets",
     '"status.replicas" is not a known field selector: only "metadata.name", "metadata.namespace"'),
    ("status.active=1", "batch", "jobs", 'field label "status.active" not supported for Job'),
    ("involvedObject.name=x", "events.k8s.io", "events", "field label not supported: involvedObject.name"),
    ("foo", "", "pods", "invalid selector: 'foo'; can't understand 'foo'"),
    (r"metadata.name=a\x", "", "pods", "invalid field selector: invalid escape sequence: \\x"),
    ("metadata.name=a=b", "", "pods", "invalid field selector: unescaped character in value: 61"),
])
def test_field_selector_errors(text: str, group: str, plural: str, message: str) -> None:
    with pytest.raises(APIError) as exc:
        parse_field_selector(text, group, plural)
    assert exc.value.code == 400
    assert exc.value.message == message


@pytest.mark.parametrize("text", ["a!=", "a=", "a=="])
def test_empty_exact_value_is_a_valid_selector(text: str) -> None:
    """Issue 14 listed ``a!=`` as accepted where Kubernetes refuses it; it does not refuse it:
    k8s.io/apimachinery labels.Parser.parseExactValue takes end-of-string or ',' after an operator as
    the empty value, so ``a!=`` selects objects whose label a is missing or not empty, ``a=`` those
    with a present and empty."""
    sel = parse_label_selector(text)
    if text.startswith("a!="):
        assert sel.matches({"a": "x"}) and sel.matches({}) and not sel.matches({"a": ""})
    else:
        assert sel.matches({"a": ""}) and not sel.matches({"a": "x"}) and not sel.matches({})
