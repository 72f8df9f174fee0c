"""The chart's values contract: values.schema.json rejects unknown keys (naming them) and every upstream
HAMi v2.10 key is either honoured with upstream's meaning or rejected; each supported key changes the
rendered objects as upstream's does; upstream-style and user override files render (real helm)."""

from __future__ import annotations

import base64
import functools
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from testbed.clients import helm_path, helm_skip_reason

CHART = Path(__file__).resolve().parents[2] / "hami_stack" / "chart"
DATA = Path(__file__).resolve().parent / "data"
HELM = helm_path(major=3)
HELM4 = helm_path(major=4)
NS = "hami-system"
SCHEMA = json.loads((CHART / "values.schema.json").read_text())

pytestmark = [pytest.mark.helm, pytest.mark.skipif(HELM is None, reason=helm_skip_reason(3))]

Docs = dict[tuple[str, str], dict[str, Any]]


def helm_template(
    *,
    sets: tuple[str, ...] = (),
    files: tuple[str, ...] = (),
    minor: int = 33,
    helm: Path | None = None,
    extra: tuple[str, ...] = (),
) -> subprocess.CompletedProcess[str]:
    args = [
        str(helm or HELM),
        "template",
        "rel",
        str(CHART),
        "--namespace",
        NS,
        "--kube-version",
        f"1.{minor}.0",
    ]
    for f in files:
        args += ["-f", f]
    for s in sets:
        args += ["--set-json", s]
    return subprocess.run([*args, *extra], capture_output=True, text=True)


@functools.cache
def render(*sets: str, files: tuple[str, ...] = (), minor: int = 33, extra: tuple[str, ...] = ()) -> Docs:
    proc = helm_template(sets=sets, files=files, minor=minor, extra=extra)
    assert proc.returncode == 0, proc.stderr
    return {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(proc.stdout) if d}


# -- accessors -----------------------------------------------------------------------------------


def pod(docs: Docs, kind: str) -> dict[str, Any]:
    name = "rel-hami-scheduler" if kind == "Deployment" else "rel-hami-device-plugin"
    return docs[(kind, name)]["spec"]["template"]["spec"]


def cont(docs: Docs, name: str) -> dict[str, Any]:
    kind = "Deployment" if name in ("kube-scheduler", "vgpu-scheduler-extender") else "DaemonSet"
    return next(c for c in pod(docs, kind)["containers"] if c["name"] == name)


def env(docs: Docs, name: str) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in cont(docs, name).get("env") or []}


def devcfg(docs: Docs) -> dict[str, Any]:
    return yaml.safe_load(docs[("ConfigMap", "rel-hami-scheduler-device")]["data"]["device-config.yaml"])


def schedcfg(docs: Docs) -> dict[str, Any]:
    return yaml.safe_load(docs[("ConfigMap", "rel-hami-scheduler")]["data"]["config.yaml"])


def managed(docs: Docs) -> set[str]:
    return {m["name"] for m in schedcfg(docs)["extenders"][0]["managedResources"]}


def hook(docs: Docs) -> dict[str, Any]:
    return docs[("MutatingWebhookConfiguration", "rel-hami-webhook")]["webhooks"][0]


def svc(docs: Docs, name: str = "rel-hami-scheduler") -> dict[str, Any]:
    return docs[("Service", name)]


def images(docs: Docs) -> dict[str, str]:
    return {
        c["name"]: c["image"] for kind in ("Deployment", "DaemonSet") for c in pod(docs, kind)["containers"]
    }


# -- schema --------------------------------------------------------------------------------------


def _schema_paths(node: dict[str, Any], prefix: str = "") -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for key, sub in (node.get("properties") or {}).items():
        path = f"{prefix}{key}"
        out[path] = sub
        out.update(_schema_paths(sub, path + "."))
    return out


SCHEMA_PATHS = _schema_paths(SCHEMA)
UPSTREAM_KEYS = [
    line.strip()
    for line in (DATA / "upstream_values_keys.txt").read_text().splitlines()
    if line.strip() and not line.startswith("#")
]
REJECTED = {path: sub["x-rejected"] for path, sub in SCHEMA_PATHS.items() if "x-rejected" in sub}


def _objects_closed(node: dict[str, Any], path: str = "") -> list[str]:
    """Paths of object schemas of ours that would let an unknown key through."""
    bad = []
    if node.get("properties") is not None and node.get("additionalProperties") is not False:
        bad.append(path or "(root)")
    for key, sub in (node.get("properties") or {}).items():
        bad += _objects_closed(sub, f"{path}.{key}".lstrip("."))
    return bad


