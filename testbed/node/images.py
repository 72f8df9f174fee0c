"""The image catalog: which local command stands in for each container image.

An entry gives the image's ENTRYPOINT and CMD (used when the pod leaves ``command``/``args`` empty),
as a real image config would. Base images (busybox, alpine, python, ubuntu, ...) carry no
entrypoint of their own here: the pod's command runs with the host's tools. More entries come from
``$TESTBED_IMAGE_CATALOG`` (a YAML/JSON file: ``{images: [{match, entrypoint, cmd, env, user, workdir}]}``) or
:func:`register`, which is how the lead maps the HAMi stack image and the probe image.
"""

from __future__ import annotations

import fnmatch
import json
import os
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


_BASE = (
    "busybox",
    "alpine",
    "python",
    "ubuntu",
    "debian",
    "centos",
    "fedora",
    "nginx",
    "bash",
    "nvidia/cuda",
    "nvcr.io/nvidia/cuda",
    "registry.k8s.io/pause",
    "k8s.gcr.io/pause",
)
_BUILTIN: list[ImageEntry] = (
    [
        # kube-scheduler of any minor -> the testbed scheduler, which speaks the same flags
        ImageEntry("registry.k8s.io/kube-scheduler:*", _py("testbed.scheduler"), env=_KUBE_SCHEDULER_ENV),
        ImageEntry("k8s.gcr.io/kube-scheduler:*", _py("testbed.scheduler"), env=_KUBE_SCHEDULER_ENV),
        # pause: sleeps forever, like the real one, as its image's user 65535:65535
        ImageEntry("registry.k8s.io/pause:*", entrypoint=("sleep", "infinity"), user="65535:65535"),
        ImageEntry("k8s.gcr.io/pause:*", entrypoint=("sleep", "infinity"), user="65535:65535"),
        # placeholders the lead fills (or overrides through $TESTBED_IMAGE_CATALOG)
        ImageEntry("*/hami:*", entrypoint=()),
        ImageEntry("*/hami-conformance-probe:*", entrypoint=_py("conformance.probe")),
    ]
    + [ImageEntry(f"{b}:*") for b in _BASE]
    + [ImageEntry(f"docker.io/library/{b}:*") for b in _BASE]
)
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
) -> None:
    """Add an entry that wins over the built-in ones (later registrations win over earlier ones)."""
    _EXTRA.insert(0, ImageEntry(match, tuple(entrypoint), tuple(cmd), dict(env or {}), user, workdir))


def _from_file(path: str) -> list[ImageEntry]:
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
        )
        for e in data.get("images") or []
    ]


def lookup(image: str) -> ImageEntry | None:
    ref = normalise(image)
    extra_file = os.environ.get("TESTBED_IMAGE_CATALOG")
    entries = (_from_file(extra_file) if extra_file else []) + _EXTRA + _BUILTIN
    for e in entries:
        if fnmatch.fnmatchcase(ref, e.match) or fnmatch.fnmatchcase(image, e.match):
            return e
    return None


def image_id(image: str) -> str:
    """A stable pseudo digest, shown as ``imageID`` the way a runtime shows the resolved digest."""
    import hashlib

    digest = hashlib.sha256(normalise(image).encode()).hexdigest()
    ref = normalise(image).rsplit(":", 1)[0]
    if "/" not in ref.split("/")[0] or "." not in ref.split("/")[0]:
        ref = "docker.io/library/" + ref if "/" not in ref else "docker.io/" + ref
    return f"{ref}@sha256:{digest}"
