"""The fidelity corpus and its comparison, without servers."""

from __future__ import annotations

from testbed.controlplane.fidelity import Answer, Case, compare, corpus, normalise


def test_the_corpus_is_large_and_each_case_named_once():
    cases = corpus()
    ids = [c.id for c in cases]
    assert len(cases) >= 300
    assert len(ids) == len(set(ids))
    kinds = {i.split("/")[0] for i in ids}
    assert {"pods", "deployments", "jobs", "roles", "mutatingwebhookconfigurations"} <= kinds
    methods = {c.method for c in cases}
    assert methods == {"GET", "POST", "PUT", "PATCH", "DELETE"}
    patch_types = {c.content_type for c in cases if c.method == "PATCH"}
    assert len(patch_types) == 3


def test_normalise_removes_what_differs_between_any_two_servers():
    a = {"kind": "ConfigMap", "metadata": {"name": "x", "uid": "1", "resourceVersion": "7",
                                           "creationTimestamp": "2026-12-02T07:00:00Z",
                                           "managedFields": [{"manager": "m"}]},
         "spec": {"clusterIP": "10.96.0.10"}, "status": {"phase": "Pending"}}
    b = {"kind": "ConfigMap", "metadata": {"name": "x", "uid": "2", "resourceVersion": "99",
                                           "creationTimestamp": "2026-12-02T08:00:00.123456Z"},
         "spec": {"clusterIP": "10.96.7.7"}, "status": {"phase": "Running"}}
    assert normalise(a, ("status",)) == normalise(b, ("status",))
    assert normalise(a) != normalise(b)  # status kept unless the case ignores it
    lst = {"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "5"},
           "items": [{"metadata": {"name": "b"}}, {"metadata": {"name": "a"}}]}
    assert normalise(lst) == {"kind": "PodList", "apiVersion": "v1", "items": ["a", "b"]}


def test_compare_counts_identical_cases_and_lists_the_rest():
    cases = [Case("one", "GET", "/x"), Case("two", "GET", "/y")]
    same = Answer(200, {"kind": "Thing", "metadata": {"uid": "a"}})
    res = compare("1.33", cases, [same, Answer(404, {"reason": "NotFound"})],
                  [Answer(200, {"kind": "Thing", "metadata": {"uid": "b"}}), Answer(200, {})])
    assert (res.total, res.identical, res.fraction) == (2, 1, 0.5)
    assert [d["case"] for d in res.differences] == ["two"]


def test_normalise_hides_uids_in_values_and_random_volume_names():
    a = {"labels": {"controller-uid": "6d015d9d-3365-43ce-b133-75cafe8f796c"}, "v": "kube-api-access-k4vm9"}
    b = {"labels": {"controller-uid": "03a166c0-a658-4f2d-86aa-9701e8f2d5ab"}, "v": "kube-api-access-lt8b8"}
    assert normalise(a) == normalise(b)
    assert normalise({"v": "kube-api-access-k4vm9x"}) != normalise({"v": "kube-api-access-lt8b8y"})
