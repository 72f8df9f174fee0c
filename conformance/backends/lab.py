"""``hami-conformance provision|deploy|certify|teardown -i INVENTORY``: Ansible-provisioned labs.

    hami-conformance provision -i inventories/emulated/lab.yml          # lab hosts, control plane, nodes
    hami-conformance provision -i inventories/emulated/lab.yml --check  # what would change, nothing done
    hami-conformance deploy    -i inventories/emulated/lab.yml          # HAMi chart (roles/hami)
    hami-conformance certify   -i inventories/emulated/lab.yml          # provision + deploy + suites + bundle
    hami-conformance teardown  -i inventories/emulated/lab.yml          # services, namespaces, bridge, sshd

The playbooks under ``playbooks/`` run through ``ansible_runner`` (in this process, not a subprocess of
``ansible-playbook``). For an emulated lab (``all.vars.lab_name`` in the inventory) the hosts are first
created by ``testbed.lab`` (network namespaces with sshd); its connection variables are a second
inventory source. Each run keeps runner's artifacts (events, stdout, fact cache) under
``<out>/<run id>/runner/`` and writes ``lab-facts.json`` (OS, kernel, accelerators of every host) and
``lab-run.json`` (per playbook: ok/changed/failed per host, seconds). ``certify`` exits with the
fetched bundle's verdict, as ``hami-conformance run`` does (0 PASSED, 1 FAILED, 2 INCOMPLETE, 3 WARNED);
every command exits 4 on a bad lab inventory and 5 when a playbook failed or no bundle was readable.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import stat
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
PLAYBOOKS = REPO / "playbooks"
COMMANDS = {
    "provision": "create the lab's hosts and provision them over SSH (Ansible)",
    "deploy": "install the HAMi chart on a provisioned lab (Ansible)",
    "certify": "provision + deploy + run the suites + fetch the bundle (Ansible)",
    "teardown": "stop the lab's services and remove its hosts",
}
FACT_KEYS = ("ansible_distribution", "ansible_distribution_version", "ansible_kernel", "ansible_architecture",
             "ansible_python_version", "ansible_hostname", "ansible_processor_vcpus", "ansible_memtotal_mb",
             "emulated_node_accelerators")


class LabRunError(Exception):
    """A playbook failed; the message names the host, the task and Ansible's message."""


