"""The image catalog: what each container image is, since the testbed pulls nothing.

An entry records the image config's ENTRYPOINT, CMD, Env, User and WorkingDir; the runtime applies
them as a container runtime does (a pod without ``command`` runs ENTRYPOINT + CMD, ``args`` replace
CMD, ``command`` replaces both; the image env sits under the pod's). The programs are the host's:

* shell images (busybox, alpine, ubuntu, debian, centos, fedora, bash, the CUDA base images): their
  CMD is a shell (``sh``, ``/bin/sh``, ``/bin/bash``), which is the host's; the commands a pod runs
  are the host's tools;
* python: ``python3`` is the host's interpreter;
* nginx, redis, the CUDA ``vectorAdd`` sample: small stand-ins (``emulators.py``, launched by
  ``bin/_emulator`` under the names the images use): an HTTP server on port 80, a RESP server on
  6379, the sample's output. ``links`` put those names at the image's own paths inside the
  container's root (``/docker-entrypoint.sh``, ``/cuda-samples/vectorAdd``); ``bin/`` is first on
  their PATH;
* kube-scheduler: the testbed scheduler; pause: ``sleep infinity``; the HAMi stack and probe images
  are filled in by ``hami_stack`` and the conformance probe.

More entries come from ``$TESTBED_IMAGE_CATALOG`` (a YAML/JSON file:
``{images: [{match, entrypoint, cmd, env, user, workdir, links}]}``) or :func:`register`. An image that
matches no entry fails to pull (``ErrImagePull``, then ``ImagePullBackOff``) with a message that says
how to add it (:func:`not_found_message`).
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class ImageEntry:
    match: str  # fnmatch pattern over the normalised reference (registry/repo:tag)
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    user: str = ""  # the image config's User ("uid" or "uid:gid"; empty: root)
    workdir: str = ""  # the image config's WorkingDir (empty: /)
    links: tuple[tuple[str, str], ...] = ()  # (path in the container, host path it shows)
    # host directories the container shows read-only at the same path (a program outside this
    # checkout and the system directories, e.g. a real kube-scheduler in the build cache)
    paths: tuple[str, ...] = ()


def _py(module: str) -> tuple[str, ...]:
    return (sys.executable, "-m", module)


BIN = Path(__file__).resolve().with_name("bin")
REPO = Path(__file__).resolve().parents[2]
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# kube-scheduler images: the entrypoint, and ``kube-scheduler`` on PATH for pods that name the command
# (as the HAMi chart does); both run the testbed scheduler with this interpreter and checkout
_KUBE_SCHEDULER_ENV = {
    "PATH": f"{BIN}:{SYSTEM_PATH}",
    "TESTBED_PYTHON": sys.executable,
    "PYTHONPATH": str(REPO),
    "PYTHONUNBUFFERED": "1",
}
# images whose programs are stand-ins: the launchers first on PATH, run by this interpreter
_EMULATED_ENV = {"PATH": f"{BIN}:{SYSTEM_PATH}", "TESTBED_PYTHON": sys.executable}
_EMULATOR = str(BIN / "_emulator")
_HOST_PYTHON3 = shutil.which("python3", path=SYSTEM_PATH) or sys.executable


def _shell(match: str, cmd: str, **env: str) -> ImageEntry:
    return ImageEntry(match, cmd=(cmd,), env={"PATH": SYSTEM_PATH, **env})


_CUDA_ENV = {
    "PATH": "/usr/local/nvidia/bin:/usr/local/cuda/bin:" + SYSTEM_PATH,
    "LD_LIBRARY_PATH": "/usr/local/nvidia/lib:/usr/local/nvidia/lib64",
    "NVIDIA_DRIVER_CAPABILITIES": "compute,utility",
}

_BUILTIN: list[ImageEntry] = [
    # kube-scheduler of any minor -> the testbed scheduler, which speaks the same flags
    ImageEntry("registry.k8s.io/kube-scheduler:*", _py("testbed.scheduler"), env=_KUBE_SCHEDULER_ENV),
    ImageEntry("k8s.gcr.io/kube-scheduler:*", _py("testbed.scheduler"), env=_KUBE_SCHEDULER_ENV),
    # pause: sleeps forever, like the real one, as its image's user 65535:65535
    ImageEntry("registry.k8s.io/pause:*", entrypoint=("sleep", "infinity"), user="65535:65535"),
    ImageEntry("k8s.gcr.io/pause:*", entrypoint=("sleep", "infinity"), user="65535:65535"),
    # placeholders the lead fills (or overrides through $TESTBED_IMAGE_CATALOG)
    ImageEntry("*/hami:*", entrypoint=()),
    ImageEntry("*/hami-conformance-probe:*", entrypoint=_py("conformance.probe")),
    # the images people try first, with their image configs' entrypoint, cmd and env
    ImageEntry(
        "nginx:*",
        entrypoint=("/docker-entrypoint.sh",),
        cmd=("nginx", "-g", "daemon off;"),
        env={**_EMULATED_ENV, "NGINX_VERSION": "1.27.3", "PKG_RELEASE": "1~bookworm"},
        links=(("/docker-entrypoint.sh", _EMULATOR.replace("_emulator", "docker-entrypoint.sh")),),
    ),
    ImageEntry(
        "redis:*",
        entrypoint=("docker-entrypoint.sh",),
        cmd=("redis-server",),
        env={**_EMULATED_ENV, "REDIS_VERSION": "7.4.1"},
        workdir="/data",
    ),
    _shell("busybox:*", "sh"),
    _shell("alpine:*", "/bin/sh"),
    _shell("ubuntu:*", "/bin/bash"),
    _shell("debian:*", "bash"),
    _shell("centos:*", "/bin/bash"),
    _shell("fedora:*", "/bin/bash"),
    _shell("bash:*", "bash"),
    ImageEntry(
        "python:*",
        cmd=("python3",),
        env={"PATH": "/usr/local/bin:" + SYSTEM_PATH, "LANG": "C.UTF-8", "PYTHON_VERSION": "3.11.7"},
        # the image has `python` too; the host may have only python3
        links=(("/usr/local/bin/python", _HOST_PYTHON3),),
    ),
    # CUDA base/runtime/devel images: a shell; the toolkit's part depends on NVIDIA_VISIBLE_DEVICES,
    # which the device plugin sets (the real images' NVIDIA_VISIBLE_DEVICES=all is left out: on a
    # testbed node that would hand every emulated GPU to pods that requested none)
    ImageEntry("nvidia/cuda:*", cmd=("/bin/bash",), env=_CUDA_ENV),
    ImageEntry("nvcr.io/nvidia/cuda:*", cmd=("/bin/bash",), env=_CUDA_ENV),
    # HAMi's example Deployment (examples/nvidia/example.yaml) runs the CUDA vectorAdd sample
    ImageEntry(
        "nvcr.io/nvidia/k8s/cuda-sample:vectoradd*",
        cmd=("/cuda-samples/vectorAdd",),
        env={**_CUDA_ENV, "TESTBED_PYTHON": sys.executable},
        workdir="/cuda-samples",
        links=(("/cuda-samples/vectorAdd", _EMULATOR.replace("_emulator", "vectorAdd")),),
    ),
]
_EXTRA: list[ImageEntry] = []


def normalise(image: str) -> str:
    """``busybox`` -> ``busybox:latest``; digests are kept (``repo@sha256:..`` matches ``repo:*`` too)."""
    ref = image.strip()
    if "@" in ref:
        return ref.split("@", 1)[0] + ":@" + ref.split("@", 1)[1]
    last = ref.rsplit("/", 1)[-1]
    return ref if ":" in last else ref + ":latest"


def register(
    match: str,
    entrypoint: list[str] | tuple[str, ...] = (),
    cmd: list[str] | tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    user: str = "",
    workdir: str = "",
    links: dict[str, str] | None = None,
) -> None:
    """Add an entry that wins over the built-in ones (later registrations win over earlier ones)."""
    _EXTRA.insert(
        0,
        ImageEntry(
            match, tuple(entrypoint), tuple(cmd), dict(env or {}), user, workdir, tuple((links or {}).items())
        ),
    )


_FILE_CACHE: dict[str, tuple[tuple[int, int], list[ImageEntry]]] = {}


def _from_file(path: str) -> list[ImageEntry]:
    """The catalog file's entries, parsed again only when the file changed (every container start
    and volume sync looks images up; parsing the YAML each time was a node agent's third cost)."""
    try:
        st = os.stat(path)
    except OSError:
        st = None
    key = (st.st_mtime_ns, st.st_size) if st is not None else (-1, -1)
    hit = _FILE_CACHE.get(path)
    if st is not None and hit is not None and hit[0] == key:
        return hit[1]
    entries = _parse_file(path)
    if st is not None:
        _FILE_CACHE[path] = (key, entries)
    return entries


