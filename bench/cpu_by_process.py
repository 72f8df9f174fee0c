"""Benchmark helper (asserts nothing): CPU seconds of a command and all its processes, by kind.

    python bench/cpu_by_process.py [--interval 0.1] [--out FILE] -- COMMAND...
    python bench/cpu_by_process.py -- .venv/bin/python bench/harness.py --minor 1.33

Runs COMMAND as this process's child and is the child subreaper of everything it starts (so detached
testbeds and their pods are counted and reaped here), waits until every descendant has exited, and
reports ``total_s``: the exact CPU of the whole tree (``RUSAGE_CHILDREN``; this sampler's own CPU is
not in it). Meanwhile it samples ``/proc`` every ``--interval`` seconds and attributes each
descendant's CPU to a kind read from its command line: apiserver, kube-scheduler, controllers, node
agent, container shim (``nsexec.py``), device plugin, HAMi scheduler (extender and webhook), monitor,
pytest, helm, probe workloads, ...

A process is counted with its last sampled ``utime + stime``; what a process used after its last
sample, and processes that lived less than one interval, show up in their parent's ``cutime +
cstime`` once reaped: that remainder is reported as ``<parent kind>/children-unseen``. ``unattributed_s``
is ``total_s`` minus everything attributed (CPU a process used after its last sample when it was
reaped here, not by a sampled parent).

The last line is one JSON object: ``by_kind`` (CPU-s per kind), ``count`` (processes seen per kind),
``total_s``, ``unattributed_s``, ``wall_s``, ``interval_s``, ``exit_code``.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import re
import resource
import struct
import subprocess
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")
PR_SET_CHILD_SUBREAPER = 36
# struct acct_v3: flag, version, tty, exitcode, uid, gid, pid, ppid, btime, etime, utime, stime, mem,
# io, rw, minflt, majflt, swaps (comp_t), comm[16]
ACCT_V3 = struct.Struct("=cB14xII8xHH12x16s")

# first match wins: (regex over the command line, kind)
KINDS: list[tuple[str, str]] = [
    (r"bench/harness\.py|bench/matrix\.py", "bench"),
    (r"-m pytest|/pytest ", "pytest"),
    (r"-m conformance run", "conformance-run"),
    (r"-m testbed up", "testbed-up"),
    (r"testbed\.apiserver_process", "apiserver"),
    (r"-m testbed\.controllers", "controllers"),
    (r"-m testbed\.scheduler", "kube-scheduler"),
    (r"-m testbed\.node", "node-agent"),
    (r"nsexec\.py", "shim"),
    (r"hami_stack\.scheduler", "hami-scheduler"),
    (r"hami_stack\.device_plugin", "device-plugin"),
    (r"hami_stack\.monitor", "monitor"),
    (r"(^|/)helm\S* ", "helm"),
    (r"(^|/)kubectl\S* ", "kubectl"),
    (r"conformance[./]probe|probe\.py", "probe"),
]


def kind_of(cmdline: str) -> str:
    for pattern, kind in KINDS:
        if re.search(pattern, cmdline):
            return kind
    return "other:" + (Path(cmdline.split(" ", 1)[0]).name or "?")


@dataclass
class Proc:
    pid: int
    ppid: int
    kind: str
    start: int
    self_t: int = 0
    child_t: int = 0


def _stat(pid: int) -> tuple[int, int, int, int] | None:
    """(ppid, self ticks, reaped-children ticks, start time) of a live process."""
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # fields after the command: state ppid ... utime(12) stime(13) cutime(14) cstime(15) ... start(20)
    return int(f[1]), int(f[11]) + int(f[12]), int(f[13]) + int(f[14]), int(f[19])


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _comp(v: int) -> float:
    """A comp_t (13-bit mantissa, 3-bit base-8 exponent) in ticks of 1/100 s, as seconds."""
    return ((v & 0x1FFF) << (3 * (v >> 13))) / 100


def read_acct(path: Path) -> list[tuple[int, int, float, str]]:
    """(pid, ppid, CPU seconds, comm) of every process that exited, from a BSD acct v3 file."""
    data = path.read_bytes()
    out = []
    for off in range(0, len(data) - ACCT_V3.size + 1, ACCT_V3.size):
        _flag, version, pid, ppid, ut, st, comm = ACCT_V3.unpack_from(data, off)
        if version == 3:
            out.append((pid, ppid, _comp(ut) + _comp(st), comm.split(b"\0", 1)[0].decode(errors="replace")))
    return out


def by_acct(records: list[tuple[int, int, float, str]], kinds: dict[int, str], me: int) -> dict[str, float]:
    """CPU-s per kind of every exited process of the tree: a pid sampled alive has its sampled kind,
    any other one ``<comm> under <parent's kind>`` (a process too short-lived to be sampled)."""
    members = {me, *kinds}
    changed = True
    while changed:  # the tree: a process whose parent (at its exit) is in it
        changed = False
        for pid, ppid, _cpu, _comm in records:
            if pid not in members and ppid in members:
                members.add(pid)
                changed = True
    parent = {pid: ppid for pid, ppid, _cpu, _comm in records}
    out: dict[str, float] = defaultdict(float)
    for pid, ppid, cpu, comm in records:
        if pid not in members or pid == me:
            continue
        if pid in kinds:
            out[kinds[pid]] += cpu
            continue
        up = ppid
        while up not in kinds and up in parent and up != me:
            up = parent[up]
        out[f"{comm} under {kinds.get(up, 'bench')}"] += cpu
    return out


