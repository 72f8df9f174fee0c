"""k3s in a container (real apiserver, real kubelet) through ``testcontainers``, with emulated GPUs.

Needs a container engine and the optional ``testcontainers`` package; neither runs on the project's
build machines, so :meth:`K3sBackend.provision` raises :class:`BackendUnavailable` with the reason
and the suites are skipped. Everything that does not need an engine (the version -> image map, the
server command, the build contexts, the chart values, the import commands) is plain functions,
tested in ``tests/conformance``.

How a run goes, where an engine exists (``pip install 'testcontainers[k3s]==4.14.2'``)::

    pytest conformance/suites --cluster k3s --k8s-version 1.30

1. build the stack image (``hami_stack/images/Dockerfile``) and the probe image
   (``conformance/probe/Dockerfile``) from the repository root;
2. start ``rancher/k3s:<tag>`` privileged with :func:`server_command`;
3. ``docker save`` both images into the container and ``ctr -n k8s.io images import`` them;
4. copy the emulated driver libraries and one node's device state to ``EMU_HOST_DIR`` in the
   container, mounted by the chart into the device-plugin and probe pods (as nvml-mock does on kind);
5. ``helm install`` with :func:`helm_values`, then wait for registration as on the testbed.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import tarfile
from pathlib import Path
from typing import Any

from conformance.backends import BackendError, BackendUnavailable, ClusterInfo, Options, check_minor

REPO = Path(__file__).resolve().parents[2]
TESTCONTAINERS_PIN = "testcontainers[k3s]==4.14.2"
STACK_IMAGE = "docker.io/projecthami/hami:conformance"
PROBE_IMAGE = "ghcr.io/hami-conformance/hami-conformance-probe:0.1.0"
EMU_HOST_DIR = "/opt/hami-emulated"

# Newest k3s release of each minor that we pinned (Docker tags spell "+k3sN" as "-k3sN").
K3S_IMAGES: dict[str, str] = {
    "1.18": "rancher/k3s:v1.18.20-k3s1",
    "1.19": "rancher/k3s:v1.19.16-k3s1",
    "1.20": "rancher/k3s:v1.20.15-k3s1",
    "1.21": "rancher/k3s:v1.21.14-k3s1",
    "1.22": "rancher/k3s:v1.22.17-k3s1",
    "1.23": "rancher/k3s:v1.23.17-k3s1",
    "1.24": "rancher/k3s:v1.24.17-k3s1",
    "1.25": "rancher/k3s:v1.25.16-k3s4",
    "1.26": "rancher/k3s:v1.26.15-k3s1",
    "1.27": "rancher/k3s:v1.27.16-k3s1",
    "1.28": "rancher/k3s:v1.28.15-k3s1",
    "1.29": "rancher/k3s:v1.29.15-k3s1",
    "1.30": "rancher/k3s:v1.30.6-k3s1",
    "1.31": "rancher/k3s:v1.31.2-k3s1",
    "1.32": "rancher/k3s:v1.32.1-k3s1",
    "1.33": "rancher/k3s:v1.33.1-k3s1",
}


def image_for(minor: str) -> str:
    m = check_minor(minor)
    if m not in K3S_IMAGES:  # the testbed emulates newer minors than k3s images are pinned for
        raise BackendError(f"no k3s image is pinned for Kubernetes {m} (pinned: {', '.join(K3S_IMAGES)})")
    return K3S_IMAGES[m]


def upstream_version(image: str) -> str:
    """``rancher/k3s:v1.31.2-k3s1`` -> ``v1.31.2``: the kube-scheduler tag the chart must use
    (HAMi issue #642: the ``+k3s1`` suffix is not a valid image tag)."""
    tag = image.rsplit(":", 1)[1]
    return tag.split("-k3s", 1)[0]


def server_command(minor: str) -> list[str]:
    """k3s server flags: no bundled ingress/LB/metrics (they only cost start time)."""
    check_minor(minor)
    return [
        "server",
        "--disable=traefik",
        "--disable=servicelb",
        "--disable=metrics-server",
        "--write-kubeconfig-mode=644",
        "--node-label=gpu=on",
        "--node-label=nvidia.com/gpu.present=true",
    ]


def import_commands(tar_paths: list[str]) -> list[list[str]]:
    """Inside the k3s container: load saved images into containerd's k8s.io namespace."""
    return [["ctr", "-n", "k8s.io", "images", "import", p] for p in tar_paths]


def helm_values(minor: str) -> dict[str, Any]:
    """Values for ``hami_stack/chart`` on k3s: local images, the minor's scheduler tag, and the
    emulated driver mounted where the NVIDIA toolkit would inject the real one."""
    emu_env = [
        {"name": "LD_LIBRARY_PATH", "value": f"{EMU_HOST_DIR}/lib"},
        {"name": "HAMI_EMU_STATE_DIR", "value": f"{EMU_HOST_DIR}/state"},
    ]
    mount = {"name": "hami-emulated", "hostPath": {"path": EMU_HOST_DIR, "type": "Directory"}}
    return {
        "global": {"imageTag": "conformance"},
        "scheduler": {
            "kubeScheduler": {"image": {"tag": upstream_version(image_for(minor))}},
            "extender": {"image": {"pullPolicy": "Never"}},
        },
        "devicePlugin": {
            "image": {"pullPolicy": "Never"},
            "extraEnvs": emu_env,
            "extraVolumes": [mount],
            "extraVolumeMounts": [{"name": "hami-emulated", "mountPath": EMU_HOST_DIR, "readOnly": True}],
        },
    }


def probe_build_context(dest: Path) -> Path:
    """A minimal build context for the probe image (the Dockerfile copies only these)."""
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "conformance" / "probe").mkdir(parents=True, exist_ok=True)
    shutil.copy2(REPO / "conformance" / "__init__.py", dest / "conformance" / "__init__.py")
    for src in (REPO / "conformance" / "probe").glob("*.py"):
        shutil.copy2(src, dest / "conformance" / "probe" / src.name)
    shutil.copy2(REPO / "conformance" / "probe" / "Dockerfile", dest / "Dockerfile")
    return dest


