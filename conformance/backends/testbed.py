"""The default backend: the emulated testbed for one minor with the stack installed by its chart.

Steps (each timed, for ``bench/harness.py``): ``python -m testbed up --detach`` with the emulated
inventory -> ``helm install`` of ``hami_stack/chart`` -> wait until every GPU node of the inventory
carries the NVIDIA register annotation and non-zero ``nvidia.com/gpu`` capacity.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from conformance import contract as C
from conformance import progress
from conformance.backends import BackendError, ClusterInfo, Options, check_minor, preflight

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "hami_stack" / "chart"
INVENTORY = REPO / "inventories" / "emulated" / "two-nodes-a100.yaml"
# the emulated inventory each vendor runs on by default (--inventory overrides); a data-driven family
# finds inventories/emulated/two-nodes-<vendor>.yaml without an entry here
VENDOR_INVENTORIES = {"ascend": REPO / "inventories" / "emulated" / "two-nodes-ascend.yaml"}
# several vendors in one cell (--vendor nvidia,ascend or all): the mixed cluster of four families
MIXED_INVENTORY = REPO / "inventories" / "emulated" / "mixed-families.yaml"
# where a mixed inventory joined by the families it lacks is written (default_inventory)
INVENTORY_CACHE = Path.home() / ".cache" / "hami-conformance" / "inventories"
ASCEND_ENABLE = "devices.ascend.enabled=true"
RELEASE = "hami"


def _run(cmd: list[str], what: str, timeout: float) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, cwd=REPO)
    except subprocess.TimeoutExpired:
        raise BackendError(f"{what} did not finish within {timeout:.0f}s: {' '.join(cmd)}") from None
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip()[-1500:]
        raise BackendError(f"{what} failed (exit {proc.returncode}): {tail}")
    return proc


# Helm 4 supports Kubernetes 1.32 and newer (Helm's version skew policy: n-3); older clusters get Helm 3.
HELM4_FROM_MINOR = 32


def helm_binary(minor: str | None = None) -> str:
    """The helm for a cluster of ``minor``: Helm 3 below 1.32, else the newest cached."""
    from testbed.clients import helm_path, helm_skip_reason

    major = 3 if minor is not None and int(minor.split(".")[1]) < HELM4_FROM_MINOR else None
    path = helm_path(major=major) or (helm_path() if major is None else None)
    if path is None:
        raise BackendError(f"the testbed backend installs the stack with helm, and {helm_skip_reason(major)}")
    return str(path)


def helm_install_command(
    helm: str, kubeconfig: str, namespace: str, chart_set: list[str], timeout_s: int = 120
) -> list[str]:
    cmd = [
        helm,
        "install",
        RELEASE,
        str(CHART),
        "--namespace",
        namespace,
        "--create-namespace",
        "--kubeconfig",
        kubeconfig,
        "--wait",
        "--timeout",
        f"{timeout_s}s",
    ]
    for kv in chart_set:
        cmd += ["--set", kv]
    return cmd


def expected_gpu_nodes(inventory: Path) -> list[str]:
    from testbed.node.inventory import load_inventory

    inv = load_inventory(inventory)
    return [n.name for n in inv if "nvidia" in n.hardware and not n.simulated]


def expected_npu_nodes(inventory: Path) -> list[str]:
    from testbed.node.inventory import load_inventory

    return [n.name for n in load_inventory(inventory) if "ascend" in n.hardware and not n.simulated]


def family_nodes(inventory: Path) -> dict[str, list[str]]:
    """Executed nodes per data-driven family vendor (``hardware.<vendor>`` of testbed/hardware/families)."""
    from testbed.hardware.families import MODELS
    from testbed.node.inventory import load_inventory

    out: dict[str, list[str]] = {}
    for n in load_inventory(inventory):
        for vendor in sorted(set(n.hardware) & set(MODELS)):
            if not n.simulated:
                out.setdefault(vendor, []).append(n.name)
    return out


def expected_nodes(inventory: Path) -> dict[str, list[str]]:
    """Executed nodes per vendor the inventory gives hardware of."""
    return {
        "nvidia": expected_gpu_nodes(inventory),
        "ascend": expected_npu_nodes(inventory),
        **family_nodes(inventory),
    }


def default_inventory(vendors: list[str], scratch: Path | None = None) -> Path:
    """The emulated inventory a vendor selection runs on when --inventory is not given: the vendor's
    own; for several the smallest ``mixed-*.yaml`` with nodes of each, else the mixed-families cluster
    where a vendor it lacks (a family added since) joins with the first node of its two-nodes
    inventory, written to ``scratch``."""
    if len(vendors) == 1:
        vendor = vendors[0]
        own = REPO / "inventories" / "emulated" / f"two-nodes-{vendor}.yaml"
        return VENDOR_INVENTORIES.get(vendor) or (own if own.is_file() else INVENTORY)
    # the smallest mixed inventory that has every vendor (nvidia,ascend: mixed-nvidia-ascend.yaml)
    covering = []
    for path in sorted(MIXED_INVENTORY.parent.glob("mixed-*.yaml")):
        nodes = expected_nodes(path)
        if all(nodes.get(v) for v in vendors):
            covering.append((sum(len(n) for n in nodes.values()), path.name != MIXED_INVENTORY.name, path))
    if covering:
        return min(covering)[2]
    present = expected_nodes(MIXED_INVENTORY)
    missing = [v for v in vendors if not present.get(v)]
    if scratch is None:
        return MIXED_INVENTORY
    import yaml

    doc = yaml.safe_load(MIXED_INVENTORY.read_text())
    for vendor in missing:
        own = REPO / "inventories" / "emulated" / f"two-nodes-{vendor}.yaml"
        if not own.is_file():
            continue  # provision names the vendor without nodes
        raw = yaml.safe_load(own.read_text()) or {}
        defaults, node = raw.get("defaults") or {}, dict((raw.get("nodes") or [{}])[0])
        node["labels"] = {**(defaults.get("labels") or {}), **(node.get("labels") or {})}
        for key in ("capacity", "mode", "taints"):
            if key in defaults and key not in node:
                node[key] = defaults[key]
        doc["nodes"].append(node)
    text = yaml.safe_dump(doc, sort_keys=False)
    # named by its content: cells of the same selection share one file, and none is left per run
    out = scratch / f"mixed-families-{hashlib.sha256(text.encode()).hexdigest()[:12]}.yaml"
    scratch.mkdir(parents=True, exist_ok=True)
    if not out.is_file():
        tmp = out.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, out)
    return out


def family_chart_key(vendor: str) -> str:
    """The chart's ``devices.<key>`` section of a family vendor: the vendor's name, or its device-config
    section's when the chart names it so (kunlunxin -> kunlun)."""
    import yaml

    devices = (yaml.safe_load((CHART / "values.yaml").read_text()) or {}).get("devices") or {}
    if vendor in devices:
        return vendor
    from hami_stack.device_plugin.families.specs import SPECS

    for spec in SPECS.values():
        if spec.vendor == vendor and spec.config_section in devices:
            return spec.config_section
    return vendor


