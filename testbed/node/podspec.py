"""Pod-spec helpers: environment variables and volumes, resolved the way the kubelet resolves them."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubeclient.client import ApiError, Kube
from testbed.k8s.quantity import Quantity

SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


class MountError(Exception):
    """A volume could not be set up (event ``FailedMount``)."""


class ConfigError(Exception):
    """An env reference that cannot be resolved (reason ``CreateContainerConfigError``)."""


def _field_path(pod: dict[str, Any], path: str, node_ip: str) -> str:
    meta, spec, status = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
    m = re.match(r"^metadata\.(labels|annotations)\['(.+)'\]$", path)
    if m:
        return str((meta.get(m.group(1)) or {}).get(m.group(2), ""))
    simple = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName"),
        "status.hostIP": node_ip,
        "status.podIP": status.get("podIP"),
        "status.hostIPs": node_ip,
        "status.podIPs": status.get("podIP"),
    }
    if path in simple:
        return str(simple[path] or "")
    if path in ("metadata.labels", "metadata.annotations"):
        items = meta.get(path.split(".")[1]) or {}
        return "\n".join(f'{k}="{v}"' for k, v in sorted(items.items()))
    raise ConfigError(f"unsupported fieldRef {path}")


def _resource_field(pod: dict[str, Any], cname: str, ref: dict[str, Any], node_alloc: dict[str, str]) -> str:
    cname = ref.get("containerName") or cname
    cont = next(
        (
            c
            for c in (pod["spec"].get("containers") or []) + (pod["spec"].get("initContainers") or [])
            if c["name"] == cname
        ),
        None,
    )
    if cont is None:
        raise ConfigError(f"container {cname} not found for resourceFieldRef")
    res = ref["resource"]
    kind, _, name = res.partition(".")
    val = ((cont.get("resources") or {}).get(kind) or {}).get(name)
    if val is None and kind == "limits":
        val = node_alloc.get(name)  # no limit: the node's allocatable, as the kubelet does
    if val is None:
        return "0"
    divisor = Quantity.parse(str(ref.get("divisor") or "1"))
    q = Quantity.parse(str(val))
    # ceil(q / divisor), as the kubelet's ExtractContainerResourceValue does
    return str(-(-q.nanos // divisor.nanos))


class Resolver:
    """Reads ConfigMaps and Secrets (cached per pod start) for env and volumes."""

    def __init__(self, kube: Kube, namespace: str) -> None:
        self.kube, self.ns = kube, namespace
        self._cache: dict[tuple[str, str], dict[str, Any] | None] = {}

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        key = (kind, name)
        if key not in self._cache:
            try:
                self._cache[key] = self.kube.get(f"/api/v1/namespaces/{self.ns}/{kind}/{name}")
            except ApiError as e:
                if e.status != 404:
                    raise
                self._cache[key] = None
        return self._cache[key]

    def data(self, kind: str, name: str) -> dict[str, bytes] | None:
        obj = self.get(kind, name)
        if obj is None:
            return None
        if kind == "secrets":
            return {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
        out = {k: v.encode() for k, v in (obj.get("data") or {}).items()}
        out.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
        return out


def container_env(
    pod: dict[str, Any], cont: dict[str, Any], res: Resolver, node_ip: str, node_alloc: dict[str, str],
    services: dict[str, str] | None = None,
) -> dict[str, str]:
    """The container's own variables; ``$(VAR)`` in a value also sees ``services`` (the Service
    variables the kubelet puts first), as the kubelet expands them."""
    env: dict[str, str] = {}
    for src in cont.get("envFrom") or []:
        prefix = src.get("prefix") or ""
        for kind, key in (("configmaps", "configMapRef"), ("secrets", "secretRef")):
            ref = src.get(key)
            if not ref:
                continue
            data = res.data(kind, ref["name"])
            if data is None:
                if ref.get("optional"):
                    continue
                what = "configmap" if kind == "configmaps" else "secret"
                raise ConfigError(f'{what} "{ref["name"]}" not found')
            for k, v in data.items():
                env[prefix + k] = v.decode(errors="replace")
    for e in cont.get("env") or []:
        name = e["name"]
        if "valueFrom" not in e:
            env[name] = _expand(str(e.get("value", "")), {**services, **env} if services else env)
            continue
        vf = e["valueFrom"]
        if "fieldRef" in vf:
            env[name] = _field_path(pod, vf["fieldRef"]["fieldPath"], node_ip)
        elif "resourceFieldRef" in vf:
            env[name] = _resource_field(pod, cont["name"], vf["resourceFieldRef"], node_alloc)
        else:
            for kind, key, what in (
                ("configmaps", "configMapKeyRef", "configmap"),
                ("secrets", "secretKeyRef", "secret"),
            ):
                ref = vf.get(key)
                if not ref:
                    continue
                data = res.data(kind, ref["name"])
                if data is None or ref["key"] not in data:
                    if ref.get("optional"):
                        break
                    if data is None:
                        raise ConfigError(f'{what} "{ref["name"]}" not found')
                    raise ConfigError(
                        f"couldn't find key {ref['key']} in {'Secret' if what == 'secret' else 'ConfigMap'} "
                        f"{res.ns}/{ref['name']}"
                    )
                env[name] = data[ref["key"]].decode(errors="replace")
                break
    return env


def _expand(value: str, env: dict[str, str]) -> str:
    """$(VAR) expansion with $$ escaping, as in the kubelet."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)", sub, value)