def context_tar(context: Path, out: Path) -> Path:
    """The context as the tarball an engine's build API takes."""
    with tarfile.open(out, "w:gz") as tar:
        for path in sorted(context.rglob("*")):
            if path.is_file():
                tar.add(path, arcname=str(path.relative_to(context)))
    return out


def engine_available() -> tuple[bool, str]:
    """(usable, reason): the optional package and a reachable container engine socket."""
    if importlib.util.find_spec("testcontainers") is None:
        return False, f"the k3s backend needs the optional package {TESTCONTAINERS_PIN!r} (not installed)"
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if host.startswith("unix://"):
        path = host[len("unix://") :]
        if not os.path.exists(path):
            return False, f"no container engine: {path} does not exist (set DOCKER_HOST to a running engine)"
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(2)
                s.connect(path)
        except OSError as e:
            return False, f"no container engine answering on {path}: {e.strerror or e}"
    return True, f"container engine at {host}"


class K3sBackend:
    name = "k3s"

    def provision(self, opts: Options) -> ClusterInfo:
        minor = check_minor(opts.k8s_version)
        ok, reason = engine_available()
        if not ok:
            raise BackendUnavailable(reason)
        return self._provision_with_engine(opts, minor)  # pragma: no cover - needs an engine

    def _provision_with_engine(self, opts: Options, minor: str) -> ClusterInfo:  # pragma: no cover
        import tempfile

        import docker  # shipped with testcontainers
        import yaml
        from testcontainers.k3s import K3SContainer

        from conformance.backends import preflight
        from conformance.backends.testbed import helm_binary

        work = Path(tempfile.mkdtemp(prefix=f"hami-k3s-{minor}-"))
        engine = docker.from_env()
        stack_df = REPO / "hami_stack" / "images" / "Dockerfile"
        if not stack_df.is_file():
            raise BackendError(f"cannot build the stack image: {stack_df.relative_to(REPO)} is missing")
        engine.images.build(path=str(REPO), dockerfile=str(stack_df), tag=STACK_IMAGE)
        engine.images.build(path=str(probe_build_context(work / "probe")), tag=PROBE_IMAGE)
        k3s = K3SContainer(image=image_for(minor))
        k3s.with_command(" ".join(server_command(minor)))
        k3s.start()
        tars = []
        for ref in (STACK_IMAGE, PROBE_IMAGE):
            tar = work / (ref.replace("/", "_").replace(":", "_") + ".tar")
            with open(tar, "wb") as f:
                for chunk in engine.images.get(ref).save(named=True):
                    f.write(chunk)
            k3s.get_wrapped_container().put_archive("/tmp", _tar_of(tar))
            tars.append(f"/tmp/{tar.name}")
        for cmd in import_commands(tars):
            rc, out = k3s.exec(cmd)
            if rc != 0:
                raise BackendError(f"{' '.join(cmd)} failed: {out!r}")
        kubeconfig = work / "kubeconfig"
        kubeconfig.write_text(k3s.config_yaml())
        values = work / "values.yaml"
        values.write_text(yaml.safe_dump(helm_values(minor)))
        import subprocess

        subprocess.run(
            [
                helm_binary(),
                "install",
                "hami",
                str(REPO / "hami_stack" / "chart"),
                "-n",
                opts.hami_namespace,
                "--create-namespace",
                "--kubeconfig",
                str(kubeconfig),
                "-f",
                str(values),
                "--wait",
                "--timeout",
                "300s",
            ],
            check=True,
        )
        kube = preflight.connect(str(kubeconfig))
        version, vendors = preflight.check(
            kube, where=f"k3s {minor}", namespace=opts.hami_namespace, vendor=opts.vendor, expect_minor=minor
        )
        return ClusterInfo(
            backend=self.name,
            kubeconfig=str(kubeconfig),
            minor=minor,
            git_version=str(version.get("gitVersion", "")),
            hami_namespace=opts.hami_namespace,
            scheduler_name=opts.scheduler_name,
            vendors=sorted(vendors),
            chart_values=helm_values(minor),
            state={"container": k3s.get_wrapped_container().id, "work": str(work)},
        )

    def teardown(self, info: ClusterInfo) -> None:  # pragma: no cover - needs an engine
        cid = info.state.get("container")
        if not cid or info.state.get("keep"):
            return
        import docker

        docker.from_env().containers.get(cid).remove(force=True)
        shutil.rmtree(info.state.get("work", ""), ignore_errors=True)


def _tar_of(path: Path) -> bytes:
    import io

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(path, arcname=path.name)
    return buf.getvalue()