def device_share_npu_nodes(inventory: Path) -> list[str]:
    """Ascend nodes whose NPUs are set up for sharing (``hardware.ascend.device_share``)."""
    from testbed.node.inventory import load_inventory

    return [
        n.name
        for n in load_inventory(inventory)
        if (n.hardware.get("ascend") or {}).get("device_share") and not n.simulated
    ]


def vendor_chart_set(inventory: Path, chart_set: list[str]) -> list[str]:
    """The ``--set`` flags plus what the inventory's hardware needs: Ascend nodes enable Ascend, nodes
    of a data-driven family enable its family plugin DaemonSet (``devices.<vendor>.devicePlugin``)."""
    out = list(chart_set)
    if expected_npu_nodes(inventory) and not any(s.startswith("devices.ascend.enabled=") for s in out):
        out.append(ASCEND_ENABLE)
    import yaml

    devices = (yaml.safe_load((CHART / "values.yaml").read_text()) or {}).get("devices") or {}
    for vendor in family_nodes(inventory):
        section = family_chart_key(vendor)
        # a family off by default (upstream: Iluvatar) is turned on for its nodes, unless the caller
        # says otherwise (a disabled family is how its not-enabled message is tested)
        enabled = f"devices.{section}.enabled="
        off = not (devices.get(section) or {}).get("enabled", True)
        if off and not any(s.startswith(enabled) for s in out):
            out.append(enabled + "true")
        key = f"devices.{section}.devicePlugin.enabled="
        if not any(s.startswith(key) for s in out):
            out.append(key + "true")
    # Ascend nodes whose NPUs are set up for sharing run HAMi's hami-core mode (the node config)
    if not any(s.startswith("devices.ascend.nodeConfig") for s in out):
        for i, node in enumerate(device_share_npu_nodes(inventory)):
            out += [f"devices.ascend.nodeConfig[{i}].name={node}",
                    f"devices.ascend.nodeConfig[{i}].hamiVnpuMode=hami-core"]
    return out


