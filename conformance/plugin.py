"""pytest plugin of the conformance harness (registered by the root ``conftest.py``).

It stays inert in the project's own test runs: it only provisions a cluster, records a run and
builds a bundle when the suites are selected (``pytest conformance/suites ...``) or ``--cluster`` is
given. Bad input (an unknown minor, profile or backend, an unreachable cluster, a cluster without
HAMi, a vendor with no nodes) stops the session before any test runs with a one-line reason and
exit code 4, and leaves no run directory or bundle behind.

With pytest-xdist the controller provisions the cluster and owns the run writer; workers receive
the cluster description through ``workerinput`` and send their reports back, so there is one
writer per session. Each test gets its own namespace. On the testbed backend each worker gets a
cluster of its own (provisioned at once by the controller, identical by construction): cases that
fill a GPU or a node would otherwise meet another worker's pods, placed by the scheduler where the
harness cannot keep them apart. An existing cluster (kubeconfig, k3s) is shared by the workers.
"""

from __future__ import annotations

import os
import secrets
import signal
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from conformance import cases, profiles
from conformance.backends import (
    DEFAULT_MINOR,
    MINORS,
    BackendError,
    BackendUnavailable,
    ClusterInfo,
    Options,
    check_minor,
    get_backend,
)
from conformance.recording import (
    PROP,
    CaseIdentity,
    Recorder,
    capture_environment,
    project_commit,
    running_images,
    system_under_test,
)

REPO = Path(__file__).resolve().parents[1]
SUITES = REPO / "conformance" / "suites"
WORKER_KEY = "hami_conformance_cluster"
WORKER_RUN_DIR = "hami_conformance_run_dir"
STATE_KEY = pytest.StashKey["HarnessState"]()
TOOL_VERSION = "0.1.0"


class HarnessState:
    def __init__(self, opts: Options, profile: Any, vendors: list[str] | None = None) -> None:
        self.opts = opts
        self.profile = profile  # a Profile, or a CombinedProfile for several vendors
        self.vendors = vendors or [opts.vendor]
        self.cluster: ClusterInfo | None = None
        self.worker_clusters: list[ClusterInfo] = []  # testbed with xdist: one per worker, [0] is cluster
        self.identities: dict[str, Any] = {}  # what the workers' clusters were checked to share
        self.skip_reason = ""
        self.run_dir: Path | None = None
        self.out_dir: Path | None = None
        self.recorder: Recorder | None = None
        self.backend: Any = None
        self.run_id = ""
        self.bundle: Path | None = None
        self.started = time.monotonic()
        self.sensitivity: dict[str, Any] | None = None
        self.user_deselected = 0  # this vendor's cases deselected by -k, -m or another plugin
        self.verdict = ""


# --- options and markers -----------------------------------------------------------------------


def _lab_hosts() -> dict[str, Any]:
    """Facts of an Ansible-provisioned lab's hosts (OS, kernel, accelerators), when the run is part of
    ``hami-conformance certify``: its conformance role names the file in $HAMI_CONFORMANCE_LAB_FACTS."""
    import json

    path = os.environ.get("HAMI_CONFORMANCE_LAB_FACTS")
    if not path:
        return {}
    try:
        return {"labHosts": json.loads(Path(path).read_text())}
    except (OSError, ValueError) as e:
        return {"labHosts": {"error": f"{path}: {e}"}}


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("hami-conformance", "HAMi conformance suites (run: pytest conformance/suites ...)")
    g.addoption(
        "--cluster",
        choices=("testbed", "kubeconfig", "k3s"),
        default=None,
        help="where the suites run: testbed (default; emulated cluster + the stack's chart), "
        "kubeconfig (an existing cluster with HAMi), k3s (k3s container via testcontainers)",
    )
    g.addoption("--kubeconfig", default=None, help="kubeconfig of the cluster for --cluster kubeconfig")
    g.addoption(
        "--k8s-version",
        default=DEFAULT_MINOR,
        metavar="MINOR",
        help=f"Kubernetes minor for testbed and k3s, {MINORS[0]}..{MINORS[-1]} (default {DEFAULT_MINOR})",
    )
    g.addoption(
        "--vendor",
        default="nvidia",
        help=f"vendor family whose suites run (default nvidia): one of {', '.join(cases.VENDORS)}, "
        "a comma list (nvidia,ascend: one cell, one cluster) or all (every vendor with a profile)",
    )
    g.addoption(
        "--profile",
        default=None,
        help="profile naming what must pass (default: the vendor's; name or YAML path)",
    )
    g.addoption("--hami-namespace", default="hami-system", help="namespace HAMi is (or gets) installed in")
    g.addoption(
        "--hami-scheduler-name",
        default="hami-scheduler",
        help="scheduler name HAMi's webhook writes into pods (chart value schedulerName)",
    )
    g.addoption("--keep-cluster", action="store_true", help="leave the provisioned cluster running")
    g.addoption(
        "--bundle-dir",
        default=None,
        help="where the run, Allure results and the certification bundle go (default reports/out/<run id>)",
    )
    g.addoption("--signing-key", default=None, help="Ed25519 private key (PEM) that signs the bundle")
    g.addoption(
        "--chart-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra helm --set for the testbed backend (repeatable)",
    )
    g.addoption("--node-inventory", default=None, help="node inventory for the testbed backend")
    g.addoption(
        "--sensitivity",
        default=None,
        metavar="FILE",
        help="the self-test's sensitivity.json to carry in the bundle (must be of this checkout's commit)",
    )
    g.addoption(
        "--cluster-timeout",
        type=float,
        default=180.0,
        help="seconds to wait for provisioning and device registration",
    )