def sample(cmd: list[str], interval: float, acct: Path | None = None) -> dict[str, object]:
    if ctypes.CDLL(None).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise SystemExit("cpu_by_process: prctl(PR_SET_CHILD_SUBREAPER) failed")
    libc = ctypes.CDLL(None, use_errno=True)
    if acct is not None:
        acct.write_bytes(b"")
        if libc.acct(str(acct).encode()) != 0:
            raise SystemExit(f"cpu_by_process: acct: {os.strerror(ctypes.get_errno())} (needs CAP_SYS_PACCT)")
    t0 = time.monotonic()
    child = subprocess.Popen(cmd)
    me = os.getpid()
    exit_code: int | None = None
    procs: dict[tuple[int, int], Proc] = {}  # (pid, start time): one entry per process, pids reused
    live: dict[int, tuple[int, int]] = {}
    while True:
        seen: dict[int, tuple[int, int, int, int]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit() and (st := _stat(int(entry))) is not None:
                seen[int(entry)] = st
        children: dict[int, list[int]] = defaultdict(list)
        for pid, st in seen.items():
            children[st[0]].append(pid)
        members, todo = [], list(children.get(me, ()))
        while todo:  # descendants, by parent pid
            pid = todo.pop()
            members.append(pid)
            todo.extend(children.get(pid, ()))
        for pid in members:
            ppid, self_t, child_t, start = seen[pid]
            key = (pid, start)
            cmdline = _cmdline(pid)  # re-read: a shim execs its workload (same pid, new command line)
            p = procs.get(key)
            if p is None:
                if not cmdline:
                    continue
                p = procs[key] = Proc(pid, ppid, kind_of(cmdline), start)
            elif cmdline:
                p.kind = kind_of(cmdline)
            # the parent as last seen: an orphan is re-parented to its subreaper
            p.ppid, p.self_t, p.child_t = ppid, self_t, child_t
            live[pid] = key
        while True:  # reap: the command, and orphans re-parented here
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                pid = -1
                break
            if pid == 0:
                break
            if pid == child.pid:
                exit_code = os.waitstatus_to_exitcode(status)
                child.returncode = exit_code
        if pid == -1:  # no child left at all
            break
        time.sleep(interval)
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = ru.ru_utime + ru.ru_stime
    exact: dict[str, float] | None = None
    if acct is not None:
        libc.acct(None)
        exact = by_acct(read_acct(acct), {p.pid: p.kind for p in procs.values()}, me)
    by_kind: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    children: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)
    for key, p in procs.items():
        by_kind[p.kind] += p.self_t / TICK
        count[p.kind] += 1
        parent = live.get(p.ppid)
        if parent is not None and parent != key:
            children[parent].append(key)

    def subtree(key: tuple[int, int], depth: int = 0) -> int:
        # a child's own reaped-children count can be older than its children's last samples
        p = procs[key]
        kids = sum(subtree(k, depth + 1) for k in children.get(key, ())) if depth < 64 else 0
        return p.self_t + max(p.child_t, kids)

    for key, p in procs.items():
        unseen = p.child_t - sum(subtree(k) for k in children.get(key, ()))
        if unseen > 0:
            by_kind[f"{p.kind}/children-unseen"] += unseen / TICK
    attributed = sum(by_kind.values())
    return {
        "by_kind": {k: round(v, 2) for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])},
        "count": dict(count),
        "total_s": round(total, 1),
        "unattributed_s": round(total - attributed, 1),
        "wall_s": round(time.monotonic() - t0, 1),
        "interval_s": interval,
        "exit_code": exit_code,
        "by_kind_acct": None
        if exact is None
        else {k: round(v, 2) for k, v in sorted(exact.items(), key=lambda kv: -kv[1]) if v >= 0.01},
        "total_acct_s": None if exact is None else round(sum(exact.values()), 1),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cmd", nargs="+", help="the command (after --)")
    p.add_argument("--interval", type=float, default=0.1)
    p.add_argument("--out", type=Path)
    p.add_argument(
        "--acct",
        type=Path,
        help="also turn on BSD process accounting into this file (machine-wide while it runs; needs "
        "CAP_SYS_PACCT): the exact CPU of every process of the tree, short-lived ones included",
    )
    args = p.parse_args(argv)
    result = sample(args.cmd, args.interval, args.acct)
    text = json.dumps(result)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