def control_plane_facts(state: dict[str, Any]) -> dict[str, Any]:
    """The control plane a testbed runs (from its ``state.json``): a real one with its binaries'
    versions and module checksums, else ``{"controlPlane": "emulated"}``."""
    keys = ("controlPlane", "binaries", "go", "goSumSha256", "kubernetesModuleSum", "etcd")
    real = {k: state[k] for k in keys if k in state}
    return real or {"controlPlane": "emulated"}


def testbed_control_plane(kubeconfig: str) -> dict[str, Any] | None:
    """The control plane of the testbed whose own kubeconfig ``kubeconfig`` is (its data dir's
    ``state.json`` names exactly that file), else None: an existing cluster says nothing of it."""
    path = Path(kubeconfig).resolve()
    try:
        state = json.loads((path.parent / "state.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict) or Path(str(state.get("kubeconfig", ""))).resolve() != path:
        return None
    return control_plane_facts(state)


class TestbedBackend:
    name = "testbed"
    __test__ = False  # not a pytest test class despite the name

    def provision(self, opts: Options) -> ClusterInfo:
        minor = check_minor(opts.k8s_version)
        vendors = opts.vendor.split(",")
        inventory = (
            Path(opts.inventory)
            if opts.inventory
            else default_inventory(vendors, INVENTORY_CACHE)
        )
        if not inventory.is_file():
            raise BackendError(f"node inventory {inventory} does not exist")
        emulated = expected_nodes(inventory)
        for vendor in vendors:
            if not emulated.get(vendor):
                kinds = ", ".join(k for k, v in emulated.items() if v) or "no devices"
                raise BackendError(
                    f'no node of vendor "{vendor}" on the testbed: its emulated inventory {inventory.name} '
                    f"has {kinds} only"
                )
        chart_set = vendor_chart_set(inventory, opts.chart_set)
        if not (CHART / "Chart.yaml").is_file():
            raise BackendError(
                f"cannot deploy HAMi on the testbed: the chart {CHART.relative_to(REPO)} "
                "is not in this checkout"
            )
        helm = helm_binary(minor)
        data_dir = Path(tempfile.mkdtemp(prefix=f"hami-conformance-{minor}-"))
        info = ClusterInfo(
            backend=self.name,
            kubeconfig="",
            minor=minor,
            git_version="",
            hami_namespace=opts.hami_namespace,
            scheduler_name=opts.scheduler_name,
            state={"data_dir": str(data_dir), "keep": opts.keep_cluster},
        )
        try:
            self._up(info, minor, data_dir, inventory)
            progress.phase("deploy")
            t = time.monotonic()
            # a mixed cluster starts a plugin DaemonSet per family: helm's --wait gets longer (and
            # --cluster-timeout raises it further)
            helm_wait = max(300 if len(vendors) > 1 else 120, int(opts.timeout))
            _run(
                helm_install_command(helm, info.kubeconfig, opts.hami_namespace, chart_set, helm_wait),
                "helm install of the HAMi chart",
                max(opts.timeout, helm_wait + 30),
            )
            info.timings["helm_s"] = round(time.monotonic() - t, 3)
            info.chart_values = _values(chart_set)
            progress.phase("register")
            t = time.monotonic()
            nodes = sorted({n for names in emulated.values() for n in names})
            self._wait_registered(info, nodes, opts.timeout)
            info.timings["register_s"] = round(time.monotonic() - t, 3)
            # added to what `_up` recorded (the control plane and its binaries), not in its place
            info.system.update(system_facts(chart_set, data_dir))
            kube = preflight.connect(info.kubeconfig)
            try:
                version, vendors = preflight.check(
                    kube,
                    where=f"testbed {minor}",
                    namespace=opts.hami_namespace,
                    vendor=opts.vendor,
                    expect_minor=minor,
                )
            finally:
                kube.close()
            info.git_version = str(version.get("gitVersion", ""))
            info.vendors = sorted(vendors)
        except BaseException:
            if not opts.keep_cluster:
                self.teardown(info)
            raise
        return info

    def _up(self, info: ClusterInfo, minor: str, data_dir: Path, inventory: Path) -> None:
        t = time.monotonic()
        _run(
            [
                sys.executable,
                "-m",
                "testbed",
                "up",
                "--k8s",
                minor,
                "--port",
                "0",
                "--detach",
                "--data-dir",
                str(data_dir),
                "--nodes",
                str(inventory),
                "--image-catalog",
                str(self._image_catalog(data_dir)),
            ],
            f"testbed up --k8s {minor}",
            240,
        )
        state = json.loads((data_dir / "state.json").read_text())
        info.kubeconfig = state["kubeconfig"]
        info.git_version = state.get("gitVersion", "")
        info.system["controlPlane"] = control_plane_facts(state)
        info.timings["provision_s"] = round(time.monotonic() - t, 3)

    @staticmethod
    def _image_catalog(data_dir: Path) -> Path:
        """The node agents' map from the chart's images to the stack's commands."""
        from hami_stack.images.testbed_catalog import write_catalog

        return Path(write_catalog(data_dir / "image-catalog.yaml"))

    def _wait_registered(self, info: ClusterInfo, nodes: list[str], timeout: float) -> None:
        kube = preflight.connect(info.kubeconfig)
        deadline = time.monotonic() + timeout
        missing: list[str] = nodes
        try:
            while True:
                by_name = {n["metadata"]["name"]: n for n in kube.get("/api/v1/nodes").get("items") or []}
                missing = [name for name in nodes if not _registered(by_name.get(name), family_signs())]
                if not missing:
                    return
                if time.monotonic() > deadline:
                    raise BackendError(
                        f"the HAMi device plugins did not register on {', '.join(missing)} within "
                        f"{timeout:.0f}s (no {C.NVIDIA_REGISTER} / hami.io/node-register-Ascend* / family "
                        f"register annotation, or no {C.GPU} / huawei.com/Ascend* / family count capacity); "
                        f"logs in {info.state['data_dir']}/logs"
                    )
                time.sleep(0.5)
        finally:
            kube.close()

    def teardown(self, info: ClusterInfo) -> None:
        data_dir = info.state.get("data_dir")
        if not data_dir or info.state.get("keep"):
            return
        subprocess.run(
            [sys.executable, "-m", "testbed", "down", "--data-dir", data_dir],
            capture_output=True,
            text=True,
            # 120 s was too short on a loaded machine: nine matrix cells at load 50 each took over 2
            # minutes to go down (pods' grace, /proc scans), failing a session whose cases all passed
            timeout=300,
            check=False,
            cwd=REPO,
        )
        shutil.rmtree(data_dir, ignore_errors=True)


def family_signs() -> dict[str, tuple[str, str]]:
    """Per family plugin (``specs.SPECS`` name; a vendor may have several): (count resource, register
    annotation or "" for capacity-only families), from the stack's default resource names."""
    from hami_stack.device_plugin.families.specs import REGISTER_CAPACITY, SPECS

    out = {}
    for name, spec in SPECS.items():
        family = spec.make_family(None)
        register = "" if spec.register == REGISTER_CAPACITY else family.keys.register
        out[name] = (family.count_resource, register)
    return out


def _registered(node: dict[str, Any] | None, families: dict[str, tuple[str, str]] | None = None) -> bool:
    """NVIDIA nodes: the register annotation and nvidia.com/gpu capacity; Ascend nodes: a
    hami.io/node-register-Ascend* annotation and capacity of its huawei.com/<CW> resource; nodes of
    a data-driven family (``families``: vendor -> count resource, register key): its count capacity
    and, unless it is capacity-only, its register annotation."""
    if node is None:
        return False
    annotations = node["metadata"].get("annotations") or {}
    cap = (node.get("status") or {}).get("capacity") or {}

    def positive(resource: str) -> bool:
        try:
            return C.parse_quantity_int(str(cap.get(resource, "0"))) > 0
        except ValueError:
            return False

    for count, register in (families or {}).values():
        if positive(count) and (not register or register in annotations):
            return True
    if C.NVIDIA_REGISTER in annotations:
        return positive(C.GPU)
    prefix = "hami.io/node-register-Ascend"
    cws = [k.removeprefix("hami.io/node-register-") for k in annotations if k.startswith(prefix)]
    return bool(cws) and all(positive(f"huawei.com/{cw}") for cw in cws)


def _typed(value: str) -> Any:
    """A ``--set`` value as Helm types it: true/false, null, integers; anything else a string."""
    if value in ("true", "false"):
        return value == "true"
    if value == "null":
        return None
    try:
        return int(value)
    except ValueError:
        return value


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def effective_values(chart_set: list[str]) -> dict[str, Any]:
    """The values the chart was rendered with: its defaults with the ``--set`` flags applied."""
    import yaml

    defaults = yaml.safe_load((CHART / "values.yaml").read_text()) or {}
    typed = _values(chart_set, convert=_typed)
    return _merge(defaults, typed)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def system_facts(chart_set: list[str], data_dir: Path) -> dict[str, Any]:
    """What identifies the installed stack on the testbed: the effective chart values' digest, the
    image catalog's mapping (the testbed's stand-in for image digests: which command each chart
    image runs) and the digest of every libvgpu.so the device plugins installed on the nodes."""
    facts: dict[str, Any] = {
        "chartValuesSha256": hashlib.sha256(_canonical(effective_values(chart_set))).hexdigest(),
        "chartValuesSource": "chart defaults + --chart-set",
    }
    catalog = data_dir / "image-catalog.yaml"
    if catalog.is_file():
        import yaml

        entries = (yaml.safe_load(catalog.read_text()) or {}).get("images") or []
        facts["imageDigests"] = {
            str(e.get("match")): hashlib.sha256(_canonical(e)).hexdigest()
            for e in entries
            if isinstance(e, dict)
        }
        facts["imageDigestsSource"] = "testbed image catalog (sha256 of each mapping entry)"
    shims = {
        str(p.relative_to(data_dir)): _sha256_file(p)
        for p in sorted(data_dir.rglob("libvgpu.so"))
        if p.is_file() and not p.is_symlink()
    }
    if shims:
        digests = sorted(set(shims.values()))
        facts["shimSha256"] = digests[0] if len(digests) == 1 else "mixed:" + ",".join(digests)
        facts["shimInstalled"] = shims
    return facts


def _values(chart_set: list[str], convert: Any = str) -> dict[str, Any]:
    """``--set a.b=c`` flags as the nested values they produce (for the environment capture)."""
    out: dict[str, Any] = {}
    for kv in chart_set:
        key, _, value = kv.partition("=")
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = convert(value)
    return out
