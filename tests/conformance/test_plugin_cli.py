"""The plugin's options and bad input (exit 4, no bundle), the main job's argument handling, and the
probe against the emulated driver."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conformance.cli import cell_command, parse_minors, parser
from conformance.kube import parse_probe_output
from testbed.embedded import EmbeddedTestbed

REPO = Path(__file__).resolve().parents[2]
REGISTER = '[{"id":"GPU-1","count":10,"devmem":1000,"devcore":100,"type":"NVIDIA-X"}]'


def run_pytest(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_options_and_markers_documented() -> None:
    out = run_pytest("--help").stdout
    for opt in (
        "--cluster={testbed,kubeconfig,k3s}",
        "--kubeconfig",
        "--k8s-version",
        "--vendor",
        "--profile",
        "--hami-namespace",
        "--keep-cluster",
        "--bundle-dir",
        "--signing-key",
        "--sensitivity",
    ):
        assert opt in out, opt
    markers = run_pytest("--markers").stdout
    for m in (
        "nvidia:",
        "ascend:",
        "kunlunxin:",
        "registration:",
        "enforcement:",
        "versions:",
        "rule(rule_id",
    ):
        assert f"@pytest.mark.{m}" in markers, m


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--k8s-version", "1.99"], 'unknown Kubernetes minor "1.99"'),
        (["--profile", "nope"], 'unknown profile "nope"'),
        (["--vendor", "nvidia,nvdia"], "unknown vendor 'nvdia'"),
        (["--cluster", "kubeconfig", "--kubeconfig", "/nonexistent/kubeconfig"], "does not exist"),
    ],
)
def test_bad_input_exits_4_before_tests(args: list[str], message: str, tmp_path: Path) -> None:
    bundle = tmp_path / "out"
    proc = run_pytest("conformance/suites", "--bundle-dir", str(bundle), *args)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert message in proc.stderr + proc.stdout
    assert "passed" not in proc.stdout and not bundle.exists()


@pytest.fixture(scope="module")
def bare_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedTestbed]:
    with EmbeddedTestbed(33, data_dir=tmp_path_factory.mktemp("bare")) as tb:
        yield tb


def test_unreachable_cluster_exits_4(tmp_path: Path, bare_cluster: EmbeddedTestbed) -> None:
    dead = tmp_path / "kubeconfig"
    text = bare_cluster.kubeconfig_path.read_text()
    dead.write_text(text.replace(bare_cluster.url, "https://127.0.0.1:1"))
    proc = run_pytest(
        "conformance/suites",
        "--cluster",
        "kubeconfig",
        "--kubeconfig",
        str(dead),
        "--bundle-dir",
        str(tmp_path / "out"),
    )
    assert proc.returncode == 4 and "cannot reach the cluster" in proc.stderr, proc.stderr
    assert not (tmp_path / "out").exists()


def test_cluster_without_hami_and_vendor_without_nodes_exit_4(
    tmp_path: Path, bare_cluster: EmbeddedTestbed
) -> None:
    kc = str(bare_cluster.kubeconfig_path)
    proc = run_pytest(
        "conformance/suites",
        "--cluster",
        "kubeconfig",
        "--kubeconfig",
        kc,
        "--bundle-dir",
        str(tmp_path / "out"),
    )
    assert proc.returncode == 4 and "HAMi is not installed" in proc.stderr, proc.stderr
    core = bare_cluster.api_client()
    from kubernetes import client

    client.CoreV1Api(core).create_namespace({"metadata": {"name": "hami-system"}})
    client.CoreV1Api(core).create_node(
        {
            "metadata": {
                "name": "n1",
                "annotations": {"hami.io/node-nvidia-register": REGISTER},
            }
        }
    )
    proc = run_pytest(
        "conformance/suites",
        "--cluster",
        "kubeconfig",
        "--kubeconfig",
        kc,
        "--vendor",
        "nvidia",
        "--profile",
        str(tmp_path / "missing.yaml"),
        "--bundle-dir",
        str(tmp_path / "out"),
    )
    assert proc.returncode == 4 and "unknown profile" in proc.stderr
    ascend = tmp_path / "ascend.yaml"
    ascend.write_text(
        "apiVersion: hami-conformance/profile/v1\nname: ascend\nversion: '0.1'\nvendor: ascend\n"
        "minors: ['1.18', '1.33']\n"
    )
    proc = run_pytest(
        "conformance/suites",
        "--cluster",
        "kubeconfig",
        "--kubeconfig",
        kc,
        "--vendor",
        "ascend",
        "--profile",
        str(ascend),
        "--bundle-dir",
        str(tmp_path / "out"),
    )
    assert (
        proc.returncode == 4
        and 'no node of vendor "ascend"' in proc.stderr
        and "nvidia (1 nodes)" in proc.stderr
    )
    assert not (tmp_path / "out").exists()


def test_plugin_is_inert_in_project_runs(tmp_path: Path) -> None:
    (tmp_path / "test_x.py").write_text("def test_x():\n    assert 1\n")
    proc = run_pytest(str(tmp_path / "test_x.py"), "--rootdir", str(REPO), "-c", str(REPO / "pyproject.toml"))
    assert proc.returncode == 0 and "provisioning" not in proc.stdout, proc.stdout + proc.stderr


def test_main_job_arguments(tmp_path: Path) -> None:
    assert parse_minors("all") == [f"1.{n}" for n in range(18, 36)]
    assert parse_minors("1.31,1.30") == ["1.30", "1.31"]
    args = parser().parse_args(["run", "--k8s", "1.30", "--signing-key", "k.pem"])
    cmd = cell_command(args, "1.30", tmp_path)
    assert cmd[cmd.index("--k8s-version") + 1] == "1.30" and "--signing-key" in cmd and "--junitxml" in cmd
    proc = subprocess.run(
        [sys.executable, "-m", "conformance", "run", "--k8s", "1.17"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 4 and 'unknown Kubernetes minor "1.17"' in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "conformance", "verify", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1 and "FAILED" in proc.stderr


def _probe(env: dict[str, str], *args: str) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, "-m", "conformance.probe", "--compact", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    doc = parse_probe_output("noise before\n" + proc.stdout)
    assert doc is not None
    return doc


@pytest.mark.hardware
def test_probe_on_emulated_driver(tmp_path: Path) -> None:
    from testbed.hardware import create_state, library_env

    st = create_state(
        tmp_path / "gpus", {"model": "A100-SXM4-80GB", "count": 2, "memory_mib": 4096}, node_name="n"
    )
    try:
        env = library_env(st.path, [st.gpus[1].uuid])
        env["HAMI_EMU_UTIL_WINDOW_MS"] = "200"
        env["CUDA_DEVICE_MEMORY_LIMIT_0"] = "3000m"
        doc = _probe(
            env, "--alloc-mib", "64", "--kernel-seconds", "0", "--load-seconds", "0.6", "--slice-ms", "20"
        )
        assert [d["uuid"] for d in doc["nvml"]["devices"]] == [st.gpus[1].uuid]  # type: ignore[index]
        assert doc["env"]["CUDA_DEVICE_MEMORY_LIMIT_0"] == "3000m"  # type: ignore[index]
        assert "PATH" not in doc["env"]  # type: ignore[operator]
        cuda = doc["cuda"]
        assert cuda["alloc"] == {"requested_mib": 64, "ok": True, "code": 0, "error_name": ""}  # type: ignore[index]
        assert cuda["load"]["launches"] > 5 and cuda["load"]["achieved_utilization"] > 50  # type: ignore[index]
        oom = _probe(env, "--alloc-mib", "8192", "--kernel-seconds", "0")["cuda"]
        assert oom["alloc"]["ok"] is False and oom["alloc"]["error_name"] == "CUDA_ERROR_OUT_OF_MEMORY"  # type: ignore[index]
        none = _probe(library_env(st.path, "none"), "--alloc-mib", "0", "--kernel-seconds", "0")
        assert none["nvml"].get("devices", []) == [] and none["cuda"].get("devices", []) == []  # type: ignore[union-attr]
        assert json.loads(json.dumps(doc))["probe"]["version"] == "1"  # type: ignore[index]
    finally:
        st.close()


@pytest.mark.hardware
def test_probe_load_counts_kernel_time_not_throttled_launch_time(tmp_path: Path) -> None:
    """Under a 30% compute limit the probe's achieved utilisation reads about 30%: the time the
    limiter holds a launch back on the host is idle GPU time, not kernel time."""
    from hami_stack.enforcer import ensure_built
    from testbed.hardware import create_state, library_env

    st = create_state(tmp_path / "gpus", {"model": "A100-SXM4-80GB", "count": 1}, node_name="n")
    try:
        env = library_env(st.path, "all")
        env.update({"LD_PRELOAD": str(ensure_built()), "CUDA_DEVICE_SM_LIMIT": "30",
                    "GPU_CORE_UTILIZATION_POLICY": "force",
                    "CUDA_DEVICE_MEMORY_SHARED_CACHE": str(tmp_path / "region.cache")})
        load = _probe(env, "--alloc-mib", "0", "--kernel-seconds", "0", "--load-seconds", "3",
                      "--slice-ms", "20")["cuda"]["load"]  # type: ignore[index]
        assert 15 <= load["achieved_utilization"] <= 45, load  # type: ignore[index]
        # the events around each launch include the held-back time, which is why they are not used
        assert load["busy_ms"] > load["launches"] * 20 * 1.5  # type: ignore[index]
    finally:
        st.close()


def test_each_xdist_worker_gets_its_own_identical_cluster() -> None:
    from types import SimpleNamespace

    from conformance import plugin
    from conformance.backends import BackendError, ClusterInfo, Options

    def cluster(kubeconfig: str, **system: object) -> ClusterInfo:
        return ClusterInfo(backend="testbed", kubeconfig=kubeconfig, minor="1.33", git_version="v1.33.2",
                           hami_namespace="hami-system", scheduler_name="hami-scheduler",
                           system={"chartValuesSha256": "a", "shimSha256": "b", "imageDigests": {"x": "c"},
                                   "controlPlane": {"controlPlane": "emulated"}, **system})

    a, b = cluster("/a"), cluster("/b")
    assert plugin._cluster_identities([a, b])["count"] == 2
    with pytest.raises(BackendError, match=r"not the same system \(shimSha256 differ\)"):
        plugin._cluster_identities([a, cluster("/c", shimSha256="other")])
    with pytest.raises(BackendError, match=r"controlPlane differ"):
        plugin._cluster_identities([a, cluster("/c", controlPlane={"controlPlane": "real"})])
    state = plugin.HarnessState(Options(), profile=None)
    state.worker_clusters = [a, b]
    hooks = plugin._XdistHooks(state)
    given = {}
    for gid in ("gw0", "gw1", "gw2"):
        node = SimpleNamespace(gateway=SimpleNamespace(id=gid), workerinput={})
        hooks.pytest_configure_node(node)
        given[gid] = ClusterInfo.from_json(node.workerinput[plugin.WORKER_KEY]).kubeconfig
    assert given == {"gw0": "/a", "gw1": "/b", "gw2": "/a"}