def test_every_level_of_ours_rejects_unknown_keys() -> None:
    assert SCHEMA["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert _objects_closed(SCHEMA) == []


def _known(path: str) -> bool:
    """A key of the schema, or a key inside a value the schema takes whole (a label map, a Kubernetes
    object such as securityContext, a const)."""
    parts = path.split(".")
    for i in range(1, len(parts) + 1):
        sub = SCHEMA_PATHS.get(".".join(parts[:i]))
        if sub is None:
            return False
        if sub.get("properties") is None:
            return True
    return True


def test_every_upstream_key_is_known_to_the_schema() -> None:
    assert len(UPSTREAM_KEYS) == 245
    assert [k for k in UPSTREAM_KEYS if not _known(k)] == []


def test_default_values_follow_the_schema_key_set() -> None:
    """values.yaml has no key the schema lacks (helm validates it too, but this names the key)."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def walk(node: Any, prefix: str) -> list[str]:
        if not isinstance(node, dict):
            return []
        out = []
        for k, v in node.items():
            path = f"{prefix}{k}"
            if path not in SCHEMA_PATHS:
                out.append(path)
            elif SCHEMA_PATHS[path].get("properties") is not None:
                out += walk(v, path + ".")
        return out

    assert walk(values, "") == []


def _helms() -> list[Path]:
    return [h for h in (HELM, HELM4) if h is not None]


def _names_key(stderr: str, path: str) -> bool:
    """Helm 3 writes dotted paths, Helm 4 JSON pointers."""
    return path in stderr or "/" + path.replace(".", "/") in stderr


@pytest.mark.parametrize(
    ("setting", "path", "key"),
    [
        ("bogusTopLevel=1", "", "bogusTopLevel"),
        ("scheduler.extender.imagee={}", "scheduler.extender", "imagee"),
        ('scheduler.admissionWebhook.failurPolicy="Fail"', "scheduler.admissionWebhook", "failurPolicy"),
        ("devicePlugin.service.nodePort=30000", "devicePlugin.service", "nodePort"),
        ('devices.nvidia.gpuCorePolcy="force"', "devices.nvidia", "gpuCorePolcy"),
        ('global.imageRegistery="x"', "global", "imageRegistery"),
    ],
)
def test_unknown_key_fails_naming_it(setting: str, path: str, key: str) -> None:
    for helm in _helms():
        proc = helm_template(sets=(setting,), helm=helm)
        assert proc.returncode != 0, f"{helm}: {setting} rendered"
        assert key in proc.stderr and (not path or _names_key(proc.stderr, path)), proc.stderr


def _bad_value(schema: dict[str, Any]) -> Any:
    """A value the schema refuses for a key accepted only at its inert value."""
    if "const" in schema:
        c = schema["const"]
        if isinstance(c, bool):
            return not c
        if isinstance(c, dict):
            return {**c, "registry": "mirror.example"}
        if isinstance(c, list):
            return [{"key": "x", "operator": "Exists"}]
        if isinstance(c, int):
            return c + 1
        return c + "-other" if c else "other"
    if schema.get("type") == "null":
        return "/opt/x"
    if schema.get("maxProperties") == 0:
        return {"gpu": "on"}
    raise AssertionError(f"no bad value for {schema}")


@pytest.mark.parametrize("path", sorted(REJECTED))
def test_rejected_upstream_key_fails_naming_it_and_is_documented(path: str) -> None:
    proc = helm_template(sets=(f"{path}={json.dumps(_bad_value(SCHEMA_PATHS[path]))}",))
    assert proc.returncode != 0 and _names_key(proc.stderr, path), proc.stderr
    readme = (CHART / "README.md").read_text()
    assert f"`{path}`" in readme, f"{path} is rejected but README.md does not list it"


# keys upstream's templates read although its values.yaml only mentions them in comments
UPSTREAM_TEMPLATE_ONLY = {"scheduler.nodeLabelSelector", "scheduler.nodeSelector"}


def test_rejected_keys_are_upstream_keys() -> None:
    assert sorted(set(REJECTED) - set(UPSTREAM_KEYS) - UPSTREAM_TEMPLATE_ONLY) == []


# -- upstream-style and user files -----------------------------------------------------------------


@pytest.mark.parametrize("minor", [18, 21, 22, 25, 26, 33])
def test_upstream_style_values_render(minor: int) -> None:
    docs = render(files=(str(DATA / "upstream_style_values.yaml"),), minor=minor)
    assert images(docs)["vgpu-scheduler-extender"] == "docker.io/projecthami/hami:v2.10.0"
    assert images(docs)["kube-scheduler"] == (
        f"registry.cn-hangzhou.aliyuncs.com/google_containers/kube-scheduler:v1.{minor}.0"
    )
    ks = cont(docs, "kube-scheduler")["args"]
    # upstream's list carries the config flag and -v=4: each reaches kube-scheduler once
    flag = "--config=/config/config.yaml" if minor >= 22 else "--policy-config-file=/config/config.json"
    assert ks.count(flag) == 1 and ks.count("-v=4") == 1, ks
    ext = cont(docs, "vgpu-scheduler-extender")["args"]
    assert "--debug" not in ext and ext.count("-v=4") == 1
    assert svc(docs)["spec"]["type"] == "NodePort"  # upstream's file asks for NodePort
    node_cfg = json.loads(docs[("ConfigMap", "rel-hami-device-plugin")]["data"]["config.json"])
    assert node_cfg["nodeconfig"][0]["name"] == "gpu-node-1"
    assert hook(docs)["failurePolicy"] == "Ignore"  # upstream's file asks for Ignore


def test_upstream_style_values_render_with_helm4() -> None:
    if HELM4 is None:
        pytest.skip(helm_skip_reason(4))
    proc = helm_template(files=(str(DATA / "upstream_style_values.yaml"),), helm=HELM4)
    assert proc.returncode == 0, proc.stderr


def test_user_override_file_renders() -> None:
    docs = render(files=(str(DATA / "user_override_values.yaml"),))
    imgs = images(docs)
    assert imgs["kube-scheduler"] == "registry.example.internal/mirrors/kube-scheduler:v1.33.1"
    assert imgs["vgpu-scheduler-extender"] == "registry.example.internal/platform/hami:2024.11"
    assert imgs["vgpu-monitor"] == "registry.example.internal/hami-conformance/hami:0.1.0"
    assert pod(docs, "Deployment")["imagePullSecrets"] == [{"name": "regcred"}, {"name": "scheduler-pull"}]
    assert pod(docs, "DaemonSet")["imagePullSecrets"] == [{"name": "regcred"}]
    assert docs[("Deployment", "rel-hami-scheduler")]["spec"]["replicas"] == 2
    assert cont(docs, "kube-scheduler")["args"] == ["--config=/config/config.yaml", "-v=2"]
    assert cont(docs, "kube-scheduler")["resources"]["limits"] == {"memory": "512Mi"}
    ext = cont(docs, "vgpu-scheduler-extender")["args"]
    assert "-v=3" in ext and "--debug" not in ext and "--gpu-scheduler-policy=binpack" in ext
    ns_sel = hook(docs)["namespaceSelector"]
    assert ns_sel["matchLabels"] == {"gpu-workloads": "enabled"}
    assert ns_sel["matchExpressions"][1]["values"] == [NS, "kube-system", "monitoring"]
    assert hook(docs)["objectSelector"] == {
        "matchExpressions": [{"key": "ci.example.com/dry-run", "operator": "DoesNotExist"}]
    }
    assert docs[("RuntimeClass", "nvidia")]["handler"] == "nvidia"
    assert docs[("DaemonSet", "rel-hami-device-plugin")]["spec"]["updateStrategy"]["rollingUpdate"] == {
        "maxUnavailable": "25%"
    }
    assert env(docs, "device-plugin")["HTTPS_PROXY"] == "http://proxy.example.internal:3128"
    assert devcfg(docs)["nvidia"]["deviceSplitCount"] == 4
    assert "enflame.com/gcu" not in managed(docs)
    assert docs[("Deployment", "rel-hami-scheduler")]["metadata"]["labels"]["team"] == "ml-platform"


# -- devicePlugin.nodeConfiguration.config reaches the plugin ------------------------------------


NODE_JSON = json.dumps(
    {
        "nodeconfig": [
            {
                "name": "gpu-node-1",
                "operatingmode": "hami-core",
                "devicesplitcount": 3,
                "devicememoryscaling": 1.5,
                "devicecorescaling": 2,
                "filterdevices": {"uuid": ["GPU-x"], "index": [1]},
            }
        ]
    },
    indent=2,
)


def _plugin_options(tmp_path: Path, docs: Docs, node: str = "gpu-node-1") -> Any:
    """The plugin's own reader (hami_stack.device_plugin.options.resolve) on the rendered files."""
    from hami_stack.device_plugin.options import resolve

    (tmp_path / "config.json").write_text(
        docs[("ConfigMap", "rel-hami-device-plugin")]["data"]["config.json"]
    )
    (tmp_path / "device-config.yaml").write_text(
        docs[("ConfigMap", "rel-hami-scheduler-device")]["data"]["device-config.yaml"]
    )
    args = [a for a in cont(docs, "device-plugin")["args"] if not a.startswith("--config-file")]
    return resolve(
        [
            *args,
            f"--config-file={tmp_path / 'device-config.yaml'}",
            f"--node-config-file={tmp_path / 'config.json'}",
        ],
        env={"NODE_NAME": node},
    )


def _assert_node_settings(opts: Any) -> None:
    assert opts.nvidia.device_split_count == 3
    assert opts.nvidia.device_memory_scaling == 1.5
    assert opts.nvidia.device_core_scaling == 2.0
    assert opts.operating_mode == "hami-core"
    assert opts.filter_devices.excludes("GPU-x", 0) and opts.filter_devices.excludes("GPU-y", 1)
    assert not opts.filter_devices.excludes("GPU-y", 0)


def test_node_config_json_string_reaches_the_plugin(tmp_path: Path) -> None:
    values = tmp_path / "v.yaml"
    values.write_text(yaml.safe_dump({"devicePlugin": {"nodeConfiguration": {"config": NODE_JSON}}}))
    docs = render(files=(str(values),))
    assert docs[("ConfigMap", "rel-hami-device-plugin")]["data"]["config.json"].strip() == NODE_JSON
    _assert_node_settings(_plugin_options(tmp_path, docs))
    assert _plugin_options(tmp_path, docs, node="other").nvidia.device_split_count == 10


def test_node_config_as_yaml_reaches_the_plugin(tmp_path: Path) -> None:
    docs = render(f"devicePlugin.nodeConfiguration.config={NODE_JSON.replace(chr(10), '')}")
    _assert_node_settings(_plugin_options(tmp_path, docs))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "not a JSON object"),
        ('{"nodeconfig": {"name": "a"}}', "nodeconfig must be a list"),
        ('{"nodeconfig": [{"name": "a", "devicesplitcnt": 3}]}', 'unknown key "devicesplitcnt"'),
        ('{"nodeconfigs": []}', 'unknown key "nodeconfigs"'),
    ],
)
def test_bad_node_config_string_fails_the_render(tmp_path: Path, text: str, message: str) -> None:
    values = tmp_path / "v.yaml"
    values.write_text(yaml.safe_dump({"devicePlugin": {"nodeConfiguration": {"config": text}}}))
    proc = helm_template(files=(str(values),))
    assert proc.returncode != 0 and "devicePlugin.nodeConfiguration.config" in proc.stderr, proc.stderr
    assert message in proc.stderr


