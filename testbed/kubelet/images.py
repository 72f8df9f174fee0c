"""The node's two images, made here without a registry: a static pause (sandbox) and busybox.

Each is written as an OCI image layout in a tar archive (``oci-layout``, ``index.json``, ``blobs/``)
with one uncompressed layer, and imported into containerd's ``k8s.io`` namespace with ``ctr images
import``, where the CRI plugin finds it as if pulled. The index names the image with the annotation
containerd's importer reads (``io.containerd.image.name``). Layers are deterministic (mtime 0, root
owner), so the same inputs give the same digests.

* pause: ``pause.c`` beside this file, ``gcc -static``; the sandbox image of containerd's CRI config.
* busybox: Debian's ``busybox-static`` (``/bin/busybox``) with the applet links a pod needs.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REGISTRY = "hami.local/testbed"  # never contacted: the images exist only in containerd's store
PAUSE_IMAGE = f"{REGISTRY}/pause:1"
BUSYBOX_IMAGE = f"{REGISTRY}/busybox:1"
BUSYBOX = Path("/bin/busybox")
APPLETS = ("sh", "sleep", "cat", "echo", "ls", "env", "true", "false", "id", "hostname", "ps", "wget")


class ImageError(Exception):
    pass


@dataclass(frozen=True)
class ImageArchive:
    name: str
    path: Path
    manifest_digest: str


def _tar_layer(files: dict[str, bytes | str], dirs: tuple[str, ...] = ()) -> bytes:
    """A layer tar: ``files`` maps a path to its bytes (mode 0755) or, for ``str``, a symlink target."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
            tf.addfile(info)
        for name, content in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.mtime = 0
            if isinstance(content, str):
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, content, 0o777
                tf.addfile(info)
            else:
                info.size, info.mode = len(content), 0o755
                tf.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def write_oci_archive(path: Path, name: str, layer: bytes, entrypoint: list[str],
                      cmd: list[str]) -> ImageArchive:
    """One-layer linux/amd64 image ``name`` as an OCI layout tar at ``path``."""
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": entrypoint, "Cmd": cmd, "Env": ["PATH=/bin"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [_digest(layer)]},
        "history": [{"created_by": "testbed.kubelet.images"}],
    }, sort_keys=True).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": _digest(config),
                   "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": _digest(layer),
                    "size": len(layer)}],
    }, sort_keys=True).encode()
    index = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": _digest(manifest),
                       "size": len(manifest), "platform": {"architecture": "amd64", "os": "linux"},
                       "annotations": {"io.containerd.image.name": name,
                                       "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1]}}],
    }, sort_keys=True).encode()
    entries = {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}', "index.json": index}
    for blob in (layer, config, manifest):
        entries[f"blobs/sha256/{_digest(blob).split(':')[1]}"] = blob
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        for d in ("blobs", "blobs/sha256"):
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
            tf.addfile(info)
        for n, data in entries.items():
            info = tarfile.TarInfo(n)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tf.addfile(info, io.BytesIO(data))
    return ImageArchive(name, path, _digest(manifest))


def build_pause(out_dir: Path) -> Path:
    """``pause.c`` compiled static and stripped into ``out_dir/pause``."""
    gcc = shutil.which("gcc")
    if gcc is None:
        raise ImageError("gcc is needed to build the pause image (apt-get install gcc)")
    out_dir.mkdir(parents=True, exist_ok=True)
    binary = out_dir / "pause"
    p = subprocess.run([gcc, "-static", "-Os", "-s", "-Wall", "-o", str(binary), str(HERE / "pause.c")],
                       capture_output=True, text=True, timeout=120, check=False)
    if p.returncode != 0:
        raise ImageError(f"gcc -static pause.c failed (is libc6-dev installed?):\n{p.stderr[-2000:]}")
    return binary


def build_all(out_dir: Path) -> list[ImageArchive]:
    """The pause and busybox archives in ``out_dir``."""
    if not BUSYBOX.is_file():
        raise ImageError(f"{BUSYBOX} is missing: apt-get install busybox-static")
    dirs = ("bin", "dev", "etc", "proc", "sys", "tmp")
    pause = build_pause(out_dir / "build")
    out = [write_oci_archive(out_dir / "pause.tar", PAUSE_IMAGE,
                             _tar_layer({"pause": pause.read_bytes()}, dirs), ["/pause"], [])]
    files: dict[str, bytes | str] = {"bin/busybox": BUSYBOX.read_bytes()}
    files.update({f"bin/{a}": "busybox" for a in APPLETS})
    out.append(write_oci_archive(out_dir / "busybox.tar", BUSYBOX_IMAGE, _tar_layer(files, dirs), [], ["sh"]))
    return out