def _parse_file(path: str) -> list[ImageEntry]:
    text = Path(path).read_text()
    if path.endswith((".yaml", ".yml")):
        import yaml

        data = yaml.safe_load(text) or {}
    else:
        data = json.loads(text)
    return [
        ImageEntry(
            str(e["match"]),
            tuple(e.get("entrypoint") or ()),
            tuple(e.get("cmd") or ()),
            {str(k): str(v) for k, v in (e.get("env") or {}).items()},
            str(e.get("user") or ""),
            str(e.get("workdir") or ""),
            tuple((str(k), str(v)) for k, v in (e.get("links") or {}).items()),
            tuple(str(p) for p in e.get("paths") or ()),
        )
        for e in data.get("images") or []
    ]


def lookup(image: str) -> ImageEntry | None:
    ref = normalise(image)
    extra_file = os.environ.get("TESTBED_IMAGE_CATALOG")
    entries = (_from_file(extra_file) if extra_file else []) + _EXTRA + _BUILTIN
    names = {ref, image, short(ref)}
    for e in entries:
        if any(fnmatch.fnmatchcase(n, e.match) for n in names):
            return e
    return None


def short(ref: str) -> str:
    """``docker.io/library/nginx:1.27`` -> ``nginx:1.27`` (Docker Hub's implicit prefixes dropped)."""
    for prefix in ("docker.io/library/", "index.docker.io/library/", "registry-1.docker.io/library/"):
        if ref.startswith(prefix):
            return ref[len(prefix):]
    for prefix in ("docker.io/", "index.docker.io/"):
        if ref.startswith(prefix):
            return ref[len(prefix):]
    return ref