def test_external_node_config_is_used_and_not_rendered() -> None:
    docs = render('devicePlugin.nodeConfiguration.externalConfigName="site-gpus"')
    assert ("ConfigMap", "rel-hami-device-plugin") not in docs
    vols = {v["name"]: v for v in pod(docs, "DaemonSet")["volumes"]}
    assert vols["node-config"]["configMap"]["name"] == "site-gpus"


# -- kube-scheduler flags: the chart's own are passed once -----------------------------------------


@pytest.mark.parametrize("minor", [18, 33])
def test_kube_scheduler_default_args_once(minor: int) -> None:
    args = cont(render(minor=minor), "kube-scheduler")["args"]
    assert len(args) == len(set(args)), args
    assert args.count("-v=4") == 1


@pytest.mark.parametrize(
    ("setting", "minor", "message"),
    [
        (
            'scheduler.kubeScheduler.extraNewArgs=["--config=/etc/other.yaml"]',
            33,
            "scheduler.kubeScheduler.extraNewArgs",
        ),
        (
            'scheduler.kubeScheduler.extraArgs=["--policy-config-file=/x.json"]',
            18,
            "scheduler.kubeScheduler.extraArgs",
        ),
        ('scheduler.kubeScheduler.extraArgs=["--leader-elect=false"]', 18, "--leader-elect"),
    ],
)
def test_conflicting_kube_scheduler_flag_fails(setting: str, minor: int, message: str) -> None:
    proc = helm_template(sets=(setting,), minor=minor)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr


# -- one rendering check per supported key ---------------------------------------------------------

