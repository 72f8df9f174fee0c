"""Admission webhooks, called the way kube-apiserver calls them.

Configurations are read from the store on each request (re-parsed only when their
resourceVersion changes), sorted by name, and each webhook is matched by namespaceSelector,
objectSelector and rules, then called over HTTPS with an ``AdmissionReview`` in the first version
it accepts. Mutating webhooks run in order and their JSONPatches are applied one after another
(with one reinvocation round for ``reinvocationPolicy: IfNeeded``); validating webhooks run
concurrently. Failures, denials and malformed answers produce the real apiserver's status codes
and messages.

Simplifications: ``matchConditions`` (CEL) are not evaluated (a webhook with them is called as if
they held); with ``matchPolicy: Equivalent`` a request matches a rule on group+resource whatever the
version, and the object is sent in the request's own version (no conversion); client
certificates toward webhooks (the admission kubeconfig) are not supported.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import json
import logging
import posixpath
import ssl
import uuid
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import jsonpatch
from cryptography import x509
from yarl import URL

from .auth import UserInfo
from .errors import APIError, not_found
from .reader import Reader, SelectorError, selector_is_empty, selector_matches

# The admission warnings of the API request being served (the server answers them as ``Warning: 299``
# headers, which kubectl prints); None outside a request.
REQUEST_WARNINGS: ContextVar[list[str] | None] = ContextVar("REQUEST_WARNINGS", default=None)

log = logging.getLogger(__name__)

ADMISSION_GROUP = "admissionregistration.k8s.io"
MUTATING_CONFIGS = f"mutatingwebhookconfigurations.{ADMISSION_GROUP}"
VALIDATING_CONFIGS = f"validatingwebhookconfigurations.{ADMISSION_GROUP}"
# Admission never consults webhooks about its own configuration (else one bad webhook locks out its fix).
EXEMPT_RESOURCES = frozenset((ADMISSION_GROUP, r) for r in (
    "mutatingwebhookconfigurations", "validatingwebhookconfigurations",
    "validatingadmissionpolicies", "validatingadmissionpolicybindings",
    "mutatingadmissionpolicies", "mutatingadmissionpolicybindings",
))
ResolveService = Callable[[str, str, int], tuple[str, int]]


@dataclass
class AdmissionRequestInfo:
    operation: str  # CREATE | UPDATE | DELETE | CONNECT
    group: str
    version: str
    kind: str
    resource: str  # plural
    subresource: str
    name: str
    namespace: str
    user: UserInfo
    obj: dict[str, Any] | None
    old: dict[str, Any] | None
    dry_run: bool = False
    options: dict[str, Any] | None = None
    namespace_labels: dict[str, str] | None = None
    # Filled by the dispatcher: response.warnings (for Warning headers) and audit annotations.
    warnings: list[str] = field(default_factory=list)
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Webhook:
    """One entry of a webhook configuration, with the defaults of the version it was written in."""

    uid: str  # "<configuration>/<index>", for reinvocation bookkeeping
    configuration: str
    name: str
    client: dict[str, Any]
    rules: tuple[dict[str, Any], ...]
    fail_open: bool  # failurePolicy Ignore
    equivalent: bool  # matchPolicy Equivalent
    namespace_selector: dict[str, Any] | None
    object_selector: dict[str, Any] | None
    side_effects: str | None
    timeout: int
    review_versions: tuple[str, ...]
    reinvoke: bool


def parse_configuration(config: dict[str, Any]) -> list[Webhook]:
    v1beta1 = config.get("apiVersion", "").endswith("/v1beta1")
    name = (config.get("metadata") or {}).get("name", "")
    hooks = []
    for i, h in enumerate(config.get("webhooks") or []):
        failure = h.get("failurePolicy") or ("Ignore" if v1beta1 else "Fail")
        match = h.get("matchPolicy") or ("Exact" if v1beta1 else "Equivalent")
        side = h.get("sideEffects") or ("Unknown" if v1beta1 else None)
        versions = h.get("admissionReviewVersions") or (["v1beta1"] if v1beta1 else [])
        timeout = h.get("timeoutSeconds")
        hooks.append(Webhook(
            uid=f"{name}/{i}", configuration=name, name=h.get("name", ""),
            client=h.get("clientConfig") or {}, rules=tuple(h.get("rules") or ()),
            fail_open=failure == "Ignore", equivalent=match == "Equivalent",
            namespace_selector=h.get("namespaceSelector"), object_selector=h.get("objectSelector"),
            side_effects=side, timeout=int(timeout) if timeout else (30 if v1beta1 else 10),
            review_versions=tuple(versions), reinvoke=h.get("reinvocationPolicy") == "IfNeeded",
        ))
    return hooks


# --- matching ------------------------------------------------------------------------------

def _exact_or_wildcard(items: Sequence[str] | None, requested: str) -> bool:
    return any(i == "*" or i == requested for i in items or ())


def rule_matches(rule: dict[str, Any], req: AdmissionRequestInfo, *, any_version: bool = False) -> bool:
    """A RuleWithOperations against a request, as the apiserver's rules.Matcher does."""
    is_namespace = req.group == "" and req.resource == "namespaces"
    scope = rule.get("scope") or "*"
    if scope == "Namespaced" and (is_namespace or not req.namespace):
        return False
    if scope == "Cluster" and not (is_namespace or not req.namespace):
        return False
    if scope not in ("*", "Namespaced", "Cluster"):
        return False
    if not _exact_or_wildcard(rule.get("operations"), req.operation):
        return False
    if not _exact_or_wildcard(rule.get("apiGroups"), req.group):
        return False
    if not any_version and not _exact_or_wildcard(rule.get("apiVersions"), req.version):
        return False
    for entry in rule.get("resources") or ():
        res, _, sub = entry.partition("/")
        if (res == "*" or res == req.resource) and (sub == "*" or sub == req.subresource):
            return True
    return False