def canonical(image: str) -> str:
    """The fully qualified reference a runtime reports (``nginx`` -> ``docker.io/library/nginx:latest``)."""
    ref = normalise(image)
    first = ref.split("/", 1)[0]
    if "/" not in ref:
        return "docker.io/library/" + ref
    if "." not in first and ":" not in first.split("@")[0] and first != "localhost":
        return "docker.io/" + ref
    return ref


def not_found_message(image: str) -> str:
    """containerd's pull failure for an unresolvable reference, and how to add the image here."""
    ref = canonical(image)
    return (
        f'rpc error: code = NotFound desc = failed to pull and unpack image "{ref}": failed to resolve '
        f'reference "{ref}": {ref}: not found (testbed: image "{image}" is not in the image catalog; '
        "add it with testbed.node.images.register() or an entry {match, entrypoint, cmd, env, user, "
        "workdir} in the file $TESTBED_IMAGE_CATALOG names, see testbed/node/README.md)"
    )


def root_links(entry: ImageEntry) -> list[list[str]]:
    """The entry's programs at the image's own paths, as ``nsexec`` root links."""
    return [[path, target] for path, target in entry.links]


def host_argv(entry: ImageEntry, argv: list[str]) -> list[str]:
    """Without a root of its own (no mount namespaces) a linked path does not exist: use its target."""
    if not argv:
        return argv
    targets = dict(entry.links)
    by_name = {path.rsplit("/", 1)[-1]: target for path, target in entry.links}
    first = targets.get(argv[0]) or ("/" not in argv[0] and by_name.get(argv[0])) or argv[0]
    return [first, *argv[1:]]


def image_id(image: str) -> str:
    """A stable pseudo digest, shown as ``imageID`` the way a runtime shows the resolved digest."""
    import hashlib

    digest = hashlib.sha256(normalise(image).encode()).hexdigest()
    ref = normalise(image).rsplit(":", 1)[0]
    if "/" not in ref.split("/")[0] or "." not in ref.split("/")[0]:
        ref = "docker.io/library/" + ref if "/" not in ref else "docker.io/" + ref
    return f"{ref}@sha256:{digest}"