def expand_args(args: list[str], env: dict[str, str]) -> list[str]:
    return [_expand(a, env) for a in args]


@dataclass
class Volumes:
    """Host directories/files that back each volume of a pod."""

    paths: dict[str, Path] = field(default_factory=dict)
    etc: list[tuple[str, str, bool]] = field(default_factory=list)  # per-pod /etc files (resolv.conf)


@dataclass(frozen=True)
class Owner:
    """Who owns a pod's credential volumes (secret, projected): the one uid its containers run as
    (None when they differ) and the pod's fsGroup."""

    uid: int | None = 0
    fs_group: int | None = None

    def secret_modes(self, default_mode: int | None) -> tuple[int, int]:
        """(file mode, directory mode): 0600 in 0700, or 0640 in 0750 with an fsGroup; any other
        defaultMode than the API's default 0644 (which the apiserver writes into every pod, so it
        cannot be told from an explicit one) wins for files, and an item's mode always does.
        Containers with different uids and no fsGroup share nothing but "other": 0644 in 0755 then."""
        if default_mode == 0o644:
            default_mode = None
        if self.fs_group is not None:
            return (0o640 if default_mode is None else default_mode), 0o750
        if self.uid is None:
            return (0o644 if default_mode is None else default_mode), 0o755
        return (0o600 if default_mode is None else default_mode), 0o700

    def apply(self, path: Path, mode: int) -> None:
        # chown before chmod: chown clears set-id bits
        if os.geteuid() == 0:
            os.chown(path, self.uid or 0, self.fs_group if self.fs_group is not None else -1)
        os.chmod(path, mode)


Files = dict[str, tuple[bytes, int]]  # relative path -> (content, mode)


def _items(data: dict[str, bytes], items: list[dict[str, Any]] | None, mode: int, out: Files) -> None:
    chosen = (
        [(it["key"], it["path"], it.get("mode")) for it in items] if items else [(k, k, None) for k in data]
    )
    for key, rel, item_mode in chosen:
        if key not in data:
            raise MountError(f"configmap/secret key {key!r} not found")
        out[rel] = (data[key], item_mode if item_mode is not None else mode)