Check = Callable[[Docs], Any]


def _has_all(container: str, *flags: str) -> Check:
    return lambda d: all(f in cont(d, container)["args"] for f in flags)


CASES: list[tuple[str, tuple[str, ...], Check]] = [
    (
        "global.imageRegistry",
        ('global.imageRegistry="reg.example"',),
        lambda d: all(i.startswith("reg.example/") for i in images(d).values()),
    ),
    (
        "global.imagePullSecrets",
        ('global.imagePullSecrets=["a",{"name":"b"}]',),
        lambda d: (
            pod(d, "Deployment")["imagePullSecrets"]
            == pod(d, "DaemonSet")["imagePullSecrets"]
            == [{"name": "a"}, {"name": "b"}]
        ),
    ),
    (
        "global.imageTag",
        ('global.imageTag="v9"',),
        lambda d: (
            images(d)["device-plugin"].endswith(":v9")
            and images(d)["vgpu-monitor"].endswith(":v9")
            and images(d)["vgpu-scheduler-extender"].endswith(":v9")
        ),
    ),
    (
        "global.gpuHookPath",
        ('global.gpuHookPath="/opt/hook"',),
        lambda d: env(d, "device-plugin")["HOOK_PATH"] == "/opt/hook",
    ),
    (
        "global.labels",
        ('global.labels={"team":"x"}',),
        lambda d: all(o["metadata"]["labels"]["team"] == "x" for o in d.values()),
    ),
    (
        "global.annotations",
        ('global.annotations={"owner":"x"}',),
        lambda d: (
            d[("Deployment", "rel-hami-scheduler")]["metadata"]["annotations"]
            == d[("DaemonSet", "rel-hami-device-plugin")]["metadata"]["annotations"]
            == {"owner": "x"}
        ),
    ),
    (
        "global.managedNodeSelector",
        ('global.managedNodeSelector={"usage":"ml"}',),
        lambda d: "NODE_SELECTOR_USAGE" not in env(d, "vgpu-scheduler-extender"),
    ),  # inert while not enabled
    ("nameOverride", ('nameOverride="vgpu"',), lambda d: ("Deployment", "rel-vgpu-scheduler") in d),
    ("fullnameOverride", ('fullnameOverride="gpu"',), lambda d: ("DaemonSet", "gpu-device-plugin") in d),
    (
        "namespaceOverride",
        ('namespaceOverride="gpu-system"',),
        lambda d: (
            d[("Deployment", "rel-hami-scheduler")]["metadata"]["namespace"] == "gpu-system"
            and "gpu-system" in hook(d)["namespaceSelector"]["matchExpressions"][1]["values"]
        ),
    ),
    (
        "resourceName",
        ('resourceName="example.com/gpu"',),
        lambda d: (
            devcfg(d)["nvidia"]["resourceCountName"] == "example.com/gpu" and "example.com/gpu" in managed(d)
        ),
    ),
    (
        "resourceMem",
        ('resourceMem="example.com/mem"',),
        lambda d: (
            devcfg(d)["nvidia"]["resourceMemoryName"] == "example.com/mem" and "example.com/mem" in managed(d)
        ),
    ),
    (
        "resourceMemPercentage",
        ('resourceMemPercentage="example.com/pct"',),
        lambda d: devcfg(d)["nvidia"]["resourceMemoryPercentageName"] == "example.com/pct",
    ),
    (
        "resourceCores",
        ('resourceCores="example.com/cores"',),
        lambda d: devcfg(d)["nvidia"]["resourceCoreName"] == "example.com/cores",
    ),
    (
        "resourcePriority",
        ('resourcePriority="example.com/prio"',),
        lambda d: devcfg(d)["nvidia"]["resourcePriorityName"] == "example.com/prio",
    ),
    (
        "mluResource*",
        ('mluResourceName="m/n"', 'mluResourceMem="m/m"', 'mluResourceCores="m/c"'),
        lambda d: (
            devcfg(d)["cambricon"]
            == {"resourceCountName": "m/n", "resourceMemoryName": "m/m", "resourceCoreName": "m/c"}
            and "m/n" in managed(d)
        ),
    ),
    (
        "dcuResource*",
        ('dcuResourceName="h/n"', 'dcuResourceMem="h/m"', 'dcuResourceCores="h/c"'),
        lambda d: (
            (
                devcfg(d)["hygon"]["resourceCountName"],
                devcfg(d)["hygon"]["resourceMemoryName"],
                devcfg(d)["hygon"]["resourceCoreName"],
            )
            == ("h/n", "h/m", "h/c")
            and {"h/n", "h/m", "h/c"} <= managed(d)
        ),
    ),
    (
        "metax*",
        (
            'metaxResourceName="x/s"',
            'metaxResourceCore="x/c"',
            'metaxResourceMem="x/m"',
            'metaxsGPUTopologyAware="true"',
        ),
        lambda d: (
            (
                devcfg(d)["metax"]["resourceVCountName"],
                devcfg(d)["metax"]["resourceVCoreName"],
                devcfg(d)["metax"]["resourceVMemoryName"],
                devcfg(d)["metax"]["sgpuTopologyAware"],
            )
            == ("x/s", "x/c", "x/m", True)
            and {"x/s", "x/c", "x/m"} <= managed(d)
        ),
    ),
    (
        "enflameResource*",
        (
            'enflameResourceNameDRSGCU="e/d"',
            'enflameResourceNameGCUMemory="e/m"',
            'enflameResourceNameGCUCore="e/c"',
        ),
        lambda d: (
            (
                devcfg(d)["enflame"]["resourceNameDRSGCU"],
                devcfg(d)["enflame"]["resourceNameGCUMemory"],
                devcfg(d)["enflame"]["resourceNameGCUCore"],
            )
            == ("e/d", "e/m", "e/c")
        ),
    ),
    (
        "kunlunResource*",
        ('kunlunResourceName="k/x"', 'kunlunResourceVCountName="k/v"', 'kunlunResourceVMemoryName="k/m"'),
        lambda d: (
            devcfg(d)["kunlun"]
            == {"resourceCountName": "k/x", "resourceVCountName": "k/v", "resourceVMemoryName": "k/m"}
        ),
    ),
    (
        "vastaiResourceName",
        ('vastaiResourceName="v/a"',),
        lambda d: devcfg(d)["vastai"]["resourceCountName"] == "v/a",
    ),
    (
        "birenResourceName",
        ('birenResourceName="b/g"',),
        lambda d: devcfg(d)["biren"]["resourceCountName"] == "b/g",
    ),
    (
        "schedulerName",
        ('schedulerName="gpu-sched"',),
        lambda d: (
            schedcfg(d)["profiles"][0]["schedulerName"] == "gpu-sched"
            and "--scheduler-name=gpu-sched" in cont(d, "vgpu-scheduler-extender")["args"]
        ),
    ),
    ("legacyMetrics", ("legacyMetrics=true",), _has_all("vgpu-scheduler-extender", "--legacy-metrics=true")),
    (
        "scheduler.nodeName",
        ('scheduler.nodeName="cp-1"',),
        lambda d: pod(d, "Deployment")["nodeName"] == "cp-1",
    ),
    (
        "scheduler.overwriteEnv",
        ('scheduler.overwriteEnv="true"',),
        lambda d: devcfg(d)["nvidia"]["overwriteEnv"] is True,
    ),
    (
        "scheduler.defaultSchedulerPolicy",
        (
            'scheduler.defaultSchedulerPolicy={"nodeSchedulerPolicy":"spread","gpuSchedulerPolicy":"topology-aware"}',
        ),
        lambda d: (
            _has_all(
                "vgpu-scheduler-extender",
                "--node-scheduler-policy=spread",
                "--gpu-scheduler-policy=topology-aware",
            )(d)
            and env(d, "device-plugin")["ENABLE_TOPOLOGY_SCORE"] == "true"
        ),
    ),
    (
        "scheduler.metricsBindAddress",
        ('scheduler.metricsBindAddress=":9999"',),
        _has_all("vgpu-scheduler-extender", "--metrics-bind-address=:9999"),
    ),
    (
        "scheduler.livenessProbe",
        ("scheduler.livenessProbe=true",),
        lambda d: cont(d, "kube-scheduler")["livenessProbe"]["httpGet"]["port"] == 10259,
    ),
    (
        "scheduler.leaderElect",
        ("scheduler.leaderElect=false", "scheduler.replicas=3"),
        lambda d: (
            d[("Deployment", "rel-hami-scheduler")]["spec"]["replicas"] == 1
            and "readinessProbe" not in cont(d, "vgpu-scheduler-extender")
            and "--leader-elect=false" in cont(d, "vgpu-scheduler-extender")["args"]
            and "leaderElect: false" in d[("ConfigMap", "rel-hami-scheduler")]["data"]["config.yaml"]
        ),
    ),
    (
        "scheduler.replicas",
        ("scheduler.replicas=3",),
        lambda d: d[("Deployment", "rel-hami-scheduler")]["spec"]["replicas"] == 3,
    ),
    (
        "scheduler.nodeLockExpire",
        ('scheduler.nodeLockExpire="90s"',),
        lambda d: env(d, "vgpu-scheduler-extender")["HAMI_NODELOCK_EXPIRE"] == "90s",
    ),
    (
        "scheduler.podAnnotations",
        ('scheduler.podAnnotations={"a":"b"}',),
        lambda d: (
            d[("Deployment", "rel-hami-scheduler")]["spec"]["template"]["metadata"]["annotations"]["a"] == "b"
        ),
    ),
    (
        "scheduler.nodeSelector",
        ('scheduler.nodeSelector={"role":"cp"}',),
        lambda d: pod(d, "Deployment")["nodeSelector"] == {"role": "cp"},
    ),
    (
        "scheduler.tolerations",
        ('scheduler.tolerations=[{"operator":"Exists"}]',),
        lambda d: pod(d, "Deployment")["tolerations"] == [{"operator": "Exists"}],
    ),
    (
        "scheduler.priorityClassName",
        ('scheduler.priorityClassName="high"',),
        lambda d: pod(d, "Deployment")["priorityClassName"] == "high",
    ),
    (
        "scheduler.kubeScheduler.enabled",
        ("scheduler.kubeScheduler.enabled=false",),
        lambda d: (
            [c["name"] for c in pod(d, "Deployment")["containers"]] == ["vgpu-scheduler-extender"]
            and ("ConfigMap", "rel-hami-scheduler") not in d
        ),
    ),
    (
        "scheduler.kubeScheduler.image",
        (
            'scheduler.kubeScheduler.image={"registry":"r.io","repository":"ks","tag":"v1.33.9","pullPolicy":"Always","pullSecrets":["p"]}',
        ),
        lambda d: (
            cont(d, "kube-scheduler")["image"] == "r.io/ks:v1.33.9"
            and cont(d, "kube-scheduler")["imagePullPolicy"] == "Always"
            and {"name": "p"} in pod(d, "Deployment")["imagePullSecrets"]
        ),
    ),
    (
        "scheduler.kubeScheduler.resources",
        ('scheduler.kubeScheduler.resources={"limits":{"cpu":"1"}}',),
        lambda d: cont(d, "kube-scheduler")["resources"] == {"limits": {"cpu": "1"}},
    ),
    (
        "scheduler.kubeScheduler.extraNewArgs",
        ('scheduler.kubeScheduler.extraNewArgs=["--config=/config/config.yaml","-v=2","--kube-api-qps=50"]',),
        lambda d: (
            cont(d, "kube-scheduler")["args"] == ["--config=/config/config.yaml", "-v=2", "--kube-api-qps=50"]
        ),
    ),
    (
        "scheduler.extender.image",
        (
            'scheduler.extender.image={"registry":"r.io","repository":"h","tag":"t1","pullPolicy":"Never","pullSecrets":["e"]}',
        ),
        lambda d: (
            cont(d, "vgpu-scheduler-extender")["image"] == "r.io/h:t1"
            and cont(d, "vgpu-scheduler-extender")["imagePullPolicy"] == "Never"
            and {"name": "e"} in pod(d, "Deployment")["imagePullSecrets"]
        ),
    ),
    (
        "scheduler.extender.resources",
        ('scheduler.extender.resources={"requests":{"memory":"1Gi"}}',),
        lambda d: cont(d, "vgpu-scheduler-extender")["resources"] == {"requests": {"memory": "1Gi"}},
    ),
    (
        "scheduler.extender.extraArgs",
        ('scheduler.extender.extraArgs=["--debug","-v=5"]',),
        lambda d: (
            cont(d, "vgpu-scheduler-extender")["args"][-1] == "-v=5"
            and "--debug" not in cont(d, "vgpu-scheduler-extender")["args"]
        ),
    ),
    (
        "scheduler.admissionWebhook.enabled",
        ("scheduler.admissionWebhook.enabled=false",),
        lambda d: (
            ("MutatingWebhookConfiguration", "rel-hami-webhook") not in d
            and ("Secret", "rel-hami-scheduler-tls") in d
        ),
    ),
    (
        "scheduler.admissionWebhook.failurePolicy",
        ('scheduler.admissionWebhook.failurePolicy="Ignore"',),
        lambda d: hook(d)["failurePolicy"] == "Ignore",
    ),
    (
        "scheduler.admissionWebhook.reinvocationPolicy",
        ('scheduler.admissionWebhook.reinvocationPolicy="IfNeeded"',),
        lambda d: hook(d)["reinvocationPolicy"] == "IfNeeded",
    ),
    (
        "scheduler.admissionWebhook.reviewVersions",
        ('scheduler.admissionWebhook.reviewVersions=["v1","v1beta1"]',),
        lambda d: hook(d)["admissionReviewVersions"] == ["v1", "v1beta1"],
    ),
    (
        "scheduler.admissionWebhook.whitelistNamespaces",
        ('scheduler.admissionWebhook.whitelistNamespaces=["ci","kube-system"]',),
        lambda d: hook(d)["namespaceSelector"]["matchExpressions"][1]["values"] == [NS, "kube-system", "ci"],
    ),
    (
        "scheduler.admissionWebhook.excludeSystemNamespaces",
        ("scheduler.admissionWebhook.excludeSystemNamespaces=false",),
        lambda d: (
            hook(d)["namespaceSelector"]["matchExpressions"]
            == [{"key": "hami.io/webhook", "operator": "NotIn", "values": ["ignore"]}]
        ),
    ),
    (
        "scheduler.admissionWebhook.manageNamespaceSelector",
        ("scheduler.admissionWebhook.manageNamespaceSelector=false",),
        lambda d: "namespaceSelector" not in hook(d),
    ),
    (
        "scheduler.admissionWebhook.namespaceSelector",
        (
            'scheduler.admissionWebhook.namespaceSelector={"matchLabels":{"gpu":"yes"},"matchExpressions":[{"key":"env","operator":"In","values":["prod"]}]}',
        ),
        lambda d: (
            hook(d)["namespaceSelector"]["matchLabels"] == {"gpu": "yes"}
            and hook(d)["namespaceSelector"]["matchExpressions"][-1]
            == {"key": "env", "operator": "In", "values": ["prod"]}
        ),
    ),
    (
        "scheduler.admissionWebhook.objectSelector",
        ('scheduler.admissionWebhook.objectSelector={"matchLabels":{"gpu":"yes"}}',),
        lambda d: hook(d)["objectSelector"] == {"matchLabels": {"gpu": "yes"}},
    ),
    (
        "scheduler.admissionWebhook.customURL",
        (
            'scheduler.admissionWebhook.customURL={"enabled":true,"host":"10.0.0.5","port":31998,"path":"/webhook"}',
        ),
        lambda d: (
            hook(d)["clientConfig"]["url"] == "https://10.0.0.5:31998/webhook"
            and "service" not in hook(d)["clientConfig"]
        ),
    ),
    (
        "scheduler.patch.enabled",
        ("scheduler.patch.enabled=false",),
        lambda d: (
            ("Secret", "rel-hami-scheduler-tls") not in d
            and {v["name"]: v for v in pod(d, "Deployment")["volumes"]}["tls"]["secret"]["secretName"]
            == "rel-hami-scheduler-tls"
        ),
    ),
    (
        "scheduler.tls.existingSecret",
        ('scheduler.tls.existingSecret="my-tls"',),
        lambda d: (
            ("Secret", "my-tls") not in d
            and ("Secret", "rel-hami-scheduler-tls") not in d
            and {v["name"]: v for v in pod(d, "Deployment")["volumes"]}["tls"]["secret"]["secretName"]
            == "my-tls"
        ),
    ),
    (
        "scheduler.service",
        (
            'scheduler.service={"type":"NodePort","httpPort":8443,"httpTargetPort":9443,"schedulerPort":30443,'
            '"monitorPort":30093,"monitorTargetPort":9395,"labels":{"l":"1"},"annotations":{"a":"1"}}',
        ),
        lambda d: (
            [(p["port"], p["targetPort"], p.get("nodePort")) for p in svc(d)["spec"]["ports"]]
            == [(8443, 9443, 30443), (30093, 9395, 30093)]
            and svc(d)["metadata"]["labels"]["l"] == "1"
            and svc(d)["metadata"]["annotations"] == {"a": "1"}
            and "--http_bind=0.0.0.0:9443" in cont(d, "vgpu-scheduler-extender")["args"]
            and schedcfg(d)["extenders"][0]["urlPrefix"] == "https://127.0.0.1:9443"
            and hook(d)["clientConfig"]["service"]["port"] == 8443
        ),
    ),
    (
        "devicePlugin.enabled",
        ("devicePlugin.enabled=false",),
        lambda d: not any(k[1].startswith("rel-hami-device-plugin") for k in d),
    ),
    (
        "devicePlugin.gpuOperatorToolkitReady",
        (
            'devicePlugin.gpuOperatorToolkitReady={"enabled":true,"hostPath":"/run/v","securityContext":{"runAsUser":0}}',
        ),
        lambda d: (
            pod(d, "DaemonSet")["initContainers"][0]["volumeMounts"][0]["mountPath"] == "/run/v"
            and "/run/v/toolkit-ready" in pod(d, "DaemonSet")["initContainers"][0]["args"][0]
        ),
    ),
    (
        "devicePlugin.image",
        (
            'devicePlugin.image={"registry":"r.io","repository":"h","tag":"t2","pullPolicy":"Always","pullSecrets":["d"]}',
        ),
        lambda d: (
            images(d)["device-plugin"] == "r.io/h:t2"
            and cont(d, "device-plugin")["imagePullPolicy"] == "Always"
            and pod(d, "DaemonSet")["imagePullSecrets"] == [{"name": "d"}]
        ),
    ),
    (
        "devicePlugin scaling and memory",
        (
            "devicePlugin.deviceSplitCount=4",
            "devicePlugin.deviceMemoryScaling=1.5",
            "devicePlugin.deviceCoreScaling=2",
            "devicePlugin.enableNumaTopology=true",
            "devicePlugin.preConfiguredDeviceMemory=131072",
        ),
        lambda d: (
            [
                devcfg(d)["nvidia"][k]
                for k in (
                    "deviceSplitCount",
                    "deviceMemoryScaling",
                    "deviceCoreScaling",
                    "enableNumaTopology",
                    "preConfiguredDeviceMemory",
                )
            ]
            == [4, 1.5, 2, True, 131072]
        ),
    ),
    (
        "devicePlugin.disablecorelimit",
        ('devicePlugin.disablecorelimit="true"',),
        lambda d: (
            "--disable-core-limit=true" in cont(d, "device-plugin")["args"]
            and devcfg(d)["nvidia"]["disableCoreLimit"] is True
        ),
    ),
    (
        "devicePlugin.deviceListStrategy",
        ('devicePlugin.deviceListStrategy="volume-mounts"',),
        lambda d: env(d, "device-plugin")["DEVICE_LIST_STRATEGY"] == "volume-mounts",
    ),
    (
        "devicePlugin.passDeviceSpecsEnabled",
        ("devicePlugin.passDeviceSpecsEnabled=true",),
        lambda d: env(d, "device-plugin")["PASS_DEVICE_SPECS"] == "true",
    ),
    (
        "devicePlugin.runtimeClassName",
        ('devicePlugin.runtimeClassName="nvidia"',),
        lambda d: (
            pod(d, "DaemonSet")["runtimeClassName"] == "nvidia"
            and devcfg(d)["nvidia"]["runtimeClassName"] == "nvidia"
            and ("RuntimeClass", "nvidia") not in d
        ),
    ),
    (
        "devicePlugin.createRuntimeClass",
        ('devicePlugin.runtimeClassName="nvidia"', "devicePlugin.createRuntimeClass=true"),
        lambda d: d[("RuntimeClass", "nvidia")]["apiVersion"] == "node.k8s.io/v1",
    ),
    (
        "devicePlugin.nvidiaNodeSelector",
        ('devicePlugin.nvidiaNodeSelector={"gpu":null,"accel":"nvidia"}',),
        lambda d: pod(d, "DaemonSet")["nodeSelector"] == {"accel": "nvidia"},
    ),
    (
        "devicePlugin.pluginPath and libPath",
        ('devicePlugin.pluginPath="/k/dp"', 'devicePlugin.libPath="/opt/vgpu"'),
        lambda d: (
            {v["name"]: v.get("hostPath", {}).get("path") for v in pod(d, "DaemonSet")["volumes"]}[
                "device-plugin"
            ]
            == "/k/dp"
            and cont(d, "device-plugin")["lifecycle"]["postStart"]["exec"]["command"]
            == ["hami-install-shim", "/opt/vgpu/"]
        ),
    ),
    (
        "devicePlugin.hostPID and hostNetwork",
        ("devicePlugin.hostPID=false", "devicePlugin.hostNetwork=true"),
        lambda d: (pod(d, "DaemonSet")["hostPID"], pod(d, "DaemonSet")["hostNetwork"]) == (False, True),
    ),
    (
        "devicePlugin.extraArgs",
        ('devicePlugin.extraArgs=["-v=2"]',),
        lambda d: cont(d, "device-plugin")["args"][-1] == "-v=2",
    ),
    (
        "devicePlugin.extraEnvs",
        ('devicePlugin.extraEnvs=[{"name":"A","value":"1"}]',),
        lambda d: env(d, "device-plugin")["A"] == "1",
    ),
    (
        "devicePlugin.extraVolumes",
        (
            'devicePlugin.extraVolumes=[{"name":"x","emptyDir":{}}]',
            'devicePlugin.extraVolumeMounts=[{"name":"x","mountPath":"/x"}]',
        ),
        lambda d: (
            {"name": "x", "emptyDir": {}} in pod(d, "DaemonSet")["volumes"]
            and {"name": "x", "mountPath": "/x"} in cont(d, "device-plugin")["volumeMounts"]
        ),
    ),
    (
        "devicePlugin.securityContext",
        ('devicePlugin.securityContext={"allowPrivilegeEscalation":null,"runAsUser":0}',),
        lambda d: cont(d, "device-plugin")["securityContext"] == {"privileged": True, "runAsUser": 0},
    ),
    (
        "devicePlugin.resources",
        ('devicePlugin.resources={"limits":{"memory":"1Gi"}}',),
        lambda d: cont(d, "device-plugin")["resources"] == {"limits": {"memory": "1Gi"}},
    ),
    (
        "devicePlugin.updateStrategy",
        ('devicePlugin.updateStrategy={"type":"OnDelete"}',),
        lambda d: (
            d[("DaemonSet", "rel-hami-device-plugin")]["spec"]["updateStrategy"] == {"type": "OnDelete"}
        ),
    ),
    (
        "devicePlugin.tolerations",
        ('devicePlugin.tolerations=[{"operator":"Exists"}]',),
        lambda d: pod(d, "DaemonSet")["tolerations"] == [{"operator": "Exists"}],
    ),
    (
        "devicePlugin.podAnnotations",
        ('devicePlugin.podAnnotations={"a":"b"}',),
        lambda d: (
            d[("DaemonSet", "rel-hami-device-plugin")]["spec"]["template"]["metadata"]["annotations"]["a"]
            == "b"
        ),
    ),
    (
        "devicePlugin.service",
        (
            'devicePlugin.service={"type":"NodePort","httpPort":30992,"labels":{"l":"1"},"annotations":{"a":"1"}}',
        ),
        lambda d: (
            svc(d, "rel-hami-device-plugin-monitor")["spec"]["ports"][0]["nodePort"] == 30992
            and svc(d, "rel-hami-device-plugin-monitor")["metadata"]["annotations"] == {"a": "1"}
        ),
    ),
    (
        "devicePlugin.monitor",
        (
            'devicePlugin.monitor={"image":{"repository":"mon","tag":"m1"},"ctrPath":"/c","resyncInterval":"1m",'
            '"extraArgs":["-v=4"],"extraEnvs":[{"name":"M","value":"1"}],"securityContext":{"privileged":false},'
            '"resources":{"limits":{"cpu":"1"}}}',
        ),
        lambda d: (
            images(d)["vgpu-monitor"] == "docker.io/mon:m1"
            and cont(d, "vgpu-monitor")["args"]
            == ["--containers-dir=/c", "--bind=0.0.0.0", "--port=9394", "-v=4"]
            and env(d, "vgpu-monitor")["HAMI_RESYNC_INTERVAL"] == "1m"
            and env(d, "vgpu-monitor")["M"] == "1"
            and cont(d, "vgpu-monitor")["securityContext"] == {"privileged": False}
            and cont(d, "vgpu-monitor")["resources"] == {"limits": {"cpu": "1"}}
        ),
    ),
    (
        "devices.nvidia",
        ('devices.nvidia={"gpuCorePolicy":"force","libCudaLogLevel":3}',),
        lambda d: (
            (devcfg(d)["nvidia"]["gpuCorePolicy"], devcfg(d)["nvidia"]["libCudaLogLevel"]) == ("force", 3)
        ),
    ),
    (
        "devices.<vendor>.enabled",
        (
            "devices.mthreads.enabled=false",
            "devices.kunlun.enabled=false",
            "devices.vastai.enabled=false",
            "devices.biren.enabled=false",
        ),
        lambda d: (
            not (
                {"mthreads.com/vgpu", "kunlunxin.com/vxpu", "vastaitech.com/va", "birentech.com/gpu"}
                & managed(d)
            )
            and "enflame.com/gcu" in managed(d)
        ),
    ),
    (
        "devices.<vendor>.customresources",
        (
            'devices.amd.customresources=["amd.com/x"]',
            'devices.awsneuron.customresources=["aws.amazon.com/y"]',
        ),
        lambda d: {"amd.com/x", "aws.amazon.com/y"} <= managed(d) and "amd.com/gpu" not in managed(d),
    ),
    (
        "device-config.content",
        ('device-config.content="nvidia:\\n  deviceSplitCount: 3\\n"',),
        lambda d: devcfg(d) == {"nvidia": {"deviceSplitCount": 3}},
    ),
]