def _internal(message: str) -> APIError:
    # apierrors.NewInternalError: the cause repeats the message without the prefix.
    return APIError(500, "InternalError", f"Internal error occurred: {message}",
                    details={"causes": [{"message": message}]})


class _CallError(Exception):
    """ErrCallingWebhook: the webhook could not be called or answered nonsense (failurePolicy applies)."""


def denial(webhook_name: str, result: dict[str, Any] | None) -> APIError:
    """webhookerrors.ToStatusErr: the error for ``allowed: false``."""
    result = dict(result or {})
    code = result.get("code") or 0
    if not isinstance(code, int) or code < 400:
        code = 400
    denied_by = f'admission webhook "{webhook_name}" denied the request'
    if result.get("message"):
        message = f"{denied_by}: {result['message']}"
    elif result.get("reason"):
        message = f"{denied_by}: {result['reason']}"
    else:
        message = f"{denied_by} without explanation"
    return APIError(code, result.get("reason") or "", message, details=result.get("details"))


# --- transport helpers -----------------------------------------------------------------------

def _clean_path(path: str) -> str:
    # client-go joins the path onto "/" with path.Join, which also drops a trailing slash.
    cleaned = posixpath.normpath("/" + (path or ""))
    return "/" + cleaned.lstrip("/")


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def trust_context(ca_bundle: str, check_hostname: bool = True) -> ssl.SSLContext:
    """Client TLS settings for a webhook: only the caBundle's roots when one is given, else the system's."""
    if ca_bundle:
        try:
            ctx = ssl.create_default_context(cadata=base64.b64decode(ca_bundle).decode())
        except (ValueError, binascii.Error, ssl.SSLError):
            # An unparsable bundle trusts nothing.
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    else:
        ctx = ssl.create_default_context()
    ctx.check_hostname = check_hostname
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


