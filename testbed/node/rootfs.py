"""What a container's own root holds, and which user it runs as.

The testbed has no image layers: the catalog maps an image to host commands (``images.py``), so the
"image contents" every container gets are the host's system directories (``/usr`` and the ``/lib*``,
``/bin``, ``/sbin`` links), the ``/etc`` files programs need to resolve names and verify TLS, the
Python interpreter this testbed runs on and this checkout (the stack, probe and scheduler images run
its modules). Nothing else of the host is there; the testbed's data directory (kubeconfigs, keys,
every node's root) is covered even where an image path would expose it. ``nsexec.py`` builds the
root from this spec.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from .podspec import ConfigError, Owner

REPO = Path(__file__).resolve().parents[2]
# /etc pieces: name resolution, users and groups, the dynamic linker, CA bundles, time zone
ETC = (
    "passwd", "group", "hosts", "resolv.conf", "nsswitch.conf", "host.conf", "gai.conf", "services",
    "protocols", "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "ssl", "ca-certificates",
    "ca-certificates.conf", "pki", "alternatives", "localtime", "os-release", "mime.types", "shells",
)
SYSTEM = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32")


def _top(paths: list[str]) -> list[str]:
    """Drop paths that lie under another one of the list (one overlay covers them)."""
    out: list[str] = []
    for p in sorted(set(paths), key=len):
        if not any(p == q or p.startswith(q.rstrip("/") + "/") for q in out):
            out.append(p)
    return out


def root_spec(pod_dir: Path, data_dir: Path, privileged: bool) -> dict[str, Any]:
    image: list[str] = []
    links: list[list[str]] = []
    for name in SYSTEM:
        p = Path("/") / name
        if p.is_symlink():
            links.append([str(p), os.readlink(p)])
        elif p.is_dir():
            image.append(str(p))
    for name in ETC:
        p = Path("/etc") / name
        if p.is_symlink() and not str(os.readlink(p)).startswith("/"):
            links.append([str(p), os.readlink(p)])
        elif p.exists():
            image.append(str(p))
    image += [str(Path(sys.base_prefix).resolve()), str(Path(sys.prefix).resolve()), str(REPO)]
    rootdir = pod_dir / "rootfs"
    rootdir.mkdir(parents=True, exist_ok=True)
    rootdir.chmod(0o700)
    return {
        "dir": str(rootdir),
        "image": [p for p in _top(image) if p != "/"],
        "links": links,
        # the data dir, and the host's TLS private keys where /etc/ssl is shown
        "hide": [str(data_dir.resolve()), "/etc/ssl/private", *_other_data_dirs()],
        "privileged": privileged,
    }


def _other_data_dirs() -> list[str]:
    """Where other testbeds keep their data inside the checkout: ``testbed up``'s default ``.testbed``
    (and siblings) and the harness's run output, whose cells hold their testbeds' data dirs."""
    out = [str(p) for p in REPO.glob(".testbed*") if p.is_dir()]
    return out + [str(p) for p in (REPO / "reports" / "out",) if p.is_dir()]


def _sc(obj: dict[str, Any] | None) -> dict[str, Any]:
    return (obj or {}).get("securityContext") or {}


def _image_user(user: str) -> tuple[int | None, int | None]:
    if not user:
        return None, None
    uid, _, gid = user.partition(":")
    try:
        return int(uid), (int(gid) if gid else None)
    except ValueError:
        raise ConfigError(f"image user {user!r} is not numeric (no image /etc/passwd here)") from None


def user_for(pod: dict[str, Any], cont: dict[str, Any], image_user: str) -> dict[str, Any] | None:
    """The uid, gid and groups a container runs as (securityContext over the image), or None for root
    with no supplementary groups. Raises ConfigError for runAsNonRoot with a root user."""
    psc, csc = _sc(pod.get("spec")), cont.get("securityContext") or {}
    img_uid, img_gid = _image_user(image_user)
    uid = csc.get("runAsUser", psc.get("runAsUser", img_uid))
    gid = csc.get("runAsGroup", psc.get("runAsGroup", img_gid))
    non_root = csc.get("runAsNonRoot", psc.get("runAsNonRoot"))
    if non_root and not uid:
        if uid is None:
            raise ConfigError("container has runAsNonRoot and image will run as root")
        raise ConfigError("container's runAsUser breaks non-root policy")
    groups = [int(g) for g in psc.get("supplementalGroups") or []]
    if psc.get("fsGroup") is not None:
        groups.append(int(psc["fsGroup"]))
    if not uid and not gid and not groups:
        return None
    return {"uid": int(uid or 0), "gid": int(gid or 0), "groups": sorted(set(groups))}


def volume_owner(pod: dict[str, Any]) -> Owner:
    """Who owns secret and token files: the one uid every container runs as, when they agree (the
    kubelet makes projected tokens that user's, mode 0600), and the pod's fsGroup."""
    from . import images

    uids = set()
    spec = pod.get("spec") or {}
    for c in (spec.get("initContainers") or []) + (spec.get("containers") or []):
        entry = images.lookup(c.get("image") or "")
        try:
            u = user_for(pod, c, entry.user if entry else "")
        except ConfigError:
            u = None
        uids.add(u["uid"] if u else 0)
    fs_group = _sc(spec).get("fsGroup")
    return Owner(uids.pop() if len(uids) == 1 else None, int(fs_group) if fs_group is not None else None)


def privileged(cont: dict[str, Any]) -> bool:
    return bool((cont.get("securityContext") or {}).get("privileged"))