@pytest.mark.parametrize(("sets", "check"), [pytest.param(s, c, id=i) for i, s, c in CASES])
def test_supported_key_renders(sets: tuple[str, ...], check: Check) -> None:
    assert check(render(*sets)), sets


def test_prometheus_service_monitors_only_when_served() -> None:
    assert not any(k[0] == "ServiceMonitor" for k in render("prometheus.enabled=true"))
    docs = render(
        "prometheus.enabled=true", extra=("--api-versions", "monitoring.coreos.com/v1/ServiceMonitor")
    )
    monitors = {k[1] for k in docs if k[0] == "ServiceMonitor"}
    assert monitors == {"rel-hami-scheduler-metrics-monitor", "rel-hami-device-plugin-metrics-monitor"}


def test_runtime_class_api_follows_the_minor() -> None:
    docs = render('devicePlugin.runtimeClassName="nvidia"', "devicePlugin.createRuntimeClass=true", minor=19)
    assert docs[("RuntimeClass", "nvidia")]["apiVersion"] == "node.k8s.io/v1beta1"


def test_tls_validity_and_client_name() -> None:
    from cryptography import x509

    docs = render("scheduler.tls.validityDays=30", 'scheduler.tls.clientCommonName="ks-client"')
    data = docs[("Secret", "rel-hami-scheduler-tls")]["data"]
    client = x509.load_pem_x509_certificate(base64.b64decode(data["client.crt"]))
    assert client.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "ks-client"
    days = (client.not_valid_after_utc - client.not_valid_before_utc).days
    assert 29 <= days <= 31
    assert "--client-cn=ks-client" in cont(docs, "vgpu-scheduler-extender")["args"]


def test_k3s_backend_values_render(tmp_path: Path) -> None:
    """The k3s conformance backend installs the chart with its own values: they pass the schema."""
    from conformance.backends import k3s

    values = tmp_path / "k3s.yaml"
    values.write_text(yaml.safe_dump(k3s.helm_values("1.31")))
    docs = render(files=(str(values),), minor=31)
    assert env(docs, "device-plugin")["LD_LIBRARY_PATH"].endswith("/lib")
    assert cont(docs, "device-plugin")["volumeMounts"][-1]["mountPath"] == k3s.EMU_HOST_DIR
