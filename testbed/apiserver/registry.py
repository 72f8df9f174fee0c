"""Object lifecycle: create, update, patch and delete with defaulting, admission and validation.

The HTTP layer (``server.py``) and the in-process controllers (``builtin.py``) both go through this
class, so every write gets the same treatment a real apiserver gives it: defaulting, mutating
admission (built-in plugins, then webhooks), validation, validating admission, quota, storage.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from testbed.k8s.timefmt import now as now_rfc3339

from . import convert, defaults, errors, patch, protobuf, quota, rbac, validation
from .auth import UserInfo
from .errors import APIError
from .meta import new_uid, random_suffix
from .resources import ResourceType, lookup
from .store import Entry, Store
from .target import Target
from .versions import VersionProfile, invalid_group
from .webhooks import AdmissionRequestInfo, WebhookDispatcher

if TYPE_CHECKING:
    from .builtin import BuiltIns

# Kinds whose default deletion propagation is to orphan their dependents (batch/v1 Job, core/v1
# ReplicationController): the real server adds the ``orphan`` finalizer when a DELETE names no policy.
_ORPHAN_BY_DEFAULT = {("batch", "jobs"), ("", "replicationcontrollers")}

PATCH_RETRY_S = 60.0  # kube-apiserver's default --request-timeout bounds a patch's retries
SYSTEM_USER = UserInfo(name="system:apiserver", groups=("system:masters",))

AfterWrite = Callable[
    [str, ResourceType, dict[str, Any] | None, dict[str, Any] | None], Awaitable[None] | None
]


def _require_field_manager(field_manager: str) -> None:
    if not field_manager:
        raise errors.bad_request(
            'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is required '
            "for apply patch"
        )


def _status_only(rt: ResourceType) -> bool:
    return "status" in rt.subresources


class Registry:
    def __init__(self, profile: VersionProfile, store: Store, dispatcher: WebhookDispatcher) -> None:
        self.profile = profile
        self.store = store
        self.webhooks = dispatcher
        self.builtins: BuiltIns | None = None
        self.after_write: list[AfterWrite] = []

    # -- helpers -----------------------------------------------------------------------------
    def _check_namespace(self, t: Target, op: str) -> dict[str, Any] | None:
        if not t.rtype.namespaced:
            return None
        ns = self.store.get("namespaces", "", t.namespace)
        if ns is None:
            raise errors.not_found("", "namespaces", t.namespace)
        if op == "CREATE" and ns["metadata"].get("deletionTimestamp") and t.rtype.plural != "events":
            raise APIError(
                403,
                "Forbidden",
                f'{t.rtype.plural} "{t.name}" is forbidden: unable to create new content in namespace '
                f"{t.namespace} because it is being terminated",
                details={
                    "name": t.name,
                    "kind": t.rtype.plural,
                    "causes": [
                        {
                            "reason": "NamespaceTerminating",
                            "message": f"namespace {t.namespace} is being terminated",
                            "field": "metadata.namespace",
                        }
                    ],
                },
            )
        return ns

    def _decode_check(
        self, t: Target, body: dict[str, Any], expect_kind: str | None = None
    ) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise errors.bad_request("the body of the request must be a JSON or YAML object")
        kind = expect_kind or t.kind
        api_version = body.get("apiVersion")
        if api_version and api_version != t.api_version:
            raise errors.bad_request(
                f"the API version in the data ({api_version}) does not match the expected API version "
                f"({t.api_version})"
            )
        if body.get("kind") and body["kind"] != kind:
            raise errors.bad_request(
                f"the kind in the data ({body['kind']}) does not match the expected kind ({kind})"
            )
        meta = body.get("metadata")
        if meta is not None and not isinstance(meta, dict):
            raise errors.bad_request("metadata must be an object")
        obj = convert.to_storage(t.group, t.version, t.kind, body)
        obj["apiVersion"] = self._storage_api_version(t.rtype)
        obj["kind"] = t.kind
        obj["metadata"] = dict(meta or {})
        return obj

    def _storage_api_version(self, rt: ResourceType) -> str:
        if rt.store_key == "events":
            return "v1"
        version = self.profile.preferred_version(rt.group) if rt.group else "v1"
        versions = self.profile.versions_for(rt.group, rt.plural)
        if version not in versions and versions:
            version = versions[0]
        return f"{rt.group}/{version}" if rt.group else "v1"

    def present(self, t: Target, obj: dict[str, Any]) -> dict[str, Any]:
        out = convert.from_storage(t.group, t.version, t.kind, obj)
        if out is not obj and out.get("apiVersion") != obj.get("apiVersion"):
            # another version's struct may write other fields at zero (an HPA's v1 currentReplicas)
            out = copy.deepcopy(out)
            protobuf.fill_always(out, self.profile.minor)
        return out

    async def _admit(
        self,
        op: str,
        t: Target,
        obj: dict[str, Any] | None,
        old: dict[str, Any] | None,
        user: UserInfo,
        dry_run: bool,
        ns: dict[str, Any] | None,
        options: dict[str, Any] | None = None,
    ) -> dict[str, Any] | None:
        """Mutating webhooks; returns the possibly mutated object, defaulted again after each patch."""
        info = self._request_info(op, t, obj, old, user, dry_run, ns, options)
        if obj is None:
            return obj
        create = op == "CREATE"

        def default(mutated: dict[str, Any]) -> None:
            # the webhooks saw (and patched) the client's version: default in that version
            defaults.apply_defaults(
                self.profile, t.group, t.kind, mutated, api_version=t.api_version, create=create
            )

        return await self.webhooks.mutate(info, default)

    def _request_info(
        self,
        op: str,
        t: Target,
        obj: dict[str, Any] | None,
        old: dict[str, Any] | None,
        user: UserInfo,
        dry_run: bool,
        ns: dict[str, Any] | None,
        options: dict[str, Any] | None,
    ) -> AdmissionRequestInfo:
        ns_labels = None
        if t.rtype.plural == "namespaces":
            ns_labels = ((obj or old or {}).get("metadata") or {}).get("labels") or {}
        elif ns is not None:
            ns_labels = ns["metadata"].get("labels") or {}
        return AdmissionRequestInfo(
            operation=op,
            group=t.group,
            version=t.version,
            kind=t.kind,
            resource=t.rtype.plural,
            subresource=t.subresource,
            name=t.name,
            namespace=t.namespace,
            user=user,
            obj=self.present(t, obj) if obj is not None else None,
            old=self.present(t, old) if old is not None else None,
            dry_run=dry_run,
            options=options,
            namespace_labels=ns_labels,
        )

    def _defaults(self, t: Target, obj: dict[str, Any], *, create: bool) -> None:
        if t.rtype.store_key == "events":
            defaults.apply_defaults(self.profile, "", t.kind, obj, api_version="v1", create=create)
        else:
            defaults.apply_defaults(
                self.profile, t.group, t.kind, obj, api_version=t.api_version, create=create
            )

    def _validate(self, t: Target, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        # Objects are validated in their stored form; events are stored in the core shape.
        # Other kinds are validated by the rules of the version the client spoke (webhook configurations
        # differ between admissionregistration v1beta1 and v1).
        name_fn = None
        if t.rtype.store_key == "events":
            group, seen = "", obj
            if t.group != "events.k8s.io" or t.version == "v1beta1":
                name_fn = validation.name_any  # legacy event validation: no name format
        else:
            group, seen = t.group, {**obj, "apiVersion": t.api_version}
        if t.group == "apps" and t.kind == "StatefulSet" and self.profile.minor >= 27:
            # a StatefulSet's name is a DNS label from 1.27 (a subdomain before; measured)
            name_fn = validation.name_is_dns_label
        causes = validation.validate_object(
            group, t.kind, seen, namespaced=t.rtype.namespaced, old=old, name_fn=name_fn
        )
        if causes:
            named = invalid_group(t.group, t.rtype.plural, self.profile.minor)
            raise errors.invalid(named, t.kind, obj["metadata"].get("name", ""), causes)

    def _rbac_escalation(self, t: Target, obj: dict[str, Any], old: dict[str, Any] | None,
                         user: UserInfo) -> None:
        """The rbac storage's escalation check (before admission, as in kube-apiserver)."""
        if t.group != rbac.RBAC_GROUP:
            return
        revision = sum(self.store.revisions[k] for k in rbac.STORE_KEYS.values())
        rbac.check_escalation(self.store, user, t.kind, obj, old, revision=revision)

    def _quota(self, t: Target, obj: dict[str, Any], old: dict[str, Any] | None, dry_run: bool) -> None:
        if not t.rtype.namespaced or t.rtype.plural == "resourcequotas":
            return
        quotas = self.store.list("resourcequotas", t.namespace)
        if not quotas:
            return
        updates = quota.check_admission(quotas, t.group, t.rtype.plural, obj, old)
        if dry_run:
            return
        for q, used in updates:
            if (q.get("status") or {}).get("used") == used:
                continue
            nq = copy.deepcopy(q)
            nq.setdefault("status", {})["used"] = used
            nq["status"].setdefault("hard", (q.get("spec") or {}).get("hard", {}))
            self.store.put("resourcequotas", nq, event="MODIFIED")

    async def _notify(
        self, rt: ResourceType, event: str, obj: dict[str, Any] | None, old: dict[str, Any] | None
    ) -> None:
        for hook in self.after_write:
            r = hook(event, rt, obj, old)
            if r is not None:
                await r

    # -- create ------------------------------------------------------------------------------
    async def create(
        self,
        t: Target,
        body: dict[str, Any],
        user: UserInfo,
        *,
        dry_run: bool = False,
        field_manager: str = "",
        track: bool = True,
    ) -> Entry | dict[str, Any]:
        obj = self._decode_check(t, body)
        meta = obj["metadata"]
        if t.rtype.namespaced:
            body_ns = meta.get("namespace")
            if body_ns and body_ns != t.namespace:
                raise errors.bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            meta["namespace"] = t.namespace
        else:
            meta.pop("namespace", None)
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + random_suffix()
        name = meta.get("name") or ""
        t = t.named(name)
        for k in ("uid", "resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"):
            meta.pop(k, None)
        meta["uid"] = new_uid()
        meta["creationTimestamp"] = now_rfc3339()
        if self._has_generation(t):
            meta["generation"] = 1
        self._defaults(t, obj, create=True)
        if t.group == "apps" and t.rtype.plural == "daemonsets":
            _template_generation(obj, None)
        if track:
            self._track(t, None, obj, field_manager)
        self._rbac_escalation(t, obj, None, user)
        ns = self._check_namespace(t, "CREATE")
        if self.builtins is not None:
            self.builtins.admit_create(t, obj)
        obj = await self._admit("CREATE", t, obj, None, user, dry_run, ns) or obj
        obj = self._back_to_storage(t, obj)
        self._validate(t, obj, None)
        await self.webhooks.validate(self._request_info("CREATE", t, obj, None, user, dry_run, ns, None))
        if self.store.get(t.rtype.store_key, t.namespace, name) is not None:
            raise errors.already_exists(t.group, t.rtype.plural, name)
        self._quota(t, obj, None, dry_run)
        if self.builtins is not None:
            self.builtins.before_store(t, obj, None, dry_run)
        if dry_run:
            self._shape(obj)
            return obj
        entry = self.store.put(t.rtype.store_key, obj, event="ADDED")
        await self._notify(t.rtype, "ADDED", entry.obj, None)
        return entry

    def _back_to_storage(self, t: Target, obj: dict[str, Any]) -> dict[str, Any]:
        """Webhooks see and patch the client's version; bring the result back to the stored form."""
        if t.rtype.store_key == "events" and t.group == "events.k8s.io":
            out = convert.to_storage(t.group, t.version, t.kind, obj)
            out["apiVersion"] = "v1"
            return out
        if t.rtype.store_key == "secrets":
            convert.merge_string_data(obj)  # a webhook may have added some
        obj["apiVersion"] = self._storage_api_version(t.rtype)
        return obj

    # -- update ------------------------------------------------------------------------------
    async def update(
        self,
        t: Target,
        body: dict[str, Any],
        user: UserInfo,
        *,
        dry_run: bool = False,
        field_manager: str = "",
        require_rv: str | None = None,
        decoded: bool = False,
        track: bool = True,
        managed_subresource: str = "",
    ) -> Entry | dict[str, Any]:
        store_key = t.rtype.store_key
        expect_kind = None
        if t.subresource and t.subresource != "status":
            raise errors.method_not_allowed()
        current = self.store.get_entry(store_key, t.namespace, t.name)
        if current is None:
            raise errors.not_found(t.group, t.rtype.plural, t.name)
        obj = body if decoded else self._decode_check(t, body, expect_kind)
        meta = obj.setdefault("metadata", {})
        if meta.get("name") and meta["name"] != t.name:
            raise errors.bad_request(
                f"the name of the object ({meta['name']}) does not match the name on the URL ({t.name})"
            )
        if t.rtype.namespaced and meta.get("namespace") and meta["namespace"] != t.namespace:
            raise errors.bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
            )
        meta["name"] = t.name
        if t.rtype.namespaced:
            meta["namespace"] = t.namespace
        rv = meta.get("resourceVersion") or require_rv
        if rv and rv != str(current.rv):
            raise errors.conflict(t.group, t.rtype.plural, t.name, errors.STALE_OBJECT)
        old = current.obj
        obj = self._merge_update(t, obj, old)
        self._defaults(t, obj, create=False)
        if t.subresource != "status":
            self._bump_on_update(t, obj, old)
        if track:
            self._track(t, self.present(t, old), obj, field_manager, managed_subresource)
        self._rbac_escalation(t, obj, old, user)
        ns = self._check_namespace(t, "UPDATE")
        obj = await self._admit("UPDATE", t, obj, old, user, dry_run, ns) or obj
        obj = self._back_to_storage(t, obj)
        self._validate(t, obj, old)
        await self.webhooks.validate(self._request_info("UPDATE", t, obj, old, user, dry_run, ns, None))
        latest = self.store.get_entry(store_key, t.namespace, t.name)
        if latest is None:
            raise errors.not_found(t.group, t.rtype.plural, t.name)
        if latest.rv != current.rv:
            # Someone wrote in between (we awaited webhooks): the real server reports a conflict.
            raise errors.conflict(t.group, t.rtype.plural, t.name, errors.STALE_OBJECT)
        self._quota(t, obj, old, dry_run)
        if self.builtins is not None:
            self.builtins.before_store(t, obj, old, dry_run)
        if dry_run:
            self._shape(obj)
            return obj
        if (
            obj["metadata"].get("deletionTimestamp")
            and not obj["metadata"].get("finalizers")
            and not self._graceful_pending(t, obj)
        ):
            entry = self.store.remove(store_key, t.namespace, t.name)
            assert entry is not None
            await self._notify(t.rtype, "DELETED", None, entry.obj)
            return entry
        entry = self.store.put(store_key, obj, event="MODIFIED")
        await self._notify(t.rtype, "MODIFIED", entry.obj, old)
        return entry

    def _track(
        self, t: Target, old: dict[str, Any] | None, obj: dict[str, Any], manager: str, subresource: str = ""
    ) -> None:
        """managedFields of a create/update/patch, before admission as the real handlers record them.
        ``subresource`` names a write that reached the main resource through one (scale)."""
        patch.track_update(
            old, obj, manager, group=t.group, kind=t.kind, api_version=t.api_version,
            subresource=subresource or t.subresource or "", has_status=_status_only(t.rtype),
            record_subresource=self.profile.minor >= 22,
        )

    def _graceful_pending(self, t: Target, obj: dict[str, Any]) -> bool:
        # A pod being deleted gracefully stays until its kubelet confirms (delete with grace 0).
        return t.rtype.store_key == "pods" and bool(obj["metadata"].get("deletionGracePeriodSeconds"))

    def _merge_update(self, t: Target, obj: dict[str, Any], old: dict[str, Any]) -> dict[str, Any]:
        """Keep what a client may not change through this endpoint, as the real strategies do."""
        meta, ometa = obj["metadata"], old["metadata"]
        for k in (
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "selfLink",
        ):
            if k in ometa:
                meta[k] = ometa[k]
            else:
                meta.pop(k, None)
        if _status_only(t.rtype):
            if t.subresource == "status":
                new = copy.deepcopy(old)
                if "status" in obj:
                    new["status"] = obj["status"]
                else:
                    new.pop("status", None)
                # Status writes may change labels, annotations and finalizers? The real status
                # strategies reset metadata except for a few fields; keep the stored metadata.
                new["metadata"] = dict(ometa)
                return new
            if "status" in old:
                obj["status"] = old["status"]
            else:
                obj.pop("status", None)
        return obj

    def _bump_on_update(self, t: Target, obj: dict[str, Any], old: dict[str, Any]) -> None:
        """What the real strategies derive from a change, once the new object is defaulted: the
        generation (bumped when anything but metadata and status changed) and a DaemonSet's template
        generation."""
        meta, ometa = obj["metadata"], old["metadata"]
        if self._has_generation(t):
            changed = {k: v for k, v in obj.items() if k not in ("metadata", "status")} != {
                k: v for k, v in old.items() if k not in ("metadata", "status")
            }
            if t.rtype.plural == "endpointslices" and self.profile.minor >= 21:
                # an EndpointSlice has no spec: everything but its metadata counts, and from 1.21 its
                # labels too (measured: a label patch bumps it on 1.22 and 1.35, not on 1.18)
                changed = changed or (meta.get("labels") or {}) != (ometa.get("labels") or {})
            meta["generation"] = int(ometa.get("generation", 1)) + (1 if changed else 0)
        if t.group == "apps" and t.rtype.plural == "daemonsets":
            _template_generation(obj, old)

    def _shape(self, obj: dict[str, Any]) -> None:
        """A dry run's answer has the shape a stored object gets (the fields Go's JSON always writes)."""
        if self.store.shape is not None:
            self.store.shape(obj)

    def _has_generation(self, t: Target) -> bool:
        """Whether the real strategy of the kind keeps metadata.generation (set on create, bumped on
        spec changes) at this minor: see ``versions._GENERATION_SINCE``."""
        return (t.group, t.rtype.plural) in self.profile.generation_kinds

    # -- patch -------------------------------------------------------------------------------
    async def patch(
        self,
        t: Target,
        content_type: str,
        body: bytes,
        user: UserInfo,
        *,
        dry_run: bool = False,
        field_manager: str = "",
        force: bool = False,
    ) -> Entry | dict[str, Any]:
        kind = patch.PATCH_TYPES.get(content_type.split(";")[0].strip())
        if kind is None:
            raise errors.unsupported_media_type(content_type)
        store_key = t.rtype.store_key
        # kube-apiserver applies a patch inside etcd's GuaranteedUpdate, which re-reads and re-applies
        # it on every concurrent write until it lands: a patch without a resourceVersion precondition
        # never answers 409 for someone else's write. A fixed few attempts did, when writers of one
        # pod (scheduler, extender, device plugin, kubelet) overlapped while webhooks were awaited.
        deadline = asyncio.get_running_loop().time() + PATCH_RETRY_S
        while True:
            current = self.store.get_entry(store_key, t.namespace, t.name)
            if current is None:
                if kind == "apply":
                    _require_field_manager(field_manager)
                    applied = patch.apply_server_side(
                        None, body, t.group, t.kind, field_manager, force, version=t.version
                    )
                    return await self.create(
                        t, applied, user, dry_run=dry_run, field_manager=field_manager, track=False
                    )
                raise errors.not_found(t.group, t.rtype.plural, t.name)
            seen = self.present(t, current.obj)
            if kind == "json":
                patched = patch.apply_json_patch(seen, body)
            elif kind == "merge":
                patched = patch.apply_merge_patch(seen, body)
            elif kind == "strategic":
                if not patch.strategic_supported(t.group, t.kind):
                    raise errors.unsupported_media_type(content_type, strategic=False)
                patched = patch.apply_strategic_merge_patch(seen, body, t.group, t.kind)
            else:
                _require_field_manager(field_manager)
                patched = patch.apply_server_side(
                    seen, body, t.group, t.kind, field_manager, force, version=t.version
                )
            want_rv = (patched.get("metadata") or {}).get("resourceVersion")
            if want_rv and want_rv != str(current.rv) and want_rv != seen["metadata"].get("resourceVersion"):
                raise errors.conflict(t.group, t.rtype.plural, t.name, errors.STALE_OBJECT)
            if not want_rv:
                patched.setdefault("metadata", {})["resourceVersion"] = str(current.rv)
            try:
                return await self.update(
                    t, patched, user, dry_run=dry_run, field_manager=field_manager, track=kind != "apply"
                )
            except APIError as e:
                # A patch without a precondition retries on a concurrent write, as the real server does
                # (until the request's own time is up: the real server's request timeout ends it too).
                # A precondition the body set is checked again above against the fresh object.
                if e.code == 409 and e.reason == "Conflict" and asyncio.get_running_loop().time() < deadline:
                    await asyncio.sleep(0)  # let the writer that won finish before reading again
                    continue
                raise

    # -- delete ------------------------------------------------------------------------------
    async def delete(
        self, t: Target, options: dict[str, Any], user: UserInfo, *, dry_run: bool = False
    ) -> tuple[dict[str, Any], bool]:
        """Delete, honouring grace periods, finalizers and preconditions.

        Returns (object as last seen, finished) where ``finished`` is False while the object lingers
        with a deletionTimestamp.
        """
        store_key = t.rtype.store_key
        current = self.store.get_entry(store_key, t.namespace, t.name)
        if current is None:
            raise errors.not_found(t.group, t.rtype.plural, t.name)
        obj = current.obj
        meta = obj["metadata"]
        pre = options.get("preconditions") or {}
        if pre.get("uid") and pre["uid"] != meta.get("uid"):
            raise errors.conflict(
                t.group,
                t.rtype.plural,
                t.name,
                f"Precondition failed: UID in precondition: {pre['uid']}, UID in object meta: "
                f"{meta.get('uid')}",
            )
        if pre.get("resourceVersion") and pre["resourceVersion"] != meta.get("resourceVersion"):
            raise errors.conflict(
                t.group,
                t.rtype.plural,
                t.name,
                f"Precondition failed: ResourceVersion in precondition: {pre['resourceVersion']}, "
                f"ResourceVersion in object meta: {meta.get('resourceVersion')}",
            )
        ns = self.store.get("namespaces", "", t.namespace) if t.rtype.namespaced else None
        await self.webhooks.validate(
            self._request_info(
                "DELETE",
                t,
                None,
                obj,
                user,
                dry_run,
                ns,
                {
                    "kind": "DeleteOptions",
                    "apiVersion": "meta.k8s.io/v1",
                    **{k: v for k, v in options.items() if k not in ("kind", "apiVersion")},
                },
            )
        )
        grace = options.get("gracePeriodSeconds")
        if grace is not None:
            try:
                grace = int(grace)
            except (TypeError, ValueError) as exc:
                raise errors.bad_request(f"invalid gracePeriodSeconds: {grace}") from exc
        if dry_run:
            return self.present(t, obj), True

        graceful = False
        new = None
        if store_key == "pods":
            phase = (obj.get("status") or {}).get("phase")
            bound = bool((obj.get("spec") or {}).get("nodeName"))
            if grace is None:
                grace = int((obj.get("spec") or {}).get("terminationGracePeriodSeconds", 30))
            if bound and phase not in ("Succeeded", "Failed") and grace > 0:
                old_grace = meta.get("deletionGracePeriodSeconds")
                if old_grace is None or grace < int(old_grace):
                    new = copy.deepcopy(obj)
                    deadline = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=grace)
                    new["metadata"]["deletionTimestamp"] = deadline.strftime("%Y-%m-%dT%H:%M:%SZ")
                    new["metadata"]["deletionGracePeriodSeconds"] = grace
                    if not meta.get("deletionTimestamp"):
                        _bump_generation(new)
                graceful = True
        ns_finalizers = (obj.get("spec") or {}).get("finalizers") or meta.get("finalizers")
        if (t.rtype.plural == "namespaces" and ns_finalizers) or (meta.get("finalizers") and not graceful):
            graceful = True
            if not meta.get("deletionTimestamp"):
                new = copy.deepcopy(obj)
                new["metadata"]["deletionTimestamp"] = now_rfc3339()
                new["metadata"]["deletionGracePeriodSeconds"] = 0
                _bump_generation(new)
                if t.rtype.plural == "namespaces":
                    new.setdefault("status", {})["phase"] = "Terminating"
        policy = options.get("propagationPolicy") or (
            "Orphan" if options.get("orphanDependents") else "Background"
        )
        if graceful:
            if new is not None:
                entry = self.store.put(store_key, new, event="MODIFIED")
                await self._notify(t.rtype, "MODIFIED", entry.obj, obj)
                obj = entry.obj
            if t.rtype.plural == "namespaces" and self.builtins is not None:
                self.builtins.finalize_namespace_soon(t.name)
            return self.present(t, obj), False
        entry = self.store.remove(store_key, t.namespace, t.name)
        assert entry is not None
        await self._notify(t.rtype, "DELETED", None, entry.obj)
        if policy != "Orphan" and self.builtins is not None:
            self.builtins.collect_dependents_soon(entry.obj)
        return self.present(t, entry.obj), True

    def delete_answer(
        self, t: Target, obj: dict[str, Any], finished: bool, options: dict[str, Any]
    ) -> dict[str, Any]:
        """The body of a DELETE's answer. An object that lingers (grace period, finalizers) answers with
        itself; one deleted at once with itself only for the kinds whose real storage returns it
        (``versions._DELETE_RETURNS_OBJECT_SINCE``), with ``Status{Success}`` naming it for every
        other. Jobs and ReplicationControllers deleted without a propagation policy answer as the real
        server's do, whose default for them is to orphan: the object with a deletionTimestamp and the
        ``orphan`` finalizer the garbage collector then removes (here it is gone already)."""
        key = (t.group, t.rtype.plural)
        if not finished or key in self.profile.delete_returns_object:
            return obj
        if key in _ORPHAN_BY_DEFAULT and not options.get("propagationPolicy") \
                and options.get("orphanDependents") is None:
            out = copy.deepcopy(obj)
            meta = out["metadata"]
            if not meta.get("deletionTimestamp"):
                meta["deletionTimestamp"] = now_rfc3339()
                _bump_generation(out)
            meta["deletionGracePeriodSeconds"] = 0
            meta["finalizers"] = [*(meta.get("finalizers") or []), "orphan"]
            return out
        meta = obj.get("metadata") or {}
        details: dict[str, Any] = {"name": meta.get("name", "")}
        if t.group:
            details["group"] = t.group
        details["kind"] = t.rtype.plural
        if meta.get("uid"):
            details["uid"] = meta["uid"]
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}

    # -- in-process writers (built-in controllers) ---------------------------------------------
    def target_for(self, group: str, plural: str, namespace: str = "", name: str = "") -> Target:
        rt = lookup(group, plural)
        if rt is None:
            raise KeyError(f"{plural}.{group}")
        versions = self.profile.versions_for(group, plural) if group else ["v1"]
        return Target(rt, versions[0] if versions else "v1", namespace, name)