def _register_markers(config: pytest.Config) -> None:
    for vendor in cases.VENDORS:
        config.addinivalue_line("markers", f"{vendor}: conformance case for {cases.VENDOR_TITLES[vendor]}")
    for cap, text in cases.CAPABILITIES.items():
        config.addinivalue_line("markers", f"{cap}: capability - {text}")
    config.addinivalue_line(
        "markers", "rule(rule_id, text): the HAMi contract rule a conformance case checks"
    )


def _suites_selected(config: pytest.Config) -> bool:
    if config.getoption("--cluster") is not None:
        return True
    for arg in config.args:
        path = Path(str(arg).split("::", 1)[0])
        path = (Path(config.invocation_params.dir) / path).resolve() if not path.is_absolute() else path
        if path == SUITES or SUITES in path.parents or path == SUITES.parent:
            return True
    return False


def _vendor(config: pytest.Config) -> str:
    """``--vendor``; without it, a ``-m`` that names exactly one vendor (``pytest -m ascend``) picks it."""
    args = [str(a) for a in config.invocation_params.args]
    explicit = any(a == "--vendor" or a.startswith("--vendor=") for a in args)
    markexpr = str(config.getoption("markexpr", "") or "").strip()
    if not explicit and markexpr in cases.VENDORS:
        return markexpr
    return str(config.getoption("--vendor"))


def _options(config: pytest.Config) -> Options:
    return Options(
        cluster=config.getoption("--cluster") or "testbed",
        kubeconfig=config.getoption("--kubeconfig"),
        k8s_version=config.getoption("--k8s-version"),
        vendor=_vendor(config),
        hami_namespace=config.getoption("--hami-namespace"),
        scheduler_name=config.getoption("--hami-scheduler-name"),
        keep_cluster=config.getoption("--keep-cluster"),
        chart_set=list(config.getoption("--chart-set")),
        inventory=config.getoption("--node-inventory"),
        timeout=config.getoption("--cluster-timeout"),
    )