def _write_private(p: Path, data: bytes, mode: int, owner: Owner) -> None:
    """Write through a temporary file created 0600, so no other user can read it even for a moment."""
    tmp = p.with_name(f".{p.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    owner.apply(tmp, mode)
    os.replace(tmp, p)


DATA_LINK = "..data"


def current_files(dest: Path) -> dict[str, bytes]:
    """What an atomically written volume shows now (relative path -> content)."""
    data = dest / DATA_LINK
    out: dict[str, bytes] = {}
    if not data.is_dir():
        return out
    for p in data.rglob("*"):
        if p.is_file():
            out[str(p.relative_to(data))] = p.read_bytes()
    return out


def write_atomic(dest: Path, files: Files, owner: Owner, dir_mode: int) -> bool:
    """The kubelet's atomic writer: the files go to a fresh ``..<timestamp>`` directory, ``..data``
    is switched to it with one rename, each top-level name is a symlink through ``..data``, and the
    old directory is removed. A reader sees the old set or the new one, never a mix. Returns whether
    anything changed."""
    dest.mkdir(parents=True, exist_ok=True)
    owner.apply(dest, dir_mode)
    old_target = os.readlink(dest / DATA_LINK) if (dest / DATA_LINK).is_symlink() else None
    if old_target is not None:
        old = dest / old_target
        same = current_files(dest) == {k: v for k, (v, _m) in files.items()}
        same = same and all(
            (old / rel).stat().st_mode & 0o7777 == mode for rel, (_v, mode) in files.items()
        )
        if same:
            return False
    stamp = dt.datetime.now(dt.UTC).strftime("%Y_%m_%d_%H_%M_%S.%f")
    ts_dir = dest / f"..{stamp}{os.urandom(3).hex()}"
    ts_dir.mkdir()
    owner.apply(ts_dir, dir_mode)
    for rel, (data, mode) in files.items():
        p = ts_dir / rel
        if p.parent != ts_dir:
            p.parent.mkdir(parents=True, exist_ok=True)
            owner.apply(p.parent, dir_mode)
        _write_private(p, data, mode, owner)
    tmp_link = dest / "..data_tmp"
    if tmp_link.is_symlink():
        tmp_link.unlink()
    os.symlink(ts_dir.name, tmp_link)
    os.replace(tmp_link, dest / DATA_LINK)  # the one atomic step
    tops = {rel.split("/", 1)[0] for rel in files}
    for name in tops:
        link = dest / name
        if not link.is_symlink():
            if link.is_dir():
                shutil.rmtree(link)
            elif link.exists():
                link.unlink()
            os.symlink(f"{DATA_LINK}/{name}", link)
    for entry in dest.iterdir():
        if entry.name.startswith(".."):
            continue
        if entry.is_symlink() and entry.name not in tops:
            entry.unlink()  # a key that is gone
    if old_target is not None and old_target != ts_dir.name:
        shutil.rmtree(dest / old_target, ignore_errors=True)
    return True


def _downward(
    pod: dict[str, Any],
    items: list[dict[str, Any]],
    node_ip: str,
    node_alloc: dict[str, str],
    mode: int,
    out: Files,
) -> None:
    for it in items:
        if "fieldRef" in it:
            val = _field_path(pod, it["fieldRef"]["fieldPath"], node_ip)
        else:
            ref = it["resourceFieldRef"]
            val = _resource_field(pod, ref.get("containerName", ""), ref, node_alloc)
        out[it["path"]] = (val.encode(), it.get("mode") or mode)


def token_for(kube: Kube, pod: dict[str, Any], audience: str | None, expiration: int) -> str:
    meta = pod["metadata"]
    sa = pod["spec"].get("serviceAccountName") or "default"
    body: dict[str, Any] = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {
            "expirationSeconds": expiration,
            "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": meta["name"], "uid": meta["uid"]},
        },
    }
    if audience:
        body["spec"]["audiences"] = [audience]
    out = kube.create(f"/api/v1/namespaces/{meta['namespace']}/serviceaccounts/{sa}/token", body)
    return str(out["status"]["token"])


def node_path(node_root: Path, host_path: str) -> Path:
    """Where a path of the node's host filesystem lives on this machine: under the node root.

    The one rule for every host path the kubelet is handed (hostPath volumes, the mounts of a device
    plugin's Allocate response), so a file a DaemonSet pod wrote through its hostPath ``/usr/local/vgpu``
    is the file a device mount of ``/usr/local/vgpu/...`` binds into another container."""
    return node_root / os.path.normpath("/" + host_path).lstrip("/")