async def _verify_failure(ip: str, port: int, server_name: str, ca_bundle: str) -> str:
    """Go's text for a failed certificate check. OpenSSL may report a name mismatch before an unknown
    issuer; Go checks the chain first, so probe the chain alone, then the names."""
    unknown = "x509: certificate signed by unknown authority"
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(
            ip, port, ssl=trust_context(ca_bundle, check_hostname=False), server_hostname=server_name), 5)
    except ssl.SSLCertVerificationError as e:
        return "x509: certificate has expired or is not yet valid" if e.verify_code in (9, 10) else unknown
    except (OSError, TimeoutError):
        return unknown
    try:
        sslobj = writer.get_extra_info("ssl_object")
        der = sslobj.getpeercert(binary_form=True) if sslobj else None
    finally:
        writer.close()
    if not der:
        return unknown
    cert = x509.load_der_x509_certificate(der)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return "x509: certificate relies on legacy Common Name field, use SANs instead"
    try:
        ipaddress.ip_address(server_name)
        ips = [str(a) for a in san.get_values_for_type(x509.IPAddress)]
        if not ips:
            return (f"x509: cannot validate certificate for {server_name} because it doesn't contain "
                    "any IP SANs")
        valid = ", ".join(ips)
    except ValueError:
        valid = ", ".join(san.get_values_for_type(x509.DNSName))
    if not valid:
        return f"x509: certificate is not valid for any names, but wanted to match {server_name}"
    return f"x509: certificate is valid for {valid}, not {server_name}"


_HTTP_MESSAGES = {
    400: "the server rejected our request for an unknown reason",
    401: "the server has asked for the client to provide credentials",
    404: "the server could not find the requested resource",
    405: "the server does not allow this method on the requested resource",
    409: "the server reported a conflict",
    422: "the server rejected our request due to an error in our request",
    429: "the server has received too many requests and has asked us to try again later",
    503: "the server is currently unable to handle the request",
    504: "the server was unable to return a response in the time allotted, but may still be processing "
         "the request",
}


def _http_error(status: int, content_type: str, body: bytes) -> str:
    """What client-go reports for a non-2xx answer (NewGenericServerResponse)."""
    try:
        obj = json.loads(body)
        if isinstance(obj, dict) and obj.get("kind") == "Status" and obj.get("status") != "Success":
            return str(obj.get("message") or "")
    except ValueError:
        pass
    server_message = "unknown"
    if content_type.startswith("text/plain") and body:
        server_message = body.decode(errors="replace").strip()
    if status in (403, 415):
        return server_message
    if status == 406:
        return (server_message if server_message not in ("", "unknown")
                else "the server was unable to respond with a content type that the client supports")
    if status in _HTTP_MESSAGES:
        return _HTTP_MESSAGES[status]
    if status >= 500:
        return f'an error on the server ("{server_message}") has prevented the request from succeeding'
    return f"the server responded with the status code {status} but did not return more information"


def _patch_error(e: Exception) -> str:
    # Close to evanphx/json-patch's wording, which is what kube-apiserver reports.
    text = str(e)
    if isinstance(e, jsonpatch.JsonPatchTestFailed):
        return f"testing value failed: {text}"
    return text


# --- dispatcher ----------------------------------------------------------------------------