def validate(config: pytest.Config) -> HarnessState:
    """Check the options alone (no cluster yet); raise UsageError with the reason."""
    opts = _options(config)
    try:
        if opts.cluster in ("testbed", "k3s"):
            opts.k8s_version = check_minor(opts.k8s_version)
    except BackendError as e:
        raise pytest.UsageError(str(e)) from None
    if opts.cluster == "kubeconfig" and not (opts.kubeconfig or os.environ.get("KUBECONFIG")):
        raise pytest.UsageError("--cluster kubeconfig needs --kubeconfig PATH (or $KUBECONFIG)")
    from conformance.vendorsel import VendorError, parse_vendors

    try:
        vendors = parse_vendors(opts.vendor)
    except VendorError as e:
        raise pytest.UsageError(str(e)) from None
    opts.vendor = ",".join(vendors)
    profile: Any
    if len(vendors) > 1:
        from conformance.profiles.combined import CombinedProfile

        if config.getoption("--profile"):
            raise pytest.UsageError("--profile names one vendor's profile; with several vendors each "
                                    "runs under its own default profile")
        try:
            profile = CombinedProfile([profiles.load_profile(v) for v in vendors])
        except profiles.ProfileError as e:
            raise pytest.UsageError(str(e)) from None
    else:
        name = config.getoption("--profile") or opts.vendor
        try:
            profile = profiles.load_profile(name)
        except profiles.ProfileError as e:
            raise pytest.UsageError(str(e)) from None
        if profile.vendor != opts.vendor:
            raise pytest.UsageError(
                f'profile "{profile.name}" is for vendor {profile.vendor}, not {opts.vendor}'
            )
    key = config.getoption("--signing-key")
    if key and not Path(key).is_file():
        raise pytest.UsageError(f"--signing-key {key}: no such file")
    state = HarnessState(opts, profile, vendors)
    sens_file = config.getoption("--sensitivity")
    if sens_file:
        from reports import sensitivity
        from reports.model import RunInputError

        try:
            state.sensitivity = sensitivity.load(sens_file, commit=project_commit(REPO))
        except RunInputError as e:
            raise pytest.UsageError(f"--sensitivity: {e}") from None
    return state


def pytest_configure(config: pytest.Config) -> None:
    _register_markers(config)
    if not _suites_selected(config):
        return
    state = validate(config)
    config.stash[STATE_KEY] = state
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        if WORKER_KEY in workerinput:
            state.cluster = ClusterInfo.from_json(workerinput[WORKER_KEY])
        state.skip_reason = workerinput.get("hami_conformance_skip", "")
        if workerinput.get(WORKER_RUN_DIR):
            state.run_dir = Path(workerinput[WORKER_RUN_DIR])
    elif config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_XdistHooks(state), "hami-conformance-xdist")
    # hami-conformance run: live progress (controller) and one retry of failed cases (where they run)
    from conformance import progress, retry

    if workerinput is None and os.environ.get(progress.ENV):
        config.pluginmanager.register(progress.Hooks(), "hami-conformance-progress")
    if retry.enabled():
        config.pluginmanager.register(retry.RetryHooks(), "hami-conformance-retry")
    if workerinput is None:
        # A terminated run still tears its cluster down: pytest finishes the session on an interrupt.
        signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt("terminated")


class _XdistHooks:
    """Registered only when xdist is loaded (its hook would be unknown otherwise)."""

    def __init__(self, state: HarnessState) -> None:
        self.state = state

    def pytest_configure_node(self, node: Any) -> None:
        clusters = self.state.worker_clusters
        if clusters:
            node.workerinput[WORKER_KEY] = clusters[_worker_index(node) % len(clusters)].to_json()
        elif self.state.cluster is not None:
            node.workerinput[WORKER_KEY] = self.state.cluster.to_json()
        node.workerinput["hami_conformance_skip"] = self.state.skip_reason
        if self.state.run_dir is not None:
            node.workerinput[WORKER_RUN_DIR] = str(self.state.run_dir)


def _worker_index(node: Any) -> int:
    """xdist's worker number (gateway ids are ``gw0``, ``gw1``, ...)."""
    gid = str(getattr(getattr(node, "gateway", None), "id", "gw0"))
    return int(gid[2:]) if gid[2:].isdigit() else 0


def _workers(config: pytest.Config) -> int:
    """How many xdist workers the session starts (0 without xdist or with ``--dist no``)."""
    if not config.pluginmanager.hasplugin("xdist") or config.getoption("dist", "no") == "no":
        return 0
    n = config.getoption("numprocesses", 0)
    return n if isinstance(n, int) else 0


def _provision_workers(config: pytest.Config, state: HarnessState, backend: Any, n: int) -> None:
    """``n`` clusters at once, one per worker; all torn down if any fails."""
    from concurrent.futures import ThreadPoolExecutor

    _progress(config, f"hami-conformance: provisioning {n} {state.opts.cluster} clusters, one per worker")
    with ThreadPoolExecutor(n) as pool:
        futures = [pool.submit(backend.provision, state.opts) for _ in range(n)]
        done: list[ClusterInfo] = []
        errors: list[BaseException] = []
        for f in futures:
            try:
                done.append(f.result())
            except BaseException as e:  # each failure is kept; the first is raised below
                errors.append(e)
    try:
        if errors:
            raise errors[0]
        state.identities = _cluster_identities(done)
    except BaseException:
        for c in done:
            if not state.opts.keep_cluster:
                backend.teardown(c)
        raise
    state.worker_clusters = done
    state.cluster = done[0]