TEMPLATE_GENERATION = "deprecated.daemonset.template.generation"


def _template_generation(ds: dict[str, Any], old: dict[str, Any] | None) -> None:
    """A DaemonSet's template generation, which apps/v1 carries in the
    ``deprecated.daemonset.template.generation`` annotation: 1 on create (or the annotation's value if
    higher), kept on update and bumped when ``spec.template`` changes; a client cannot change it."""

    def parse(obj: dict[str, Any]) -> int:
        try:
            return int(((obj.get("metadata") or {}).get("annotations") or {}).get(TEMPLATE_GENERATION, 0))
        except (TypeError, ValueError):
            return 0

    if old is None:
        gen = max(parse(ds), 1)
    else:
        gen = parse(old) or int(old["metadata"].get("generation") or 1)
        if (ds.get("spec") or {}).get("template") != (old.get("spec") or {}).get("template"):
            gen += 1
    meta = ds["metadata"]
    meta["annotations"] = {**(meta.get("annotations") or {}), TEMPLATE_GENERATION: str(gen)}


def _bump_generation(obj: dict[str, Any]) -> None:
    """The first deletionTimestamp an object gets (grace period or finalizers) bumps a generation it
    has: its controllers see the deletion as a change of what is asked of them."""
    gen = obj["metadata"].get("generation")
    if isinstance(gen, int) and gen > 0:
        obj["metadata"]["generation"] = gen + 1


async def gather_quietly(*aws: Awaitable[Any]) -> None:
    await asyncio.gather(*aws, return_exceptions=True)