class WebhookDispatcher:
    def __init__(self, reader: Reader, review_versions: tuple[str, ...] = ("v1", "v1beta1"),
                 resolve_service: ResolveService | None = None) -> None:
        self.reader = reader
        self.review_versions = tuple(review_versions)
        self.resolve_service: ResolveService = resolve_service or self.resolve_via_endpoints
        self._session: aiohttp.ClientSession | None = None
        self._ssl: dict[str, ssl.SSLContext] = {}
        self._parsed: dict[tuple[str, str], tuple[str, list[Webhook]]] = {}

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256))
        return self._session

    # configuration --------------------------------------------------------------------

    def webhooks(self, store_key: str) -> list[Webhook]:
        configs = sorted(self.reader.list(store_key), key=lambda c: (c.get("metadata") or {}).get("name", ""))
        out: list[Webhook] = []
        for c in configs:
            meta = c.get("metadata") or {}
            key = (store_key, meta.get("name", ""))
            rv = str(meta.get("resourceVersion", ""))
            hit = self._parsed.get(key)
            if hit is None or not rv or hit[0] != rv:
                hit = (rv, parse_configuration(c))
                self._parsed[key] = hit
            out.extend(hit[1])
        return out

    def resolve_via_endpoints(self, namespace: str, name: str, port: int) -> tuple[str, int]:
        """A ready address of the Service, as the apiserver's endpoint resolver picks it."""
        svc = self.reader.get("services", namespace, name)
        if svc is None:
            raise LookupError(f'service "{name}" not found')
        spec = svc.get("spec") or {}
        kind = spec.get("type") or "ClusterIP"
        if kind not in ("ClusterIP", "NodePort", "LoadBalancer"):
            raise LookupError(f'unsupported service type "{kind}"')
        svc_port = next((p for p in spec.get("ports") or () if p.get("port") == port), None)
        if svc_port is None:
            raise LookupError(f'no service port {port} found for service "{name}"')
        eps = self.reader.get("endpoints", namespace, name)
        if eps is None:
            raise LookupError(f'endpoints "{name}" not found')
        for subset in eps.get("subsets") or ():
            addresses = subset.get("addresses") or ()
            if not addresses:
                continue
            for p in subset.get("ports") or ():
                if (p.get("name") or "") == (svc_port.get("name") or ""):
                    return addresses[0]["ip"], int(p["port"])
        raise LookupError(f'no endpoints available for service "{name}"')

    def _ssl_context(self, ca_bundle: str) -> ssl.SSLContext:
        ctx = self._ssl.get(ca_bundle)
        if ctx is None:
            ctx = self._ssl[ca_bundle] = trust_context(ca_bundle)
        return ctx

    # matching -------------------------------------------------------------------------

    def _namespace_labels(self, req: AdmissionRequestInfo) -> dict[str, str]:
        is_namespace = req.group == "" and req.resource == "namespaces"
        if is_namespace and not req.subresource and req.operation in ("CREATE", "UPDATE") and req.obj:
            return (req.obj.get("metadata") or {}).get("labels") or {}
        if req.namespace_labels is not None:
            return req.namespace_labels
        ns_name = req.namespace or (req.name if is_namespace else "")
        ns = self.reader.get("namespaces", "", ns_name)
        if ns is None:
            raise not_found("", "namespaces", ns_name)
        return (ns.get("metadata") or {}).get("labels") or {}

    def should_call(self, hook: Webhook, req: AdmissionRequestInfo, obj: dict[str, Any] | None) -> bool:
        ns_error: APIError | None = None
        is_namespace = req.group == "" and req.resource == "namespaces"
        if not selector_is_empty(hook.namespace_selector) and (req.namespace or is_namespace):
            try:
                if not selector_matches(hook.namespace_selector, self._namespace_labels(req)):
                    return False
            except APIError as e:
                ns_error = e
            except SelectorError as e:
                ns_error = _internal(str(e))
        obj_error: APIError | None = None
        if not selector_is_empty(hook.object_selector):
            try:
                labels = [((o.get("metadata") or {}).get("labels") or {}) for o in (obj, req.old) if o]
                if not any(selector_matches(hook.object_selector, lb) for lb in labels):
                    return False
            except SelectorError as e:
                obj_error = _internal(str(e))
        matched = any(rule_matches(r, req) for r in hook.rules)
        if not matched and hook.equivalent:
            matched = any(rule_matches(r, req, any_version=True) for r in hook.rules)
        if not matched:
            return False
        if ns_error is not None:
            raise ns_error
        if obj_error is not None:
            raise obj_error
        return True

    # calling --------------------------------------------------------------------------

    def _review(self, version: str, uid: str, req: AdmissionRequestInfo,
                obj: dict[str, Any] | None) -> dict[str, Any]:
        kind = {"group": req.group, "version": req.version, "kind": req.kind}
        resource = {"group": req.group, "version": req.version, "resource": req.resource}
        request: dict[str, Any] = {"uid": uid, "kind": kind, "resource": resource}
        if req.subresource:
            request["subResource"] = req.subresource
        request["requestKind"] = dict(kind)
        request["requestResource"] = dict(resource)
        if req.subresource:
            request["requestSubResource"] = req.subresource
        if req.name:
            request["name"] = req.name
        if req.namespace:
            request["namespace"] = req.namespace
        request.update(operation=req.operation, userInfo=req.user.to_dict(), object=obj,
                       oldObject=req.old, dryRun=req.dry_run, options=req.options)
        return {"kind": "AdmissionReview", "apiVersion": f"admission.k8s.io/{version}", "request": request}

    async def _post(self, hook: Webhook, body: bytes) -> tuple[int, str, bytes]:
        client = hook.client
        timeout_q = f"?timeout={hook.timeout}s"
        ctx = self._ssl_context(client.get("caBundle") or "")
        server_name: str | None = None
        headers = {"Content-Type": "application/json", "Accept": "application/json, */*",
                   "User-Agent": "kube-apiserver-admission"}
        svc = client.get("service")
        if svc:
            port = int(svc.get("port") or 443)
            server_name = f"{svc.get('name', '')}.{svc.get('namespace', '')}.svc"
            path = _clean_path(svc.get("path") or "")
            shown = f"https://{server_name}:{port}{path}{timeout_q}"
            try:
                ip, ip_port = self.resolve_service(svc.get("namespace", ""), svc.get("name", ""), port)
            except Exception as e:
                raise _CallError(f'failed to call webhook: Post "{shown}": {_text(e)}') from e
            target = f"https://{_host_port(ip, ip_port)}{path}{timeout_q}"
            headers["Host"] = f"{server_name}:{port}"
        else:
            url = URL(client.get("url") or "")
            host = url.raw_host or ""
            authority = _host_port(host, url.port) if url.explicit_port else host
            shown = f"{url.scheme}://{authority}{_clean_path(url.raw_path)}{timeout_q}"
            target = shown
            ip, ip_port = host, url.port or 443
        try:
            deadline = asyncio.get_running_loop().time() + hook.timeout
            for attempt in (1, 2):
                left = max(0.001, deadline - asyncio.get_running_loop().time())
                try:
                    async with self._http().post(
                        URL(target, encoded=True), data=body, headers=headers, ssl=ctx,
                        server_hostname=server_name, timeout=aiohttp.ClientTimeout(total=left),
                        allow_redirects=False,
                    ) as resp:
                        return resp.status, resp.headers.get("Content-Type", ""), await resp.read()
                except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as e:
                    # A kept-alive connection the webhook server closed just as it was reused: Go's
                    # transport (kube-apiserver's client) sends the request again on a new one.
                    if attempt == 2 or isinstance(e, aiohttp.ClientConnectorError):
                        raise
            raise AssertionError("unreachable")
        except (TimeoutError, aiohttp.ServerTimeoutError) as e:
            why = "context deadline exceeded"
            raise _CallError(f'failed to call webhook: Post "{shown}": {why}') from e
        except aiohttp.ClientConnectorCertificateError as e:
            why = await _verify_failure(ip, ip_port, server_name or ip, client.get("caBundle") or "")
            why = f"tls: failed to verify certificate: {why}"
            raise _CallError(f'failed to call webhook: Post "{shown}": {why}') from e
        except aiohttp.ClientConnectorError as e:
            os_err = e.os_error
            if isinstance(os_err, ConnectionRefusedError):
                why = f"dial tcp {_host_port(ip, ip_port)}: connect: connection refused"
            else:
                why = f"dial tcp {_host_port(ip, ip_port)}: {(os_err.strerror or str(os_err)).lower()}"
            raise _CallError(f'failed to call webhook: Post "{shown}": {why}') from e
        except aiohttp.ClientError as e:
            raise _CallError(f'failed to call webhook: Post "{shown}": {_text(e)}') from e

    async def _call(self, hook: Webhook, req: AdmissionRequestInfo, obj: dict[str, Any] | None,
                    mutating: bool) -> dict[str, Any] | None:
        """Call one webhook. Returns the patched object (mutating, when it sent a patch) or None."""
        if req.dry_run:
            if hook.side_effects is None:
                raise _CallError("Webhook SideEffects is nil")
            if hook.side_effects not in ("None", "NoneOnDryRun"):
                raise APIError(400, "BadRequest", f'admission webhook "{hook.name}" does not support dry run')
        version = next((v for v in hook.review_versions if v in self.review_versions), None)
        if version is None:
            known = ", ".join(self.review_versions)
            raise _CallError("could not create admission objects: webhook does not accept known "
                             f"AdmissionReview versions ({known})")
        uid = str(uuid.uuid4())
        body = json.dumps(self._review(version, uid, req, obj), separators=(",", ":")).encode()
        status, ctype, raw = await self._post(hook, body)
        if not 200 <= status <= 206:
            raise _CallError(f"failed to call webhook: {_http_error(status, ctype, raw)}")
        try:
            review = json.loads(raw)
        except ValueError as e:
            why = f"couldn't get version/kind; json parse error: {e}"
            raise _CallError(f"failed to call webhook: {why}") from e
        if not isinstance(review, dict):
            raise _CallError("failed to call webhook: couldn't get version/kind; json parse error: "
                             "cannot unmarshal into Go value of type struct")
        response = review.get("response")
        invalid = "received invalid webhook response: "
        if not isinstance(response, dict):
            raise _CallError(invalid + "webhook response was absent")
        patch_b64 = response.get("patch") or ""
        patch_type = response.get("patchType")
        if version == "v1":
            if response.get("uid", "") != uid:
                raise _CallError(invalid + f"expected response.uid={json.dumps(uid)}, "
                                 f"got {json.dumps(response.get('uid', ''))}")
            group, _, ver = str(review.get("apiVersion") or "").rpartition("/")
            got = f"{group}/{ver}, Kind={review.get('kind') or ''}"
            if got != "admission.k8s.io/v1, Kind=AdmissionReview":
                raise _CallError(invalid + "expected webhook response of admission.k8s.io/v1, "
                                 f"Kind=AdmissionReview, got {got}")
            if mutating:
                if patch_b64 and patch_type is None:
                    raise _CallError(invalid + "webhook returned response.patch but not response.patchType")
                if not patch_b64 and patch_type is not None:
                    raise _CallError(invalid + "webhook returned response.patchType but not response.patch")
                if patch_type is not None and not patch_type:
                    raise _CallError(invalid + 'webhook returned invalid response.patchType of ""')
            else:
                if patch_b64:
                    raise _CallError(invalid + "validating webhook may not return response.patch")
                if patch_type is not None:
                    raise _CallError(invalid + "validating webhook may not return response.patchType")
        else:
            patch_type = "JSONPatch" if patch_b64 and mutating else None  # v1beta1: any patch is JSONPatch
            if not mutating:
                patch_b64 = ""
        for k, v in (response.get("auditAnnotations") or {}).items():
            req.annotations[f"{hook.name}/{k}"] = v
        req.warnings.extend(str(w) for w in response.get("warnings") or ())
        served = REQUEST_WARNINGS.get()
        if served is not None:
            served.extend(str(w) for w in response.get("warnings") or ())
        if not response.get("allowed"):
            raise denial(hook.name, response.get("status"))
        if not patch_b64:
            return None
        try:
            patch_bytes = base64.b64decode(patch_b64, validate=True)
        except (ValueError, binascii.Error) as e:
            raise _CallError(f"failed to call webhook: illegal base64 data: {e}") from e
        try:
            ops = json.loads(patch_bytes)
            patch = jsonpatch.JsonPatch(ops)
            if not isinstance(ops, list):
                raise jsonpatch.InvalidJsonPatch("json: cannot unmarshal object into Go value of type "
                                                 "jsonpatch.Patch")
        except (ValueError, jsonpatch.InvalidJsonPatch, TypeError) as e:
            raise _CallError(f"received undecodable patch in webhook response: {e}") from e
        if not ops:
            return None
        if obj is None:
            raise _internal(f'admission webhook "{hook.name}" attempted to modify the object, which is not '
                            "supported for this operation")
        if patch_type != "JSONPatch":
            raise _CallError(f'unsupported patch type "{patch_type}"')
        try:
            patched = patch.apply(obj, in_place=False)
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, KeyError, IndexError,
                TypeError) as e:
            raise _internal(_patch_error(e)) from e
        if not isinstance(patched, dict):
            raise _internal("json: cannot unmarshal into Go value of type map[string]interface {}")
        return patched

    async def _invoke(self, hook: Webhook, req: AdmissionRequestInfo, obj: dict[str, Any] | None,
                      mutating: bool) -> dict[str, Any] | None:
        """_call with failurePolicy applied: a calling error fails the request (Fail) or is skipped."""
        try:
            return await self._call(hook, req, obj, mutating)
        except _CallError as e:
            message = f'failed calling webhook "{hook.name}": {e}'
            if hook.fail_open:
                log.warning("Failed calling webhook, failing open %s: %s", hook.name, message)
                return None
            raise _internal(message) from e

    # public -----------------------------------------------------------------------------

    async def mutate(
        self, req: AdmissionRequestInfo, default: Callable[[dict[str, Any]], None] | None = None
    ) -> dict[str, Any] | None:
        """Run the matching mutating webhooks; the object after their patches (req.obj if none applied).

        ``default`` fills the version's defaults in place; like kube-apiserver, it runs again on the
        object after every webhook patch that changed it (a limit a webhook adds gets its request), so
        a later update that defaults the stored object finds nothing left to change."""
        if (req.group, req.resource) in EXEMPT_RESOURCES:
            return req.obj
        hooks = self.webhooks(MUTATING_CONFIGS)
        obj = req.obj
        if not hooks:
            return obj
        invoked_reinvocable: set[str] = set()
        reinvoke: set[str] = set()
        changed_any = False
        for hook in hooks:
            if not self.should_call(hook, req, obj):
                continue
            patched = await self._invoke(hook, req, obj, True)
            if patched is not None and patched != obj:
                # A change makes every earlier IfNeeded webhook eligible for one more call.
                reinvoke |= invoked_reinvocable
                invoked_reinvocable = set()
                changed_any = True
                if default is not None:
                    default(patched)
            if patched is not None:
                obj = patched
            if hook.reinvoke:
                invoked_reinvocable.add(hook.uid)
        if changed_any and reinvoke:
            for hook in hooks:
                if hook.uid not in reinvoke or not self.should_call(hook, req, obj):
                    continue
                patched = await self._invoke(hook, req, obj, True)
                if patched is not None:
                    if default is not None and patched != obj:
                        default(patched)
                    obj = patched
        return obj

    async def validate(self, req: AdmissionRequestInfo) -> None:
        """Run the matching validating webhooks concurrently; raise the first failure to complete."""
        if (req.group, req.resource) in EXEMPT_RESOURCES:
            return
        hooks = [h for h in self.webhooks(VALIDATING_CONFIGS) if self.should_call(h, req, req.obj)]
        if not hooks:
            return
        failures: list[APIError] = []

        async def one(hook: Webhook) -> None:
            try:
                await self._invoke(hook, req, req.obj, False)
            except APIError as e:
                failures.append(e)

        await asyncio.gather(*(one(h) for h in hooks))
        if failures:
            raise failures[0]


def _text(e: BaseException) -> str:
    return str(e.args[0]) if isinstance(e, LookupError) and e.args else str(e)