def _state(config: pytest.Config) -> HarnessState | None:
    return config.stash.get(STATE_KEY, None)


# --- session: provision, record, bundle -------------------------------------------------------


def _run_id(opts: Options, minor: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{opts.vendor.replace(',', '+')}-{minor}-{secrets.token_hex(2)}"


def pytest_sessionstart(session: pytest.Session) -> None:
    config = session.config
    state = _state(config)
    if state is None or hasattr(config, "workerinput"):
        return
    opts = state.opts
    try:
        backend = get_backend(opts.cluster)
        state.backend = backend
        _progress(
            config,
            f"hami-conformance: provisioning the {opts.cluster} backend "
            f"({opts.vendor}, {opts.k8s_version if opts.cluster != 'kubeconfig' else 'existing cluster'})",
        )
        workers = _workers(config)
        if workers > 1 and opts.cluster == "testbed":
            _provision_workers(config, state, backend, workers)
        else:
            state.cluster = backend.provision(opts)
    except BackendUnavailable as e:
        state.skip_reason = f"{opts.cluster} backend unavailable: {e}"
        _progress(config, f"hami-conformance: {state.skip_reason}; the suites are skipped")
        return
    except BackendError as e:
        raise pytest.UsageError(f"hami-conformance: {e}") from None
    cluster = state.cluster
    if not state.profile.covers(cluster.minor):
        _teardown(state)
        raise pytest.UsageError(
            f'profile "{state.profile.name}" {state.profile.version} '
            f"does not cover Kubernetes {cluster.minor}"
        )
    state.run_id = _run_id(opts, cluster.minor)
    base = config.getoption("--bundle-dir")
    state.out_dir = Path(base).resolve() if base else REPO / "reports" / "out" / state.run_id
    state.run_dir = state.out_dir / "run"
    _start_recording(config, state)


def _start_recording(config: pytest.Config, state: HarnessState) -> None:
    from kubeclient.client import Kube
    from reports.model import RunMetadata
    from reports.runio import RunWriter, utc_now

    assert state.cluster is not None and state.run_dir is not None
    cluster = state.cluster
    meta = RunMetadata(
        run_id=state.run_id,
        project_commit=project_commit(REPO),
        started=utc_now(),
        tool_version=TOOL_VERSION,
        backend=cluster.backend,
        hami_namespace=cluster.hami_namespace,
        chart_values=cluster.chart_values,
        profile=state.profile.name,
        profile_version=state.profile.version,
        url=os.environ.get("HAMI_CONFORMANCE_RUN_URL", ""),
        product={"platformName": "HAMi", "vendorName": state.opts.vendor},
        required_rules=state.profile.required_rules(cluster.minor),
        system_under_test=system_under_test(REPO, cluster.system, cluster.chart_values),
    )
    if state.identities:
        meta.system_under_test["clusters"] = state.identities
    writer = RunWriter(state.run_dir, meta)
    kube = Kube.from_config(cluster.kubeconfig, user_agent="hami-conformance")
    try:
        version = kube.get("/version")
        env = capture_environment(
            kube,
            version,
            {"timings": cluster.timings, "vendors": cluster.vendors, "gitVersion": cluster.git_version,
             **_lab_hosts()},
        )
        images = running_images(kube, cluster.hami_namespace)
        if images:
            meta.system_under_test["runningImages"] = images
    finally:
        kube.close()
    writer.set_environment(env)
    state.recorder = Recorder(writer)
    allure_dir = config.getoption("--alluredir", None) if _has_allure(config) else None
    from reports import allure as allure_files

    target = Path(allure_dir) if allure_dir else state.out_dir / "allure-results"  # type: ignore[operator]
    allure_files.write_environment(target, env, meta)
    allure_files.write_categories(target)


def _cluster_identities(clusters: list[ClusterInfo]) -> dict[str, Any]:
    """The workers' clusters, and whether they are the same system: what identifies a cluster's stack
    and control plane must be equal in all (a run on differing clusters is refused)."""
    keys = ("chartValuesSha256", "imageDigests", "shimSha256", "controlPlane")
    first = {k: clusters[0].system.get(k) for k in keys}
    for c in clusters[1:]:
        other = {k: c.system.get(k) for k in keys}
        if other != first or c.git_version != clusters[0].git_version:
            differ = sorted(k for k in keys if other[k] != first[k]) or ["gitVersion"]
            raise BackendError(f"the workers' clusters are not the same system ({', '.join(differ)} differ)")
    return {"count": len(clusters), "identical": [*sorted(keys), "gitVersion"]}


def _has_allure(config: pytest.Config) -> bool:
    return config.pluginmanager.hasplugin("allure_pytest")


def _progress(config: pytest.Config, text: str) -> None:
    tr = config.pluginmanager.get_plugin("terminalreporter")
    if tr is not None:
        tr.write_line(text)
    else:
        print(text, file=sys.stderr, flush=True)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # Runs in the controller for every report (xdist forwards the workers' reports here).
    state = _CURRENT.get("state")
    if state is not None and state.recorder is not None:
        state.recorder.on_report(report)


_CURRENT: dict[str, HarnessState] = {}


@pytest.hookimpl(tryfirst=True)
def pytest_collection(session: pytest.Session) -> None:
    state = _state(session.config)
    if state is not None and not hasattr(session.config, "workerinput"):
        _CURRENT["state"] = state


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    state = _state(session.config)
    if state is None or hasattr(session.config, "workerinput"):
        return
    _CURRENT.pop("state", None)
    try:
        if state.recorder is not None and exitstatus != pytest.ExitCode.USAGE_ERROR:
            state.recorder.writer.metadata.selection = selection(session, state, int(exitstatus))
            _finish_bundle(session.config, state)
            if state.verdict:
                # one verdict everywhere: the session's exit code is the bundle's verdict's
                from reports.summary import EXIT_CODES

                session.exitstatus = EXIT_CODES[state.verdict]
    finally:
        _teardown(state)


def selection(session: pytest.Session, state: HarnessState, exitstatus: int) -> dict[str, Any]:
    """How the cases were chosen and whether the session ran to its end (the run's ``selection``).

    Filtered: a ``-k`` expression, a ``-m`` expression other than the vendor's own marker, cases of
    this vendor deselected by anything, or paths/node ids narrower than the whole suites folder.
    Interrupted: Ctrl-C or SIGTERM, ``-x``/``--maxfail`` stopping early, or a collection error.
    """
    config = session.config
    keyword = str(config.getoption("keyword", "") or "")
    markexpr = str(config.getoption("markexpr", "") or "")
    reasons = []
    if keyword:
        reasons.append(f"-k {keyword!r}")
    if markexpr and markexpr.strip() != state.opts.vendor:  # (several vendors: any -m filters)
        reasons.append(f"-m {markexpr!r}")
    if state.user_deselected:
        reasons.append(f"{state.user_deselected} case(s) deselected")
    narrower = [a for a in config.args if not _whole_suites(config, a)]
    if narrower:
        reasons.append(f"only {', '.join(map(str, narrower))} selected")
    interrupted_by = ""
    if exitstatus == pytest.ExitCode.INTERRUPTED:
        interrupted_by = "interrupted (Ctrl-C or SIGTERM)"
    elif session.shouldstop:
        interrupted_by = f"stopped early: {session.shouldstop}"
    elif session.shouldfail:
        interrupted_by = f"stopped early: {session.shouldfail}"
    elif exitstatus == pytest.ExitCode.INTERNAL_ERROR:
        interrupted_by = "internal error"
    if getattr(session, "testsfailed", 0) and exitstatus not in (0, 1):
        interrupted_by = interrupted_by or f"pytest exit status {exitstatus}"
    return {
        "filtered": bool(reasons),
        "reasons": reasons,
        "keyword": keyword,
        "markexpr": markexpr,
        "args": [str(a) for a in config.args],
        "deselected": state.user_deselected,
        "interrupted": bool(interrupted_by),
        "interruptedBy": interrupted_by,
        "pytestExitStatus": exitstatus,
    }


def _whole_suites(config: pytest.Config, arg: Any) -> bool:
    path = Path(str(arg).split("::", 1)[0])
    path = (Path(config.invocation_params.dir) / path).resolve() if not path.is_absolute() else path
    return "::" not in str(arg) and path in (SUITES, SUITES.parent, REPO)


def pytest_deselected(items: list[pytest.Item]) -> None:
    state = _CURRENT.get("state")
    if state is None:
        return
    state.user_deselected += sum(
        1
        for item in items
        if item.get_closest_marker("rule") is not None
        and any(item.get_closest_marker(v) is not None for v in state.vendors)
    )


def _finish_bundle(config: pytest.Config, state: HarnessState) -> None:
    from reports.bundle import BundleError, build
    from reports.model import RunInputError
    from reports.summary import decide

    assert state.recorder is not None and state.out_dir is not None
    run = state.recorder.writer.finalise()
    key = config.getoption("--signing-key")
    try:
        state.bundle = build(
            run,
            state.out_dir / "bundle",
            signing_key=Path(key) if key else None,
            sensitivity=state.sensitivity,
        )
    except (RunInputError, BundleError, ValueError) as e:
        _progress(config, f"hami-conformance: no bundle written: {e}")
        return
    decision = decide(run)
    state.verdict = decision.verdict
    counts: dict[str, int] = {}
    for c in run.cases:
        counts[c.outcome] = counts.get(c.outcome, 0) + 1
    summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "no cases"
    why = "; ".join(decision.reasons)
    _progress(config, f"hami-conformance: {summary}; verdict {decision.verdict}: {why}")
    _progress(config, f"hami-conformance: bundle written: {state.bundle}")


def _teardown(state: HarnessState) -> None:
    if state.cluster is None or state.backend is None:
        return
    if state.opts.keep_cluster:
        return
    clusters = state.worker_clusters or [state.cluster]
    try:
        if len(clusters) == 1:
            state.backend.teardown(clusters[0])
        else:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(len(clusters)) as pool:
                list(pool.map(state.backend.teardown, clusters))
    finally:
        state.cluster = None
        state.worker_clusters = []


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    state = _state(config)
    if state is None or hasattr(config, "workerinput"):
        return
    if state.cluster is not None and state.opts.keep_cluster:
        for c in state.worker_clusters or [state.cluster]:
            terminalreporter.write_line(f"hami-conformance: cluster kept; kubeconfig {c.kubeconfig}")


# --- collection: identity, profile, vendor selection -------------------------------------------


def _marker_value(item: pytest.Item, names: tuple[str, ...] | list[str]) -> str | None:
    for name in names:
        if item.get_closest_marker(name) is not None:
            return name
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    state = _state(config)
    if state is None:
        return
    keep, drop = [], []
    minor = state.cluster.minor if state.cluster else state.opts.k8s_version
    for item in items:
        mark = item.get_closest_marker("rule")
        if mark is None:
            keep.append(item)
            continue
        vendor = _marker_value(item, cases.VENDORS)
        if vendor not in state.vendors:
            drop.append(item)
            continue
        capability = _marker_value(item, list(cases.CAPABILITIES))
        if capability is None:
            raise pytest.UsageError(f"{item.nodeid}: conformance case without a capability marker")
        rule_id, text = mark.args[0], mark.args[1]
        ai = mark.kwargs.get("ai")
        requirement = (
            state.profile.requirement(rule_id, minor, vendor)
            if len(state.vendors) > 1
            else state.profile.requirement(rule_id, minor)
        )
        identity = CaseIdentity(
            vendor=vendor,
            minor=minor,
            capability=capability,
            rule_id=rule_id,
            rule_text=text,
            requirement=requirement,
            ai=list(ai) if ai else None,
        )
        item.user_properties.append((PROP, identity.__dict__))
        if state.skip_reason:
            item.add_marker(pytest.mark.skip(reason=state.skip_reason))
        elif requirement == "not-applicable":
            item.add_marker(
                pytest.mark.skip(
                    reason=f"not applicable to {vendor} {minor} in profile "
                    f"{state.profile.name} {state.profile.version}"
                )
            )
        keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest) -> ClusterInfo:
    """The cluster under test (provisioned by the controller, shared by every worker)."""
    state = _state(request.config)
    if state is None:
        pytest.skip("the conformance suites run with: pytest conformance/suites [--cluster ...]")
    if state.cluster is None:
        pytest.skip(state.skip_reason or "no cluster was provisioned")
    return state.cluster