def setup_volumes(
    kube: Kube,
    pod: dict[str, Any],
    pod_dir: Path,
    node_root: Path,
    node_ip: str,
    node_alloc: dict[str, str],
    ca_pem: bytes,
    owner: Owner | None = None,
) -> Volumes:
    """Materialise every volume under ``pod_dir/volumes`` (hostPath: under the node root).

    Secret and projected volumes are credentials: 0700 directories of 0600 files owned by the uid the
    containers run as (0750/0640, group fsGroup, with an fsGroup); ``pod_dir`` itself is 0750."""
    res = Resolver(kube, pod["metadata"]["namespace"])
    out = Volumes()
    if owner is None:
        owner = Owner(fs_group=((pod["spec"].get("securityContext") or {}).get("fsGroup")))
    pod_dir.mkdir(parents=True, exist_ok=True)
    pod_dir.chmod(0o750)
    base = pod_dir / "volumes"
    base.mkdir(exist_ok=True)
    base.chmod(0o750)
    for vol in pod["spec"].get("volumes") or []:
        name = vol["name"]
        dest = base / name
        try:
            if "hostPath" in vol:
                hp = vol["hostPath"]
                host = node_path(node_root, hp["path"])
                typ = hp.get("type") or ""
                if typ in ("DirectoryOrCreate", "") and not host.exists():
                    host.mkdir(parents=True, exist_ok=True)
                elif typ == "FileOrCreate" and not host.exists():
                    host.parent.mkdir(parents=True, exist_ok=True)
                    host.touch()
                elif typ in ("Directory", "File", "Socket") and not host.exists():
                    raise MountError(
                        f"hostPath type check failed: {hp['path']} is not a "
                        f"{'directory' if typ == 'Directory' else typ.lower()}"
                    )
                out.paths[name] = host
                continue
            if "emptyDir" in vol:
                dest.mkdir(parents=True, exist_ok=True)
                # world-writable as the kubelet makes it (set-group-id to the fsGroup when there is one)
                if owner.fs_group is not None and os.geteuid() == 0:
                    os.chown(dest, 0, owner.fs_group)
                    os.chmod(dest, 0o2777)
                else:
                    os.chmod(dest, 0o777)
            elif any(k in vol for k in CONTENT_VOLUMES):
                files, file_owner, dmode = volume_files(
                    kube, res, pod, vol, node_ip, node_alloc, ca_pem, owner, dest
                )
                write_atomic(dest, files, file_owner, dmode)
            else:
                # persistentVolumeClaim, csi, ...: an empty directory stands in (documented)
                dest.mkdir(parents=True, exist_ok=True)
        except MountError:
            raise
        except (ApiError, OSError, KeyError) as e:
            raise MountError(f"MountVolume.SetUp failed for volume {name!r} : {e}") from e
        out.paths[name] = dest
    conf = resolv_conf(pod)
    if conf is not None:
        path = pod_dir / "resolv.conf"
        path.write_text(conf)
        path.chmod(0o644)
        out.etc.append((str(path), "/etc/resolv.conf", True))
    return out


def resolv_conf(pod: dict[str, Any], domain: str = "cluster.local") -> str | None:
    """The pod's /etc/resolv.conf as the kubelet writes it for its dnsPolicy (None: the host's own,
    for ``Default``, host-network pods without ``ClusterFirstWithHostNet``, and agents without
    network namespaces, whose pods cannot reach the cluster DNS address)."""
    from . import clusternet, netns

    spec = pod.get("spec") or {}
    policy = spec.get("dnsPolicy") or "ClusterFirst"
    host_net = bool(spec.get("hostNetwork"))
    cfg = spec.get("dnsConfig") or {}
    if policy == "Default" or not netns.can_use_netns():
        return None
    if policy == "None":
        servers, searches, options = [], [], []
    elif policy == "ClusterFirst" and host_net:
        return None
    else:
        ns = pod["metadata"]["namespace"]
        servers = [clusternet.DNS_IP]
        searches = [f"{ns}.svc.{domain}", f"svc.{domain}", domain]
        options = [{"name": "ndots", "value": "5"}]
    servers += [s for s in cfg.get("nameservers") or [] if s not in servers]
    searches += [s for s in cfg.get("searches") or [] if s not in searches]
    names = {o["name"] for o in cfg.get("options") or []}
    options = [o for o in options if o["name"] not in names] + list(cfg.get("options") or [])
    lines = []
    if searches:
        lines.append("search " + " ".join(searches))
    lines += [f"nameserver {s}" for s in servers[:3]]
    if options:
        lines.append("options " + " ".join(
            o["name"] + (f":{o['value']}" if o.get("value") not in (None, "") else "") for o in options))
    return "\n".join(lines) + "\n"


CONTENT_VOLUMES = ("configMap", "secret", "downwardAPI", "projected")
TOKEN_REFRESH = 0.8  # the kubelet renews a projected token once 80% of its lifetime has passed


