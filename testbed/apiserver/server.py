"""The testbed apiserver: HTTPS, authentication, authorization, and the Kubernetes REST API."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import copy
import functools
import json
import logging
import ssl
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml
from aiohttp import ClientSession, ClientTimeout, TCPConnector, web

from testbed.k8s.timefmt import now as now_rfc3339

from .. import pki
from . import discovery, errors, openapi, paths, protobuf, rbac, selectors, tables
from . import patch as patch_formats
from .auth import TokenAuthority, UserInfo, authenticate
from .builtin import BuiltIns, bootstrap_objects, stamp
from .errors import APIError
from .meta import api_version as make_api_version
from .paths import RequestInfo
from .persist import DB_NAME, DataDirError, SQLiteBackend, wipe_state
from .registry import SYSTEM_USER, Registry
from .store import Entry, Store
from .target import Target
from .versions import VersionProfile, profile
from .watch import serve_watch
from .webhooks import REQUEST_WARNINGS, WebhookDispatcher

log = logging.getLogger("testbed.apiserver")
MAX_REQUEST_BYTES = 3 * 1024 * 1024

ADMIN_USER = UserInfo(name="testbed-admin", groups=("system:masters", "system:authenticated"))


@dataclass
class ServerConfig:
    minor: int = 33
    host: str = "127.0.0.1"
    port: int = 0
    data_dir: Path | None = None
    bookmark_interval: float = 5.0
    history: int = 20_000
    admin_token: str | None = None
    extra_tokens: dict[str, UserInfo] = field(default_factory=dict)
    # Keep objects, the CA, the service-account key and the admin token in data_dir across restarts.
    persist: bool = True
    # Discard what data_dir holds from an earlier run and start an empty cluster.
    fresh: bool = False


def _json(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    # Go's json.Encoder, which the real server writes with, ends every document with a newline
    return web.Response(
        body=orjson.dumps(obj) + b"\n", status=status, content_type="application/json", headers=headers
    )


def _raw(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=body, status=status, content_type="application/json", headers=headers)


def _int_param(q: Any, name: str) -> int | None:
    v = q.get(name)
    if v is None or v == "":
        return None
    try:
        return int(v)
    except ValueError as exc:
        raise errors.bad_request(f'strconv.ParseInt: parsing "{v}": invalid syntax') from exc


def _bool_param(q: Any, name: str) -> bool:
    v = q.get(name)
    if v is None or v == "":
        return False
    if v in ("1", "t", "T", "true", "TRUE", "True"):
        return True
    if v in ("0", "f", "F", "false", "FALSE", "False"):
        return False
    raise errors.bad_request(f'strconv.ParseBool: parsing "{v}": invalid syntax')


def _table_version(accept: str) -> str:
    return "v1" if "v=v1;" in accept or accept.rstrip().endswith("v=v1") else "v1beta1"


def _field_manager(request: web.Request) -> str:
    """The manager of a write: ``fieldManager``, else the User-Agent's product name as the real
    server takes it; never for an apply patch, which must name its manager itself."""
    given = request.query.get("fieldManager", "")
    apply = request.headers.get("Content-Type", "").split(";")[0].strip() == "application/apply-patch+yaml"
    if given or (apply and request.method == "PATCH"):
        return given
    return patch_formats.manager_from_user_agent(request.headers.get("User-Agent", ""))


def _dry_run(q: Any) -> bool:
    values = q.getall("dryRun", [])
    for v in values:
        if v != "All":
            raise errors.bad_request(f'Invalid value: "{v}": supported values: "All"')
    return bool(values)


class APIServer:
    """One emulated kube-apiserver for a given Kubernetes minor."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.profile: VersionProfile = profile(config.minor)
        self.backend: SQLiteBackend | None = None
        self.restored = 0
        durable = config.data_dir is not None and config.persist
        if durable:
            assert config.data_dir is not None
            self._open_durable(config.data_dir)
        else:
            self.store = Store(history=config.history)
            self.ca = pki.make_ca("testbed-ca")
            self.authority = TokenAuthority()
        # every stored object carries the zero-valued fields the real server always writes
        self.store.shape = functools.partial(protobuf.fill_always, minor=self.profile.minor)
        self.store.object_size = functools.partial(protobuf.encoded_size, minor=self.profile.minor)
        self.serving = pki.make_serving_cert(
            self.ca,
            "kube-apiserver",
            [
                config.host,
                "127.0.0.1",
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ],
        )
        import secrets as _secrets

        if config.admin_token:
            self.admin_token = config.admin_token
        elif durable:
            assert config.data_dir is not None
            try:
                self.admin_token = pki.load_or_create_secret(
                    config.data_dir / "pki" / "admin.token", lambda: _secrets.token_urlsafe(32),
                    "admin token")
            except pki.PKIError as e:
                raise DataDirError(str(e)) from e
        else:
            self.admin_token = _secrets.token_urlsafe(32)
        self.static_tokens: dict[str, UserInfo] = {self.admin_token: ADMIN_USER, **config.extra_tokens}
        self.webhooks = WebhookDispatcher(self.store, self.profile.admission_review_versions)
        self.registry = Registry(self.profile, self.store, self.webhooks)
        self.builtins = BuiltIns(self.registry, self.authority, self.ca.cert_pem)
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._kubelet: ClientSession | None = None
        self.port = config.port
        self.started_at = time.time()

    def _open_durable(self, data_dir: Path) -> None:
        """Open (or create) the state database and the key material in ``data_dir``.

        Anything there that cannot be used is a DataDirError naming the file, never a silent reset:
        a new CA or signing key would orphan every kubeconfig and token handed out before."""
        pki_dir = data_dir / "pki"
        if self.config.fresh:
            wipe_state(data_dir)
        db = data_dir / DB_NAME
        had_state = db.exists() and db.stat().st_size > 0
        backend = None
        if had_state:
            backend = SQLiteBackend(db, self.profile.minor)  # first: a database we cannot read is the news
            needed = ["ca.crt", "ca.key", "sa.key"]
            if self.config.admin_token is None:
                needed.append("admin.token")
            for f in needed:
                if not (pki_dir / f).exists():
                    backend.close()
                    raise DataDirError(
                        f"{pki_dir / f}: missing, but {db} holds a cluster whose clients trust it; "
                        "restore the file or start with `testbed up --fresh`")
        try:
            self.ca = pki.load_or_create_ca(pki_dir, "testbed-ca")
            sa_pem = pki.load_or_create_key(pki_dir / "sa.key", lambda: TokenAuthority().private_key_pem(),
                                            "service-account signing key")
            self.authority = TokenAuthority(sa_pem)
        except (pki.PKIError, ValueError) as e:
            if backend is not None:
                backend.close()
            msg = str(e) if isinstance(e, pki.PKIError) else f"{pki_dir / 'sa.key'}: {e}"
            raise DataDirError(msg) from e
        self.backend = backend or SQLiteBackend(db, self.profile.minor)
        self.store = Store(history=self.config.history, backend=self.backend)
        try:
            self.restored = self.store.load()
        except ValueError as e:  # an object row that is not JSON
            self.backend.close()
            raise DataDirError(f"{db}: an object is not valid JSON ({e}); "
                               "start with `testbed up --fresh`") from e

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"https://{self.config.host}:{self.port}"

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        d = self._cert_dir()
        pki.KeyPair(self.serving.cert_pem, self.serving.key_pem).write(
            d / "apiserver.crt", d / "apiserver.key"
        )
        ctx.load_cert_chain(d / "apiserver.crt", d / "apiserver.key")
        return ctx

    def _cert_dir(self) -> Path:
        if self.config.data_dir is not None:
            d = self.config.data_dir / "pki"
        else:
            import tempfile

            d = Path(tempfile.mkdtemp(prefix="testbed-pki-"))
        d.mkdir(parents=True, exist_ok=True)
        (d / "ca.crt").write_bytes(self.ca.cert_pem)
        return d

    def make_app(self) -> web.Application:
        # kube-apiserver's MaxRequestBodyBytes: a larger body is answered 413 (see handle)
        app = web.Application(client_max_size=MAX_REQUEST_BYTES, handler_args={"tcp_keepalive": True})
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    async def start(self) -> None:
        app = self.make_app()
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        port = self.config.port
        last = self.backend.meta("port") if self.backend is not None else None
        if port == 0 and last:
            # Same port as last time, so the kubeconfigs handed out before still reach us.
            try:
                await self._listen(int(last))
            except OSError:
                log.warning("port %s of the previous run is taken; listening on a new one", last)
                await self._listen(0)
        else:
            await self._listen(port)
        server = self._site._server
        assert server is not None
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1]
        if self.backend is not None:
            self.backend.set_meta("port", str(self.port))
        await self._bootstrap()

    async def _listen(self, port: int) -> None:
        assert self._runner is not None
        self._site = web.TCPSite(
            self._runner,
            self.config.host,
            port,
            ssl_context=self.ssl_context(),
            backlog=1024,
            reuse_address=True,
        )
        await self._site.start()

    async def stop(self) -> None:
        self.store.close_watchers()
        await self.builtins.stop()
        await self.webhooks.close()
        if self._kubelet is not None:
            await self._kubelet.close()
        if self._runner is not None:
            await self._runner.cleanup()
        if self.backend is not None:
            self.backend.close()
            self.backend = None
            self.store.backend = None

    async def _bootstrap(self) -> None:
        # After a restart only what is missing is created; the kubernetes Service/Endpoints follow
        # the address we listen on now.
        for group, plural, obj in bootstrap_objects(self.port, self.config.host):
            ns = obj["metadata"].get("namespace", "")
            t = self.registry.target_for(group, plural, ns)
            cur = self.store.get(t.rtype.store_key, ns, obj["metadata"]["name"])
            if cur is None:
                await self.registry.create(t, obj, SYSTEM_USER)
                continue
            if plural == "endpoints" and cur.get("subsets") != obj["subsets"]:
                self.store.put(t.rtype.store_key, {**copy.deepcopy(cur), "subsets": obj["subsets"]},
                               event="MODIFIED")
            elif plural == "services":
                ports = (cur.get("spec") or {}).get("ports") or []
                want = obj["spec"]["ports"][0]["targetPort"]
                if ports and ports[0].get("targetPort") != want:
                    new = copy.deepcopy(cur)
                    new["spec"]["ports"][0]["targetPort"] = want
                    self.store.put(t.rtype.store_key, new, event="MODIFIED")
        for obj in rbac.bootstrap_objects(self.profile.minor):
            key = rbac.STORE_KEYS[obj["kind"]]
            if self.store.get(key, obj["metadata"].get("namespace", ""), obj["metadata"]["name"]) is not None:
                continue
            o = stamp(copy.deepcopy(obj))
            o["apiVersion"] = "rbac.authorization.k8s.io/v1"
            self.store.put(rbac.STORE_KEYS[o["kind"]], o, event="ADDED")

    def kubeconfig(self, user: str = "testbed-admin", token: str | None = None) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "preferences": {},
            "clusters": [
                {
                    "name": "testbed",
                    "cluster": {
                        "server": self.url,
                        "certificate-authority-data": base64.b64encode(self.ca.cert_pem).decode(),
                    },
                }
            ],
            "users": [{"name": user, "user": {"token": token or self.admin_token}}],
            "contexts": [
                {"name": "testbed", "context": {"cluster": "testbed", "user": user, "namespace": "default"}}
            ],
            "current-context": "testbed",
        }

    def write_kubeconfig(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(self.kubeconfig(), sort_keys=False))
        path.chmod(0o600)
        return path

    # -- request entry -----------------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.StreamResponse:
        warnings: list[str] = []
        token = REQUEST_WARNINGS.set(warnings)  # admission webhooks' warnings for this request
        wording = selectors.WORDING_MINOR.set(self.profile.minor)
        try:
            user = self._impersonate(request, self._authenticate(request))
            resp = self._negotiate(request, await self._dispatch(request, user))
            if warnings and not resp.prepared:
                for text in warnings:  # as kube-apiserver: 299, agent "-", the text quoted
                    resp.headers.add("Warning", f"299 - {json.dumps(text)}")
            return resp
        except APIError as e:
            resp = _json(e.status(), status=e.code)
            retry_after = (e.details or {}).get("retryAfterSeconds")
            if retry_after:  # as kube-apiserver's error writer: clients (client-go) wait and retry
                resp.headers["Retry-After"] = str(retry_after)
            return self._negotiate(request, resp)
        except web.HTTPRequestEntityTooLarge:
            limit = f"Request entity too large: limit is {MAX_REQUEST_BYTES}"
            err = APIError(413, "RequestEntityTooLarge", limit)
            return self._negotiate(request, _json(err.status(), status=413))
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception as e:  # pragma: no cover - a bug; answer like the real server's panic filter
            log.exception("internal error serving %s %s", request.method, request.path)
            err = errors.internal(repr(e))
            return _json(err.status(), status=500)
        finally:
            REQUEST_WARNINGS.reset(token)
            selectors.WORDING_MINOR.reset(wording)

    def _negotiate(self, request: web.Request, resp: web.StreamResponse) -> web.StreamResponse:
        """A JSON object answer re-encoded as protobuf when the client lists protobuf first in Accept
        (what the real server does); kinds without a protobuf form and streams stay JSON."""
        if (not isinstance(resp, web.Response) or resp.content_type != "application/json"
                or not isinstance(resp.body, bytes)
                or not protobuf.prefers_protobuf(request.headers.get("Accept", ""))):
            return resp
        body = protobuf.encode_response(resp.body, self.profile.minor)
        if body is None:
            return resp
        dropped = ("content-type", "content-length")
        headers = {k: v for k, v in resp.headers.items() if k.lower() not in dropped}
        return web.Response(body=body, status=resp.status, headers=headers, content_type=protobuf.MEDIA_TYPE)

    def _authenticate(self, request: web.Request) -> UserInfo:
        header = request.headers.get("Authorization")
        if not header:
            return UserInfo(name="system:anonymous", groups=("system:unauthenticated",))
        user = authenticate(header, self.static_tokens, self.authority, self.store)
        if user is None:
            raise errors.unauthorized()
        return user

    def _impersonate(self, request: web.Request, user: UserInfo) -> UserInfo:
        """``Impersonate-User``/``-Group``/``-Uid``/``-Extra-*`` headers (kubectl ``--as``, ``--as-group``):
        each one needs the ``impersonate`` verb on users, serviceaccounts, groups, uids or userextras,
        as kube-apiserver's impersonation filter checks it; then the request runs as that user."""
        h = request.headers
        name = h.get("Impersonate-User", "")
        groups = h.getall("Impersonate-Group", [])
        uid = h.get("Impersonate-Uid", "")
        extra: dict[str, list[str]] = {}
        for key, value in h.items():
            if key.lower().startswith("impersonate-extra-"):
                extra_key = urllib.parse.unquote(key[len("impersonate-extra-"):]).lower()
                extra.setdefault(extra_key, []).append(value)
        if not (name or groups or uid or extra):
            return user
        if not name:
            raise errors.internal("requested impersonation without impersonating a user")
        checks: list[tuple[str, str, str, str]] = []  # (group, resource, namespace, name)
        sa = name.split(":")
        if len(sa) == 4 and name.startswith("system:serviceaccount:"):
            checks.append(("", "serviceaccounts", sa[2], sa[3]))
        else:
            checks.append(("", "users", "", name))
        checks += [("", "groups", "", g) for g in groups]
        if uid:
            checks.append(("authentication.k8s.io", "uids", "", uid))
        for key, values in extra.items():
            checks += [("authentication.k8s.io", f"userextras/{key}", "", v) for v in values]
        if "system:masters" not in user.groups:
            for group, resource, namespace, obj in checks:
                res, _, sub = resource.partition("/")
                attrs = rbac.Attributes(user=user, verb="impersonate", group=group, resource=res,
                                        subresource=sub, namespace=namespace, name=obj)
                allowed, reason = rbac.authorize(self.store, attrs, revision=self._rbac_revision())
                if not allowed:
                    raise rbac.forbidden_error(attrs, reason)
        all_groups = list(groups)
        if len(sa) == 4 and name.startswith("system:serviceaccount:") and not groups:
            all_groups += ["system:serviceaccounts", f"system:serviceaccounts:{sa[2]}"]
        if name != "system:anonymous" and "system:authenticated" not in all_groups:
            all_groups.append("system:authenticated")
        return UserInfo(name=name, uid=uid, groups=tuple(all_groups), extra=extra)

    def _rbac_revision(self) -> int:
        rev = self.store.revisions
        return sum(rev[k] for k in rbac.STORE_KEYS.values())

    def _authorize(self, user: UserInfo, ri: RequestInfo) -> None:
        if "system:masters" in user.groups:
            return
        attrs = rbac.Attributes(
            user=user,
            verb=ri.verb,
            group=ri.group,
            resource=ri.plural,
            subresource=ri.subresource,
            namespace=ri.namespace,
            name=ri.name,
            path="" if ri.resource_request else ri.path,
            version=ri.version,
        )
        allowed, reason = rbac.authorize(self.store, attrs, revision=self._rbac_revision())
        if not allowed:
            raise rbac.forbidden_error(attrs, reason)

    async def _dispatch(self, request: web.Request, user: UserInfo) -> web.StreamResponse:
        q = request.query
        ri = paths.parse(request.method, request.path, q, self.profile)
        self._authorize(user, ri)
        if not ri.resource_request:
            return self._nonresource(request, ri)
        assert ri.rtype is not None
        t = Target(ri.rtype, ri.version, ri.namespace if ri.rtype.namespaced else "", ri.name, ri.subresource)
        if ri.verb not in ri.rtype.verbs and not ri.subresource and ri.verb not in ("watch",):
            raise errors.method_not_allowed()
        sub = ri.subresource
        if sub:
            return await self._subresource(request, ri, t, user)
        if ri.rtype.virtual:
            return await self._virtual(request, ri, t, user)
        if ri.verb == "get":
            return self._get(request, ri, t)
        if ri.verb == "list":
            return self._list(request, ri, t)
        if ri.verb == "watch":
            return await self._watch(request, ri, t)
        if ri.verb == "create":
            body = await self._body(request)
            res = await self.registry.create(
                t, body, user, dry_run=_dry_run(q), field_manager=_field_manager(request)
            )
            return self._object_response(request, t, res, 201)
        if ri.verb == "update":
            body = await self._body(request)
            res = await self.registry.update(
                t, body, user, dry_run=_dry_run(q), field_manager=_field_manager(request)
            )
            return self._object_response(request, t, res, 200)
        if ri.verb == "patch":
            raw = await request.read()
            res = await self.registry.patch(
                t,
                request.headers.get("Content-Type", ""),
                raw,
                user,
                dry_run=_dry_run(q),
                field_manager=_field_manager(request),
                force=_bool_param(q, "force"),
            )
            return self._object_response(request, t, res, 200)
        if ri.verb == "delete":
            opts = await self._delete_options(request)
            obj, finished = await self.registry.delete(t, opts, user, dry_run=_dry_run(q))
            return _json(
                self.registry.delete_answer(t, obj, finished, opts),
                status=200 if finished else 202 if t.rtype.plural == "namespaces" else 200,
            )
        if ri.verb == "deletecollection":
            return await self._delete_collection(request, ri, t, user)
        raise errors.method_not_allowed()

    # -- bodies ------------------------------------------------------------------------------
    async def _body(self, request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        ctype = request.headers.get("Content-Type", "application/json").split(";")[0].strip()
        return decode_body(raw, ctype, self.profile.minor)

    async def _delete_options(self, request: web.Request) -> dict[str, Any]:
        opts: dict[str, Any] = {}
        raw = await request.read()
        if raw.strip():
            ctype = request.headers.get("Content-Type", "application/json").split(";")[0]
            opts = decode_body(raw, ctype, self.profile.minor)
        q = request.query
        g = _int_param(q, "gracePeriodSeconds")
        if g is not None:
            opts["gracePeriodSeconds"] = g
        if q.get("propagationPolicy"):
            pp = q["propagationPolicy"]
            if pp not in ("Orphan", "Background", "Foreground"):
                raise errors.bad_request(
                    f'propagationPolicy: Unsupported value: "{pp}": supported values: '
                    '"Foreground", "Background", "Orphan"'
                )
            opts["propagationPolicy"] = pp
        if q.get("orphanDependents"):
            opts["orphanDependents"] = _bool_param(q, "orphanDependents")
        return opts

    def _object_response(
        self, request: web.Request, t: Target, res: Entry | dict[str, Any], status: int
    ) -> web.Response:
        if isinstance(res, Entry):
            return self._entry_response(t, res, status)
        return _json(self.registry.present(t, res), status=status)

    def _entry_bytes(self, t: Target, e: Entry) -> bytes:
        """The stored encoding when the client speaks the stored version; a conversion otherwise."""
        if e.obj.get("apiVersion") == t.api_version and t.rtype.store_key != "events":
            return e.raw
        return orjson.dumps(self.registry.present(t, e.obj))

    def _entry_response(self, t: Target, e: Entry, status: int = 200) -> web.Response:
        return _raw(self._entry_bytes(t, e), status)

    def _present_raw(self, t: Target) -> Callable[[Entry], bytes]:
        return functools.partial(self._entry_bytes, t)

    # -- reads -------------------------------------------------------------------------------
    def _get(self, request: web.Request, ri: RequestInfo, t: Target) -> web.Response:
        e = self.store.get_entry(t.rtype.store_key, t.namespace, t.name)
        if e is None:
            raise errors.not_found(t.group, t.rtype.plural, t.name)
        accept = request.headers.get("Accept", "")
        if "as=Table" in accept:
            tv = _table_version(accept)
            obj = self.registry.present(t, e.obj)
            return _json(
                tables.table(
                    t.rtype.store_key,
                    [obj],
                    {"resourceVersion": str(e.rv)},
                    request.query.get("includeObject", "Metadata"),
                    tv,
                )
            )
        if "as=PartialObjectMetadata" in accept:
            return _json(
                {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": e.obj["metadata"],
                }
            )
        return self._entry_response(t, e)

    def _matcher(self, request: web.Request, t: Target, name: str = ""):  # type: ignore[no-untyped-def]
        q = request.query
        ls = selectors.parse_label_selector(q.get("labelSelector", ""))
        fs_text = q.get("fieldSelector", "")
        if name:
            fs_text = ",".join(x for x in (fs_text, f"metadata.name={name}") if x)
        fs = selectors.parse_field_selector(fs_text, t.group, t.rtype.plural)
        if ls.empty() and not fs_text:
            return None, None

        def match(obj: dict[str, Any]) -> bool:
            return ls.matches(obj["metadata"].get("labels")) and fs.matches(obj)

        return match, fs

    def _list(self, request: web.Request, ri: RequestInfo, t: Target) -> web.Response:
        q = request.query
        match, fs = self._matcher(request, t)
        limit = _int_param(q, "limit") or 0
        ns = t.namespace if t.rtype.namespaced and t.namespace else None
        start_after: tuple[str, str] | None = None
        list_rv = self.store.resource_version
        cont = q.get("continue")
        if cont:
            try:
                tok = orjson.loads(base64.b64decode(cont))
                start_after = (tok["start"][0], tok["start"][1])
                list_rv = int(tok["rv"])
            except (ValueError, KeyError, TypeError, binascii.Error) as exc:
                raise errors.bad_request(
                    "continue key is not valid: incorrect encoded start resourceVersion "
                    "(version meta.k8s.io/v1)"
                ) from exc
        name_hint = fs.requirement_for("metadata.name") if fs is not None else None
        if name_hint is not None and (ns is not None or not t.rtype.namespaced):
            e = self.store.get_entry(t.rtype.store_key, ns or "", name_hint)
            candidates = [((ns or "", name_hint), e)] if e else []
        else:
            candidates = self.store.sorted_entries(t.rtype.store_key, ns)
        items: list[Entry] = []
        next_key = None
        remaining = 0
        for key, e in candidates:
            if start_after is not None and key <= start_after:
                continue
            if match is not None and not match(e.obj):
                continue
            if limit and len(items) >= limit:
                if next_key is None:
                    next_key = items[-1].obj["metadata"]
                remaining += 1
                continue
            items.append(e)
        list_meta: dict[str, Any] = {"resourceVersion": str(list_rv)}
        if next_key is not None:
            list_meta["continue"] = base64.b64encode(
                orjson.dumps({"rv": list_rv, "start": [next_key.get("namespace", ""), next_key["name"]]})
            ).decode()
            list_meta["remainingItemCount"] = remaining
        accept = request.headers.get("Accept", "")
        if "as=Table" in accept:
            tv = _table_version(accept)
            objs = [self.registry.present(t, e.obj) for e in items]
            return _json(
                tables.table(t.rtype.store_key, objs, list_meta, q.get("includeObject", "Metadata"), tv)
            )
        if "as=PartialObjectMetadataList" in accept:
            return _json(
                {
                    "kind": "PartialObjectMetadataList",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": list_meta,
                    "items": [
                        {
                            "kind": "PartialObjectMetadata",
                            "apiVersion": "meta.k8s.io/v1",
                            "metadata": e.obj["metadata"],
                        }
                        for e in items
                    ],
                }
            )
        present = self._present_raw(t)
        head = (
            b'{"kind":"'
            + t.kind.encode()
            + b'List","apiVersion":"'
            + t.api_version.encode()
            + b'","metadata":'
            + orjson.dumps(list_meta)
            + b',"items":['
        )
        return _raw(head + b",".join(present(e) for e in items) + b"]}")

    def _check_watch_list_options(self, q: Any) -> None:
        """ListOptions validation of a watch, as each minor's server does it.

        ``resourceVersionMatch`` exists from 1.19; a watch may carry it only as part of a watch-list
        request (``sendInitialEvents``, 1.27+). Clients that try a watch-list first (client-go 1.3x,
        helm 4) fall back to list-then-watch on this error; a 1.18 server does not know the field.
        """
        match = q.get("resourceVersionMatch")
        if not match or self.profile.minor < 19:
            return
        if self.profile.minor < 27 or q.get("sendInitialEvents") is None:
            why = ("resourceVersionMatch is forbidden for watch" if self.profile.minor < 27 else
                   "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided")
            cause = errors.forbidden_field("resourceVersionMatch", why)
            raise errors.invalid("meta.k8s.io", "ListOptions", "", [cause])

    async def _watch(self, request: web.Request, ri: RequestInfo, t: Target) -> web.StreamResponse:
        q = request.query
        match, _fs = self._matcher(request, t, name=t.name)
        rv_text = q.get("resourceVersion", "")
        send_initial_param = q.get("sendInitialEvents")
        since: int | None = None
        if rv_text not in ("", "0"):
            try:
                since = int(rv_text)
            except ValueError as exc:
                raise errors.bad_request(f'invalid resource version: "{rv_text}"') from exc
        send_initial = since is None
        initial_end = False
        self._check_watch_list_options(q)
        if send_initial_param is not None and self.profile.minor >= 27:
            send_initial = _bool_param(q, "sendInitialEvents")
            initial_end = send_initial and _bool_param(q, "allowWatchBookmarks")
            if send_initial and since is not None:
                since = None
        timeout = _int_param(q, "timeoutSeconds")
        ns = t.namespace if t.rtype.namespaced and t.namespace else None
        return await serve_watch(
            request,
            self.store,
            t.rtype.store_key,
            ns,
            since=since,
            send_initial=send_initial,
            initial_end_bookmark=initial_end,
            match=match or (lambda _o: True),
            present=self._present_raw(t),
            bookmark_kind=(t.api_version, t.kind),
            allow_bookmarks=_bool_param(q, "allowWatchBookmarks"),
            timeout_s=float(timeout) if timeout is not None else None,
            bookmark_interval=self.config.bookmark_interval,
        )

    async def _delete_collection(
        self, request: web.Request, ri: RequestInfo, t: Target, user: UserInfo
    ) -> web.Response:
        match, _ = self._matcher(request, t)
        ns = t.namespace if t.rtype.namespaced and t.namespace else None
        opts = await self._delete_options(request)
        deleted = []
        for _key, e in self.store.sorted_entries(t.rtype.store_key, ns):
            if match is not None and not match(e.obj):
                continue
            meta = e.obj["metadata"]
            obj, _ = await self.registry.delete(
                Target(t.rtype, t.version, meta.get("namespace", ""), meta["name"]),
                opts,
                user,
                dry_run=_dry_run(request.query),
            )
            deleted.append(obj)
        return _json(
            {
                "kind": f"{t.kind}List",
                "apiVersion": t.api_version,
                "metadata": {"resourceVersion": str(self.store.resource_version)},
                "items": deleted,
            }
        )

    # -- non-resource endpoints ----------------------------------------------------------------
    def _nonresource(self, request: web.Request, ri: RequestInfo) -> web.Response:
        p = request.path.rstrip("/") or "/"
        accept = request.headers.get("Accept", "")
        if request.method not in ("GET", "HEAD"):
            raise errors.method_not_allowed()
        if p == "/version":
            return _json(discovery.version_info(self.profile))
        if p in ("/healthz", "/livez", "/readyz") or p.startswith(("/healthz/", "/livez/", "/readyz/")):
            return web.Response(text="ok", content_type="text/plain")
        if p in ("/api", "/apis"):
            agg = discovery.aggregated_discovery(self.profile, accept, core=(p == "/api"))
            if agg is not None:
                body, ctype = agg
                return web.Response(
                    body=orjson.dumps(body), headers={"Content-Type": ctype, "Vary": "Accept"}
                )
            if p == "/api":
                return _json(discovery.core_api_versions(self.profile, f"{self.config.host}:{self.port}"))
            return _json(discovery.api_group_list(self.profile))
        if p == "/api/v1":
            return _json(discovery.api_resource_list(self.profile, "", "v1"))
        parts = p.strip("/").split("/")
        # Measured on real 1.18, 1.27 and 1.35: a group no version serves falls through to the mux's
        # plain-text 404; an unserved version of a served group (or of the core API) is a Status with
        # an empty `details`.
        unknown_group = parts[0] == "apis" and discovery.api_group(self.profile, parts[1]) is None
        if len(parts) in (2, 3) and unknown_group:
            return web.Response(status=404, text="404 page not found\n", content_type="text/plain")
        if parts[0] == "apis" and len(parts) == 2:
            return _json(discovery.api_group(self.profile, parts[1]))
        if parts[0] == "apis" and len(parts) == 3:
            rl = discovery.api_resource_list(self.profile, parts[1], parts[2])
            if rl is None:
                raise paths.not_found_path()
            return _json(rl)
        if parts[0] == "api" and len(parts) == 2:
            raise paths.not_found_path()
        if p == "/openapi/v2":
            if "protobuf" in accept:
                return web.Response(
                    body=openapi.openapi_v2_protobuf(self.profile),
                    headers={"Content-Type": openapi.PROTOBUF_V2_CONTENT_TYPE},
                )
            return _raw(openapi.openapi_v2_json_bytes(self.profile))
        if p == "/openapi/v3":
            root = openapi.openapi_v3_root(self.profile)
            if root is not None:
                return _json(root)
        elif p.startswith("/openapi/v3/"):
            doc = openapi.openapi_v3_group_bytes(self.profile, p[len("/openapi/v3/") :])
            if doc is not None:
                return _raw(doc)
        raise APIError(404, "NotFound", "the server could not find the requested resource")

    # -- virtual resources (reviews, bindings) -----------------------------------------------
    async def _virtual(
        self, request: web.Request, ri: RequestInfo, t: Target, user: UserInfo
    ) -> web.Response:
        if ri.verb != "create":
            raise errors.method_not_allowed()
        body = await self._body(request)
        plural = t.rtype.plural
        out = copy.deepcopy(body)
        out.setdefault("metadata", {})
        out["metadata"].setdefault("creationTimestamp", None)
        if plural == "bindings":
            pod_t = Target(
                self.registry.target_for("", "pods").rtype,
                "v1",
                t.namespace,
                (body.get("metadata") or {}).get("name", ""),
            )
            await self._bind(pod_t, body, user)
            return _json(
                {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}, 201
            )
        if plural == "selfsubjectaccessreviews":
            out["status"] = rbac.access_review(
                self.store, body.get("spec") or {}, user, revision=self._rbac_revision()
            )
        elif plural in ("subjectaccessreviews", "localsubjectaccessreviews"):
            spec = dict(body.get("spec") or {})
            if plural == "localsubjectaccessreviews":
                ra = dict(spec.get("resourceAttributes") or {})
                ra["namespace"] = t.namespace
                spec["resourceAttributes"] = ra
            out["status"] = rbac.access_review(self.store, spec, None, revision=self._rbac_revision())
        elif plural == "selfsubjectrulesreviews":
            ns = (body.get("spec") or {}).get("namespace", "")
            out["status"] = rbac.rules_review(self.store, user, ns, revision=self._rbac_revision())
        elif plural == "tokenreviews":
            from .auth import token_review

            return _json(token_review(body, self.static_tokens, self.authority, self.store), 201)
        elif plural == "selfsubjectreviews":
            out["status"] = {
                "userInfo": {
                    "username": user.name,
                    "uid": user.uid,
                    "groups": list(user.groups),
                    **({"extra": user.extra} if user.extra else {}),
                }
            }
        else:
            raise errors.method_not_allowed()
        out["apiVersion"] = make_api_version(t.group, t.version)
        out["kind"] = t.kind
        return _json(out, 201)

    # -- subresources --------------------------------------------------------------------------
    async def _subresource(
        self, request: web.Request, ri: RequestInfo, t: Target, user: UserInfo
    ) -> web.StreamResponse:
        sub = t.subresource
        q = request.query
        rt = t.rtype
        if sub == "status":
            if ri.verb == "get":
                return self._get(request, ri, t)
            if ri.verb == "update":
                res = await self.registry.update(
                    t, await self._body(request), user, dry_run=_dry_run(q),
                    field_manager=_field_manager(request),
                )
                return self._object_response(request, t, res, 200)
            if ri.verb == "patch":
                res = await self.registry.patch(
                    t,
                    request.headers.get("Content-Type", ""),
                    await request.read(),
                    user,
                    dry_run=_dry_run(q),
                    field_manager=_field_manager(request),
                )
                return self._object_response(request, t, res, 200)
            raise errors.method_not_allowed()
        if rt.store_key == "pods" and sub == "binding" and ri.verb == "create":
            await self._bind(t, await self._body(request), user)
            return _json(
                {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}, 201
            )
        if rt.store_key == "pods" and sub == "eviction" and ri.verb == "create":
            return await self._evict(t, await self._body(request), user)
        if (rt.store_key == "pods" and sub in ("exec", "attach", "portforward", "proxy")) or (
            rt.plural in ("nodes", "services") and sub == "proxy"
        ):
            return await self._node_side(request, t)
        if rt.store_key == "pods" and sub == "ephemeralcontainers":
            return await self._ephemeral_containers(request, ri, t)
        if rt.store_key == "pods" and sub == "log" and ri.verb == "get":
            return await self._pod_log(request, t)
        if rt.store_key == "serviceaccounts" and sub == "token" and ri.verb == "create":
            return await self._token_request(t, await self._body(request))
        if sub == "scale":
            return await self._scale(request, ri, t, user)
        if rt.plural == "namespaces" and sub == "finalize" and ri.verb == "update":
            body = await self._body(request)
            cur = self.store.get("namespaces", "", t.name)
            if cur is None:
                raise errors.not_found("", "namespaces", t.name)
            new = copy.deepcopy(cur)
            new["spec"] = {
                **(cur.get("spec") or {}),
                "finalizers": (body.get("spec") or {}).get("finalizers", []),
            }
            entry = self.store.put("namespaces", new, event="MODIFIED")
            return self._entry_response(t, entry)
        raise errors.method_not_allowed()

    async def _bind(self, t: Target, body: dict[str, Any], user: UserInfo) -> None:
        target = body.get("target") or {}
        node = target.get("name")
        if not node:
            raise errors.invalid("", "Binding", t.name, [errors.required("target.name")])
        cur = self.store.get_entry("pods", t.namespace, t.name)
        if cur is None:
            raise errors.not_found("", "pods", t.name)
        pod = cur.obj
        if pod["metadata"].get("deletionTimestamp"):
            raise errors.conflict(
                "", "pods/binding", t.name, f"pod {t.name} is being deleted, cannot be assigned to a host"
            )
        if (pod.get("spec") or {}).get("nodeName"):
            raise errors.conflict(
                "",
                "pods/binding",
                t.name,
                f'pod {t.name} is already assigned to node "{pod["spec"]["nodeName"]}"',
            )
        uid = (body.get("metadata") or {}).get("uid")
        if uid and uid != pod["metadata"].get("uid"):
            raise errors.conflict(
                "",
                "pods/binding",
                t.name,
                f"Precondition failed: UID in precondition: {uid}, UID in object meta: "
                f"{pod['metadata'].get('uid')}",
            )
        new = copy.deepcopy(pod)
        new["spec"]["nodeName"] = node
        ann = (body.get("metadata") or {}).get("annotations")
        if ann:
            new["metadata"].setdefault("annotations", {}).update(ann)
        conds = [
            c
            for c in (new.setdefault("status", {}).get("conditions") or [])
            if c.get("type") != "PodScheduled"
        ]
        conds.append(
            {
                "type": "PodScheduled",
                "status": "True",
                "lastProbeTime": None,
                "lastTransitionTime": now_rfc3339(),
            }
        )
        new["status"]["conditions"] = conds
        entry = self.store.put("pods", new, event="MODIFIED")
        await self.registry._notify(t.rtype, "MODIFIED", entry.obj, pod)

    async def _evict(self, t: Target, body: dict[str, Any], user: UserInfo) -> web.Response:
        pod = self.store.get("pods", t.namespace, t.name)
        if pod is None:
            raise errors.not_found("", "pods", t.name)
        phase = (pod.get("status") or {}).get("phase")
        if phase not in ("Succeeded", "Failed") and not pod["metadata"].get("deletionTimestamp"):
            for pdb in self.store.list("poddisruptionbudgets.policy", t.namespace):
                sel = selectors.label_selector_from_object((pdb.get("spec") or {}).get("selector"))
                status = pdb.get("status") or {}
                allowed = int(status.get("disruptionsAllowed", 0))
                if sel.matches(pod["metadata"].get("labels")) and allowed <= 0:
                    why = (
                        f"The disruption budget {pdb['metadata']['name']} needs "
                        f"{status.get('desiredHealthy', 0)} healthy pods and has "
                        f"{status.get('currentHealthy', 0)} currently"
                    )
                    raise APIError(
                        429,
                        "TooManyRequests",
                        "Cannot evict pod as it would violate the pod's disruption budget.",
                        details={"causes": [{"reason": "DisruptionBudget", "message": why}]},
                    )
        opts = (body.get("deleteOptions") or {}) if isinstance(body, dict) else {}
        await self.registry.delete(Target(t.rtype, t.version, t.namespace, t.name), opts, user)
        return _json(
            {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}, 201
        )

    async def _token_request(self, t: Target, body: dict[str, Any]) -> web.Response:
        sa = self.store.get("serviceaccounts", t.namespace, t.name)
        if sa is None:
            raise errors.not_found("", "serviceaccounts", t.name)
        spec = body.get("spec") or {}
        exp = int(spec.get("expirationSeconds") or 3600)
        if exp < 600:
            raise errors.invalid(
                "authentication.k8s.io",
                "TokenRequest",
                t.name,
                [
                    errors.invalid_value(
                        "spec.expirationSeconds", exp, "may not specify a duration less than 10 minutes"
                    )
                ],
            )
        audiences = spec.get("audiences") or [self.authority.issuer]
        bound = spec.get("boundObjectRef")
        bound_pod = None
        if bound and bound.get("kind") == "Pod":
            bound_pod = self.store.get("pods", t.namespace, bound.get("name", ""))
            if bound_pod is None:
                raise errors.not_found("", "pods", bound.get("name", ""))
        token, exp_at = self.authority.issue_service_account_token(
            t.namespace,
            t.name,
            sa["metadata"]["uid"],
            audiences=audiences,
            expiration_seconds=exp,
            bound_pod=bound_pod,
        )
        import datetime as dt

        out = {
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": t.name, "namespace": t.namespace, "creationTimestamp": None},
            "spec": {"audiences": audiences, "expirationSeconds": exp, "boundObjectRef": bound},
            "status": {
                "token": token,
                "expirationTimestamp": dt.datetime.fromtimestamp(exp_at, dt.UTC).strftime(
                    "%Y-%m-%dT%H:%M:%SZ"
                ),
            },
        }
        return _json(out, 201)

    async def _scale(self, request: web.Request, ri: RequestInfo, t: Target, user: UserInfo) -> web.Response:
        e = self.store.get_entry(t.rtype.store_key, t.namespace, t.name)
        if e is None:
            raise errors.not_found(t.group, t.rtype.plural, t.name)
        scale_av = "autoscaling/v1"

        def scale_of(obj: dict[str, Any]) -> dict[str, Any]:
            spec, status = obj.get("spec") or {}, obj.get("status") or {}
            sel = (spec.get("selector") or {}).get("matchLabels") or {}
            return {
                "kind": "Scale",
                "apiVersion": scale_av,
                "metadata": {
                    k: obj["metadata"][k]
                    for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                    if k in obj["metadata"]
                },
                "spec": {"replicas": spec.get("replicas", 0)},
                "status": {
                    "replicas": status.get("replicas", 0),
                    "selector": ",".join(f"{k}={v}" for k, v in sel.items()),
                },
            }

        if ri.verb == "get":
            return _json(scale_of(e.obj))
        if ri.verb == "update":
            body = await self._body(request)
        elif ri.verb == "patch":
            from . import patch as patchmod

            raw = await request.read()
            ctype = request.headers.get("Content-Type", "").split(";")[0]
            cur = scale_of(e.obj)
            if ctype == "application/json-patch+json":
                body = patchmod.apply_json_patch(cur, raw)
            else:
                body = patchmod.apply_merge_patch(cur, raw)
        else:
            raise errors.method_not_allowed()
        # ScaleSpec.replicas is a plain int32 with omitempty: absent means 0 (kubectl scale --replicas=0
        # over protobuf leaves it out)
        replicas = (body.get("spec") or {}).get("replicas", 0)
        if not isinstance(replicas, int) or replicas < 0:
            raise errors.invalid(
                "autoscaling",
                "Scale",
                t.name,
                [errors.invalid_value("spec.replicas", replicas, "must be greater than or equal to 0")],
            )
        new = copy.deepcopy(e.obj)
        new.setdefault("spec", {})["replicas"] = replicas
        main = Target(t.rtype, t.version, t.namespace, t.name)
        res = await self.registry.update(
            main, new, user, decoded=True, require_rv=(body.get("metadata") or {}).get("resourceVersion"),
            field_manager=_field_manager(request), managed_subresource="scale",
        )
        obj = res.obj if isinstance(res, Entry) else res
        return _json(scale_of(obj))

    async def _ephemeral_containers(self, request: web.Request, ri: RequestInfo, t: Target) -> web.Response:
        """pods/ephemeralcontainers: get, or add ephemeral containers (testbed/node/ephemeral.py)."""
        from testbed.node import ephemeral

        from . import patch as patchmod

        cur = self.store.get("pods", t.namespace, t.name)
        if cur is None:
            raise errors.not_found("", "pods", t.name)
        if ri.verb == "get":
            return _json(cur)
        if ri.verb not in ("update", "patch"):
            raise errors.method_not_allowed()
        fns = {
            "application/json-patch+json": patchmod.apply_json_patch,
            "application/merge-patch+json": patchmod.apply_merge_patch,
            "application/strategic-merge-patch+json":
                lambda obj, raw: patchmod.apply_strategic_merge_patch(obj, raw, "", "Pod"),
        }
        try:
            wanted = ephemeral.ephemeral_from_body(
                request.method, request.headers.get("Content-Type", ""), await request.read(), cur, fns
            )
            new = ephemeral.apply_update(cur, wanted)
        except ephemeral.Invalid as e:
            raise errors.APIError(422, "Invalid", f'Pod "{t.name}" is invalid: {e}') from e
        except ValueError as e:
            raise errors.bad_request(str(e)) from e
        return self._entry_response(t, self.store.put("pods", new, event="MODIFIED"))

    async def _node_side(self, request: web.Request, t: Target) -> web.StreamResponse:
        """pods/exec|attach|portforward|proxy, services/proxy, nodes/proxy (testbed/node/kubeletproxy.py)."""
        from testbed.node import kubeletproxy

        if getattr(self, "_kubelet_tls", None) is None:
            self._kubelet_tls = pki.kubelet_client_context(self.ca, self._cert_dir())
        marker = f"/{t.subresource}"
        rest = request.path.split(marker, 1)[1] if marker in request.path else ""
        try:
            if t.rtype.plural == "nodes":
                node = self.store.get("nodes", "", t.name.split(":")[0])
                if node is None:
                    raise errors.not_found("", "nodes", t.name)
                return await kubeletproxy.node_proxy(request, node, rest, kubelet_endpoint, self._kubelet_tls)
            if t.rtype.plural == "services":
                svc_name = t.name.split(":")[-2 if t.name.count(":") == 2 else 0]
                svc = self.store.get("services", t.namespace, svc_name)
                if svc is None:
                    raise errors.not_found("", "services", t.name)
                return await kubeletproxy.service_proxy(
                    request, svc, t.name, rest, self.store.get, kubelet_endpoint, self._kubelet_tls
                )
            pod = self.store.get("pods", t.namespace, t.name.split(":")[-2 if t.name.count(":") == 2 else 0])
            if pod is None:
                raise errors.not_found("", "pods", t.name)
            node_name = (pod.get("spec") or {}).get("nodeName")
            node = self.store.get("nodes", "", node_name) if node_name else None
            return await kubeletproxy.pod_subresource(
                request, pod, node, t.subresource, rest, kubelet_endpoint, self._kubelet_tls, t.name
            )
        except kubeletproxy.ProxyError as e:
            reason = {400: "BadRequest", 404: "NotFound", 503: "ServiceUnavailable"}.get(e.code, "")
            raise errors.APIError(e.code, reason, str(e)) from e

    async def _pod_log(self, request: web.Request, t: Target) -> web.StreamResponse:
        pod = self.store.get("pods", t.namespace, t.name)
        if pod is None:
            raise errors.not_found("", "pods", t.name)
        q = request.query
        spec = pod.get("spec") or {}
        names = [c["name"] for c in (spec.get("initContainers") or []) + (spec.get("containers") or [])]
        container = q.get("container", "")
        if not container:
            app = [c["name"] for c in spec.get("containers") or []]
            if len(app) != 1:
                raise errors.bad_request(
                    f"a container name must be specified for pod {t.name}, choose one of: [{' '.join(app)}]"
                )
            container = app[0]
        elif container not in names:
            raise errors.bad_request(f"container {container} is not valid for pod {t.name}")
        node_name = spec.get("nodeName")
        if not node_name:
            raise errors.bad_request(
                f'container "{container}" in pod "{t.name}" is waiting to start: ContainerCreating'
            )
        for key in ("tailLines", "sinceSeconds", "limitBytes"):
            _int_param(q, key)
        follow = _bool_param(q, "follow")
        node = self.store.get("nodes", "", node_name)
        if node is None:
            raise errors.not_found("", "nodes", node_name)
        addr, port = kubelet_endpoint(node)
        params = {
            k: v
            for k, v in q.items()
            if k
            in ("follow", "tailLines", "timestamps", "sinceSeconds", "sinceTime", "previous", "limitBytes")
        }
        url = f"https://{addr}:{port}/containerLogs/{t.namespace}/{t.name}/{container}"
        if self._kubelet is None:
            # Like kube-apiserver without --kubelet-certificate-authority: kubelet certs are not verified;
            # it presents its kubelet-client certificate, which the kubelets authorise (issue 15).
            ctx = pki.kubelet_client_context(self.ca, self._cert_dir())
            self._kubelet = ClientSession(
                connector=TCPConnector(ssl=ctx), timeout=ClientTimeout(total=None, sock_connect=5)
            )
        try:
            upstream = await self._kubelet.get(url, params=params)
        except OSError as e:
            raise errors.internal(f'Get "{url}": {e}') from e
        async with upstream:
            if upstream.status != 200:
                text = (await upstream.text()).strip()
                raise errors.bad_request(text or f"kubelet answered {upstream.status}")
            resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
            if follow:
                resp.enable_chunked_encoding()
            await resp.prepare(request)
            with contextlib.suppress(ConnectionResetError):
                async for chunk in upstream.content.iter_any():
                    await resp.write(chunk)
                await resp.write_eof()
            return resp


KUBELET_NETWORKS_ENV = "TESTBED_KUBELET_NETWORKS"  # the operator's, never a tenant's: a lab's subnet


def kubelet_endpoint(node: dict[str, Any]) -> tuple[str, int]:
    """Where a node's kubelet API listens. Only loopback addresses are ever contacted, and the
    networks the operator named in ``$TESTBED_KUBELET_NETWORKS`` (a multi-host lab's own subnet,
    set by its control_plane role): a node's status is writable by nodes, so it must not steer the
    apiserver anywhere else."""
    status = node.get("status") or {}
    addrs = {a.get("type"): a.get("address") for a in status.get("addresses") or []}
    addr = addrs.get("InternalIP") or addrs.get("Hostname") or ""
    port = ((status.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}).get("Port") or 10250
    import ipaddress
    import os

    try:
        ip = ipaddress.ip_address(addr)
        nets = [ipaddress.ip_network(n.strip()) for n in os.environ.get(KUBELET_NETWORKS_ENV, "").split(",")
                if n.strip()]
        ok = ip.is_loopback or any(ip in n for n in nets)
    except ValueError:
        ok = False
    if not ok:
        raise errors.bad_request(
            f"node {node['metadata']['name']} has kubelet address {addr!r}; the testbed only contacts "
            "kubelets on loopback addresses"
            + (f" and in ${KUBELET_NETWORKS_ENV}" if os.environ.get(KUBELET_NETWORKS_ENV) else "")
        )
    return addr, int(port)


def decode_body(raw: bytes, ctype: str, minor: int | None = None) -> dict[str, Any]:
    if not raw.strip():
        raise errors.bad_request("the body of the request was empty")
    ctype = ctype.strip().lower()
    if ctype == protobuf.MEDIA_TYPE:
        return protobuf.decode(raw, minor)
    try:
        if ctype in ("application/yaml", "application/x-yaml", "text/yaml"):
            obj = yaml.safe_load(raw)
        else:
            obj = orjson.loads(raw)
    except (orjson.JSONDecodeError, yaml.YAMLError) as e:
        msg = str(e).splitlines()[0]
        raise errors.bad_request(f"couldn't get version/kind; json parse error: {msg}") from e
    if not isinstance(obj, dict):
        raise errors.bad_request("couldn't get version/kind; json parse error: the body is not a JSON object")
    return obj


__all__ = ["ADMIN_USER", "APIServer", "ServerConfig"]