@pytest.fixture(scope="session")
def kube(cluster: ClusterInfo) -> Iterator[Any]:
    from kubeclient.client import Kube

    k = Kube.from_config(cluster.kubeconfig, user_agent="hami-conformance")
    yield k
    k.close()


@pytest.fixture
def namespace(kube: Any, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test: parallel tests never see each other's pods or quotas."""
    from conformance.kube import create_namespace, delete_namespace

    name = create_namespace(kube, "hc")
    yield name
    # --keep-cluster keeps a failed case's pods for inspection; a passed case's pods would only hold
    # GPUs that later cases (which start from idle GPUs and nodes) then wait for
    rep = getattr(request.node, "rep_call", None)
    if not request.config.getoption("--keep-cluster") or not (rep is not None and rep.failed):
        delete_namespace(kube, name)


@pytest.fixture
def workloads(
    kube: Any, namespace: str, cluster: ClusterInfo, request: pytest.FixtureRequest
) -> Iterator[Any]:
    from conformance.kube import REAL_SCHEDULER_RETRY_S, Workloads

    emulated = (cluster.system.get("controlPlane") or {}).get("controlPlane") == "emulated"
    w = Workloads(kube, namespace, scheduler_name=cluster.scheduler_name,
                  attach=lambda name, text: attach_text(request, name, text),
                  schedule_timeout=None if emulated else REAL_SCHEDULER_RETRY_S)
    yield w
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        _attach_failure_evidence(request, w)


def _attach_failure_evidence(request: pytest.FixtureRequest, w: Any) -> None:
    """A failed case keeps its pods' state and events, and every container log raw (probe output
    included): the failure message quotes a tail, the attachment holds everything."""
    from conformance.kube import describe_pod
    from kubeclient.client import ApiError

    lines = []
    for name in w.created:
        try:
            pod = w.get(name)
        except ApiError as e:
            lines.append(f"== pod {name}: unavailable ({e})")
            continue
        lines.append(f"== pod {name}: {describe_pod(pod)}\n   events: {w.event_summary(name)}")
        spec = pod.get("spec") or {}
        for c in (spec.get("initContainers") or []) + (spec.get("containers") or []):
            key = (name, c["name"])
            try:
                text = w.log(name, c["name"])
            except ApiError:
                text = w.logs.get(key)
            if text:
                attach_text(request, f"log-{name}-{c['name']}.txt", text)
    attach_text(request, "events.txt", "\n".join(lines))


@pytest.fixture
def attach(request: pytest.FixtureRequest) -> Any:
    """``attach(name, text)``: keep a file (probe JSON, events) as evidence of this case."""
    return lambda name, text: attach_text(request, name, text)


def attach_text(request: pytest.FixtureRequest, name: str, text: str) -> Path | None:
    state = _state(request.config)
    if state is None or state.run_dir is None:
        return None
    safe = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in request.node.nodeid)[-120:]
    path = state.run_dir / "attachments" / safe / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    request.node.user_properties.append((f"{PROP}.attachment", str(path)))
    try:
        import allure  # type: ignore[import-not-found]

        allure.attach(text, name=name, attachment_type=allure.attachment_type.TEXT)
    except ImportError:
        pass
    return path


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """The case's rule id is current while it runs (setup, call, teardown), so helpers that fail
    on their own (waits, probe parsing) name it."""
    mark = item.get_closest_marker("rule")
    token = cases.set_current_rule(str(mark.args[0]) if mark is not None and mark.args else None)
    try:
        yield
    finally:
        cases.reset_current_rule(token)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


@pytest.fixture(autouse=True)
def _allure_labels(request: pytest.FixtureRequest) -> None:
    """Allure labels when allure-pytest is installed: epic=vendor, feature=capability, story=rule."""
    props = dict((k, v) for k, v in request.node.user_properties if k == PROP)
    identity = props.get(PROP)
    if not identity:
        return
    try:
        import allure  # type: ignore[import-not-found]
    except ImportError:
        return
    allure.dynamic.epic(identity["vendor"])
    allure.dynamic.feature(identity["capability"])
    allure.dynamic.story(f"{identity['rule_id']}: {identity['rule_text']}")
    allure.dynamic.parameter("vendor", identity["vendor"])
    allure.dynamic.parameter("minor", identity["minor"])
    allure.dynamic.label("requirement", identity["requirement"])