def volume_files(
    kube: Kube,
    res: Resolver,
    pod: dict[str, Any],
    vol: dict[str, Any],
    node_ip: str,
    node_alloc: dict[str, str],
    ca_pem: bytes,
    owner: Owner,
    dest: Path,
) -> tuple[Files, Owner, int]:
    """The files a configMap, secret, downwardAPI or projected volume shows, who owns them, and the
    directory mode. A projected token already in ``dest`` is kept until it is due for renewal."""
    files: Files = {}
    if "configMap" in vol or "secret" in vol:
        kind, key = ("configmaps", "configMap") if "configMap" in vol else ("secrets", "secret")
        src = vol[key]
        ref = src.get("name") if kind == "configmaps" else src.get("secretName")
        data = res.data(kind, ref)
        if data is None:
            if not src.get("optional"):
                what = "configmap" if kind == "configmaps" else "secret"
                raise MountError(f'{what} "{ref}" not found')
            data = {}
        if kind == "secrets":
            fmode, dmode = owner.secret_modes(src.get("defaultMode"))
            _items(data, src.get("items"), fmode, files)
            return files, owner, dmode
        _items(data, src.get("items"), src.get("defaultMode", 0o644), files)
        return files, Owner(0, owner.fs_group), 0o755
    if "downwardAPI" in vol:
        src = vol["downwardAPI"]
        _downward(pod, src.get("items") or [], node_ip, node_alloc, src.get("defaultMode", 0o644), files)
        return files, Owner(0, owner.fs_group), 0o755
    src = vol["projected"]
    mode, dmode = owner.secret_modes(src.get("defaultMode"))
    for s in src.get("sources") or []:
        if "serviceAccountToken" in s:
            t = s["serviceAccountToken"]
            exp = int(t.get("expirationSeconds", 3607))
            old = dest / DATA_LINK / t["path"]
            try:
                fresh = time.time() - old.stat().st_mtime < TOKEN_REFRESH * exp
            except OSError:
                fresh = False
            tok = old.read_bytes() if fresh else token_for(kube, pod, t.get("audience"), exp).encode()
            files[t["path"]] = (tok, mode)
        elif "configMap" in s:
            cm = s["configMap"]
            data = res.data("configmaps", cm["name"])
            if data is None and cm["name"] == "kube-root-ca.crt":
                data = {"ca.crt": ca_pem}  # not yet published in this namespace
            if data is None:
                if cm.get("optional"):
                    continue
                raise MountError(f'configmap "{cm["name"]}" not found')
            _items(data, cm.get("items"), mode, files)
        elif "secret" in s:
            sec = s["secret"]
            data = res.data("secrets", sec["name"])
            if data is None:
                if sec.get("optional"):
                    continue
                raise MountError(f'secret "{sec["name"]}" not found')
            _items(data, sec.get("items"), mode, files)
        elif "downwardAPI" in s:
            _downward(pod, s["downwardAPI"].get("items") or [], node_ip, node_alloc, mode, files)
    return files, owner, dmode


def sync_volumes(
    kube: Kube,
    pod: dict[str, Any],
    vols: Volumes,
    node_ip: str,
    node_alloc: dict[str, str],
    ca_pem: bytes,
    owner: Owner,
    res: Resolver | None = None,
) -> list[str]:
    """The kubelet's periodic volume sync: rewrite (atomically) each configMap, secret, downwardAPI and
    projected volume whose content changed; returns the names of the volumes that changed. Volumes
    whose source is gone keep their last content, as the kubelet's do. ``res`` may be shared by the
    pods of one namespace within one sync round (one read per object)."""
    res = res or Resolver(kube, pod["metadata"]["namespace"])
    changed = []
    for vol in pod["spec"].get("volumes") or []:
        dest = vols.paths.get(vol["name"])
        if dest is None or not any(k in vol for k in CONTENT_VOLUMES) or not (dest / DATA_LINK).exists():
            continue
        try:
            files, file_owner, dmode = volume_files(kube, res, pod, vol, node_ip, node_alloc, ca_pem, owner,
                                                    dest)
            if write_atomic(dest, files, file_owner, dmode):
                changed.append(vol["name"])
        except (MountError, ApiError, OSError, KeyError, ConfigError):
            continue
    return changed


def container_mounts(cont: dict[str, Any], vols: Volumes) -> list[tuple[str, str, bool]]:
    mounts = []
    for vm in cont.get("volumeMounts") or []:
        host = vols.paths.get(vm["name"])
        if host is None:
            continue
        if vm.get("subPath"):
            host = host / vm["subPath"]
            if not host.exists():
                host.mkdir(parents=True, exist_ok=True)
        mounts.append((str(host), vm["mountPath"], bool(vm.get("readOnly"))))
    taken = {m[1] for m in mounts}
    return mounts + [m for m in vols.etc if m[1] not in taken]


def cleanup(pod_dir: Path) -> None:
    shutil.rmtree(pod_dir / "volumes", ignore_errors=True)


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))