def add_parsers(sub: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    for name, text in COMMANDS.items():
        sp = sub.add_parser(name, help=text, description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        sp.add_argument("-i", "--inventory", required=True, help="Ansible inventory of the lab (YAML)")
        sp.add_argument("--state", help="emulated lab's keys and host dirs (default .cache/lab/<lab_name>)")
        sp.add_argument("--out", default=str(REPO / "reports" / "out"), help="run directories go here")
        sp.add_argument("-e", "--extra-vars", action="append", default=[], metavar="KEY=VALUE",
                        help="extra variables for the playbooks (VALUE as JSON when it starts with [ or {)")
        if name in ("provision", "deploy"):
            sp.add_argument("--check", action="store_true", help="Ansible check mode: report, change nothing")
        sp.set_defaults(lab_command=name)


class Progress:
    """Runner events -> one line per host result: play, task, host, ok/changed/failed."""

    def __init__(self, stream: Any = sys.stdout) -> None:
        self.stream = stream
        self.failures: list[dict[str, str]] = []
        self.play = ""
        self.plays: list[str] = []
        self.results: list[dict[str, str]] = []  # play, task, host, status of every host result

    def __call__(self, event: dict[str, Any]) -> bool:
        kind = event.get("event", "")
        data = event.get("event_data") or {}
        if kind == "playbook_on_play_start":
            self.play = data.get("play", "")
            self.plays.append(self.play)
            print(f"PLAY {self.play}", file=self.stream, flush=True)
        elif kind in ("runner_on_ok", "runner_on_failed", "runner_on_unreachable", "runner_on_skipped"):
            res = data.get("res") or {}
            status = {"runner_on_ok": "changed" if res.get("changed") else "ok",
                      "runner_on_failed": "failed", "runner_on_unreachable": "unreachable",
                      "runner_on_skipped": "skipped"}[kind]
            if kind == "runner_on_failed" and data.get("ignore_errors"):
                status = "failed (ignored)"
            host, task = data.get("host", "?"), data.get("task", "?")
            print(f"  {task} · {host}: {status}", file=self.stream, flush=True)
            self.results.append({"play": self.play, "task": task, "host": host, "status": status})
            if status in ("failed", "unreachable"):
                msg = " ".join(str(res.get(k) or "").strip() for k in ("msg", "stderr") if res.get(k)).strip()
                self.failures.append({"host": host, "task": task, "status": status, "msg": msg})
        return True  # keep the event in the artifacts


def _extravars(pairs: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs; a VALUE starting with ``[`` or ``{`` is JSON (a list such as
    ``conformance_args=["--", "-k", "test_admission"]``), anything else a string."""
    out: dict[str, Any] = {}
    for p in pairs:
        key, eq, value = p.partition("=")
        if not eq or not key:
            raise LabRunError(f"-e {p!r}: expected KEY=VALUE")
        if value[:1] in ("[", "{"):
            try:
                out[key] = json.loads(value)
            except ValueError as e:
                raise LabRunError(f"-e {key}: a value starting with [ or {{ must be JSON: {e}") from None
        else:
            out[key] = value
    return out


def control_dir(state: Path) -> Path:
    """Where ssh keeps this lab's multiplexing sockets: a short path, since a Unix socket path has at
    most 107 bytes and ssh appends a random suffix to its temporary name (a lab state under pytest's
    deep tmp dirs overflowed: "unix_listener: ... too long for Unix domain socket"). One private
    directory per user (a socket in a shared one could be taken over by another local user), one
    subdirectory per lab state."""
    base = Path(tempfile.gettempdir()) / f"hcl-cp-{os.getuid()}"
    base.mkdir(mode=0o700, exist_ok=True)
    st = base.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise LabRunError(f"{base}: must be a directory owned by uid {os.getuid()} with mode 0700 "
                          "(it holds ssh's multiplexing sockets); remove it and run again")
    sub = base / hashlib.sha256(str(state.resolve()).encode()).hexdigest()[:12]
    sub.mkdir(mode=0o700, exist_ok=True)
    return sub


def run_playbook(playbook: str, inventories: list[Path], run_dir: Path, *, extravars: dict[str, Any],
                 check: bool = False, progress: Progress | None = None,
                 control_dir: Path | None = None) -> dict[str, Any]:
    """One playbook through ansible_runner; returns its stats, raises LabRunError naming host and task."""
    import ansible_runner

    progress = progress or Progress()
    done = run_dir / "runner" / "artifacts"
    ident = f"{len(list(done.glob('*'))) if done.exists() else 0:02d}-{Path(playbook).stem}"
    envvars = {
        "ANSIBLE_ROLES_PATH": str(PLAYBOOKS / "roles"),
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_PIPELINING": "True",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_NOCOLOR": "True",
        # runner starts ansible-playbook itself: the one installed beside this interpreter
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    if control_dir is not None:  # ssh's multiplexing sockets stay with the lab, not in ~/.ansible
        envvars["ANSIBLE_SSH_CONTROL_PATH_DIR"] = str(control_dir)
    (run_dir / "runner").mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    r = ansible_runner.run(
        private_data_dir=str(run_dir / "runner"),
        ident=ident,
        playbook=str(PLAYBOOKS / playbook),
        inventory=[str(p) for p in inventories],
        extravars=extravars,
        cmdline="--check --diff" if check else None,
        envvars=envvars,
        event_handler=progress,
        quiet=True,
    )
    stats = r.stats or {}
    record = {
        "playbook": playbook,
        "status": r.status,
        "rc": r.rc,
        "check": check,
        "seconds": round(time.monotonic() - started, 2),
        "artifacts": str(run_dir / "runner" / "artifacts" / ident),
        **{k: stats.get(k, {}) for k in ("ok", "changed", "failures", "dark", "skipped")},
        "changedTotal": sum((stats.get("changed") or {}).values()),
        "facts": {h: _cached_facts(Path(r.config.artifact_dir) / "fact_cache", h)
                  for h in (stats.get("processed") or {})},
        "errors": progress.failures,
        "plays": progress.plays,
        "results": progress.results,
    }
    log = run_dir / "lab-run.json"
    doc = json.loads(log.read_text()) if log.exists() else []
    doc.append(record)
    log.write_text(json.dumps(doc, indent=2))
    if r.rc != 0 or r.status != "successful":
        detail = "; ".join(f"host {f['host']}: task '{f['task']}' {f['status']}: {f['msg'][:400]}"
                           for f in progress.failures) or f"ansible-runner status {r.status}, rc {r.rc}"
        raise LabRunError(f"{playbook}: {detail} (artifacts: {record['artifacts']})")
    return record


def _cached_facts(cache: Path, host: str) -> dict[str, Any]:
    """The host's facts from runner's jsonfile fact cache (ansible-core 2.19 names the file
    ``<prefix><host>`` and wraps the facts in ``__payload__``), reduced to FACT_KEYS."""
    for f in sorted(cache.glob(f"*{host}")) if cache.exists() else []:
        if f.name != host and not f.name.endswith(f"_{host}"):
            continue
        try:
            doc = json.loads(f.read_text())
            if isinstance(doc, dict) and "__payload__" in doc:
                doc = json.loads(doc["__payload__"])
        except (OSError, ValueError):
            continue
        return {k: _untag(v) for k, v in doc.items() if k in FACT_KEYS}
    return {}


def _untag(v: Any) -> Any:
    """Drop ansible-core's data tags (``{"value": ..., "__ansible_type": ...}``) from cached facts."""
    if isinstance(v, dict):
        if "__ansible_type" in v and "value" in v:
            return _untag(v["value"])
        return {k: _untag(x) for k, x in v.items() if k != "__ansible_type"}
    if isinstance(v, list):
        return [_untag(x) for x in v]
    return v


VERDICT_EXIT = {"PASSED": 0, "FAILED": 1, "INCOMPLETE": 2, "WARNED": 3}  # as `hami-conformance run`


def _verdict(bundle: Path) -> str:
    """The fetched bundle's verdict; it must carry every lab host's facts in its environment."""
    try:
        verdict = str(json.loads((bundle / "results.json").read_text())["verdict"])
        env = json.loads((bundle / "environment.json").read_text())
    except (OSError, ValueError, KeyError) as e:
        raise LabRunError(f"{bundle}: not a readable bundle: {e}") from None
    facts_path = bundle.parent.parent / "lab-facts.json"
    try:
        facts = json.loads(facts_path.read_text()) if facts_path.exists() else {}
    except (OSError, ValueError) as e:
        raise LabRunError(f"{facts_path}: not readable JSON: {e}") from None
    if not isinstance(facts, dict):
        raise LabRunError(f"{facts_path}: want a JSON object of host facts, got {type(facts).__name__}")
    lab_hosts = ((env.get("extra") or {}).get("labHosts") or env.get("labHosts") or {})
    missing = sorted(set(facts) - set(lab_hosts)) if isinstance(lab_hosts, dict) else sorted(facts)
    if missing:
        raise LabRunError(f"{bundle}: environment.json lacks the facts of lab host(s) {', '.join(missing)}")
    return verdict


def _merge_facts(run_dir: Path, record: dict[str, Any]) -> None:
    path = run_dir / "lab-facts.json"
    facts = json.loads(path.read_text()) if path.exists() else {}
    for host, f in record["facts"].items():
        facts.setdefault(host, {}).update(f)
    path.write_text(json.dumps(facts, indent=2, sort_keys=True))


def main(args: argparse.Namespace) -> int:
    from testbed.lab import Lab, LabError, load_spec
    from testbed.lab.__main__ import default_state

    inventory = Path(args.inventory).resolve()
    run_dir = Path(args.out).resolve() / f"lab-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        extravars = _extravars(args.extra_vars)
    except LabRunError as e:  # bad input: nothing ran
        print(f"error: {e}", file=sys.stderr)
        return 4
    try:
        spec = load_spec(inventory)
        lab = Lab(spec, Path(args.state) if args.state else default_state(str(inventory)))
        inventories = [inventory, lab.connection_inventory]
        kw = {"extravars": extravars, "control_dir": control_dir(lab.state)}
        cmd = args.lab_command
        print(f"run directory: {run_dir}", flush=True)
        if cmd == "teardown":
            try:
                if lab.connection_inventory.exists():
                    run_playbook("teardown-lab.yml", inventories, run_dir, **kw)
            except LabRunError as e:  # the hosts go anyway
                print(f"warning: {e}", file=sys.stderr)
            print(json.dumps(lab.down()))
            return 0
        check = getattr(args, "check", False)
        if cmd in ("provision", "certify"):
            if not check:
                lab.up()
            rec = run_playbook("provision.yml", inventories, run_dir, check=check, **kw)
            _merge_facts(run_dir, rec)
            print(f"provision: changed={rec['changedTotal']} in {rec['seconds']}s", flush=True)
        if cmd in ("deploy", "certify"):
            rec = run_playbook("deploy.yml", inventories, run_dir, check=check, **kw)
            print(f"deploy: changed={rec['changedTotal']} in {rec['seconds']}s", flush=True)
        if cmd == "certify":
            cert_vars = {**extravars, "certify_fetch_dir": str(run_dir),
                         "conformance_lab_facts": str(run_dir / "lab-facts.json")}
            rec = run_playbook("certify.yml", inventories, run_dir, **{**kw, "extravars": cert_vars})
            bundles = sorted(run_dir.glob("*/bundle"))
            if not bundles:
                raise LabRunError(f"certify.yml: no bundle was fetched to {run_dir}")
            verdict = _verdict(bundles[-1])
            print(f"certify: {verdict} · bundle {bundles[-1]} in {rec['seconds']}s", flush=True)
            return VERDICT_EXIT.get(verdict, 5)
    except LabError as e:  # the lab's inventory or hosts: nothing ran
        print(f"error: {e}", file=sys.stderr)
        return 4
    except LabRunError as e:  # a playbook failed (preflight included): no bundle
        print(f"error: {e}", file=sys.stderr)
        return 5
    return 0
