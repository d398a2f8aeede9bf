"""The only module that talks to the Kubernetes API.

A thin async facade over lightkube: it speaks plain dicts to the rest of Ferry, so
that the reconciler and providers stay free of client types. One generic set of
verbs (get, list, patch, patch_status, apply, delete) works over a table of the
kinds Ferry touches; reads of watched kinds are answered from the watch cache.
Failures are typed like kopf's (`NotFound`, `Conflict`, `Invalid`, `Forbidden`,
`TooManyRequests`, `Unavailable`, all `KubeError`), so callers branch on the type,
never on message text. Writes to Ferry's own kinds are merge patches (status
through the status subresource); objects Ferry owns are written with server-side
apply under the `ferry` field manager, so a drifted field is taken back. Pods get
strategic merge patches (their conditions merge by type) and evictions through
the eviction subresource, which the PodDisruptionBudget guards.
"""

from __future__ import annotations

import base64
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar, cast

import httpx2
from lightkube import AsyncClient, KubeConfig, codecs
from lightkube.core.exceptions import ApiError
from lightkube.core.resource import NamespacedResource
from lightkube.generic_resource import create_namespaced_resource
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.autoscaling_v2 import HorizontalPodAutoscaler
from lightkube.resources.core_v1 import Event, Namespace, Node, Pod, Secret, Service
from lightkube.resources.policy_v1 import PodDisruptionBudget
from lightkube.types import CascadeType, PatchType

from ferry import caching
from ferry.api.v1alpha1 import types
from ferry.logic import naming

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])

ENDPOINT = "InferenceEndpoint"
PROVIDER_CONFIG = "ProviderConfig"

InferenceEndpointRes = create_namespaced_resource(
    types.GROUP, types.VERSION, ENDPOINT, "inferenceendpoints"
)
ProviderConfigRes = create_namespaced_resource(
    types.GROUP, types.VERSION, PROVIDER_CONFIG, "providerconfigs"
)
#: KEDA's ScaledObject (read only: its bounds, under scaling.autoscaler: external).
ScaledObjectRes = create_namespaced_resource("keda.sh", "v1alpha1", "ScaledObject", "scaledobjects")

#: Every kind Ferry reads or writes, by its Kubernetes kind name.
KINDS: dict[str, Any] = {
    ENDPOINT: InferenceEndpointRes,
    PROVIDER_CONFIG: ProviderConfigRes,
    "Deployment": Deployment,
    "Service": Service,
    "PodDisruptionBudget": PodDisruptionBudget,
    "Pod": Pod,
    "Namespace": Namespace,
    "Node": Node,
    "HorizontalPodAutoscaler": HorizontalPodAutoscaler,
    "ScaledObject": ScaledObjectRes,
}
#: Kinds whose reads are answered from the watch cache (the handlers feed it).
CACHED_KINDS = (ENDPOINT, PROVIDER_CONFIG, "Deployment", "Service", "PodDisruptionBudget", "Node")


# --- errors ---------------------------------------------------------------------


class KubeError(Exception):
    """The API server refused a request, or could not be reached."""


class NotFound(KubeError):
    """404: the object does not exist."""


class Conflict(KubeError):
    """409: the object changed since it was read, or already exists; read it again."""


class Invalid(KubeError):
    """400/422: the object or patch is not valid; retrying the same request cannot help."""


class Forbidden(KubeError):
    """401/403: Ferry's identity may not do this (RBAC, admission)."""


class TooManyRequests(KubeError):
    """429: the API server is throttling; `retry_after` seconds if it said."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unavailable(KubeError):
    """5xx, timeouts, refused connections: the API server may answer later."""


_BY_STATUS: dict[int, type[KubeError]] = {
    400: Invalid,
    401: Forbidden,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    422: Invalid,
}


def _wrap(err: ApiError, what: str) -> KubeError:
    code = err.status.code or 0
    message = f"{what}: {err.status.message}"
    if code == 429:
        retry = err.response.headers.get("Retry-After") if err.response is not None else None
        return TooManyRequests(message, float(retry) if retry and retry.isdigit() else None)
    cls = _BY_STATUS.get(code, Unavailable if code >= 500 else KubeError)
    return cls(message)


def _reachable(fn: F) -> F:
    """Turn transport failures (timeouts, refused connections) into `Unavailable`."""

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return await fn(*args, **kwargs)
        except httpx2.HTTPError as err:
            if isinstance(err, ApiError):
                raise
            if isinstance(err, httpx2.HTTPStatusError) and err.response.status_code == 404:
                # A kind the API server does not serve (KEDA not installed) answers
                # 404 without a Status body.
                raise NotFound(f"the Kubernetes API does not serve {err.request.url.path}") from err
            raise Unavailable(f"cannot reach the Kubernetes API: {err}") from err

    return cast(F, wrapper)


def _to_dict(obj: Any) -> dict[str, Any]:
    return cast(dict[str, Any], obj.to_dict() if hasattr(obj, "to_dict") else dict(obj))


@dataclass(frozen=True)
class SecretData:
    """A Secret's decoded data plus the metadata Ferry's export rules read. Never logged."""

    name: str
    resource_version: str
    annotations: dict[str, str]
    data: dict[str, str] = field(repr=False)


class Api(Protocol):
    """What the reconciler, connector and recorder need from Kubernetes.

    `Kube` is the real one; unit tests use an in-memory implementation. Every
    method raises the typed `KubeError`s above.
    """

    cache: caching.ObjectCache

    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def list(
        self, kind: str, namespace: str | None = None, labels: dict[str, str] | None = None
    ) -> list[dict[str, Any]]: ...

    async def patch(
        self,
        kind: str,
        namespace: str,
        name: str,
        patch: dict[str, Any],
        resource_version: str | None = None,
        field_manager: str | None = None,
    ) -> dict[str, Any]: ...

    async def patch_status(
        self, kind: str, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any] | None: ...

    async def set_pod_condition(
        self, namespace: str, name: str, ctype: str, status: str, reason: str, message: str
    ) -> None: ...

    async def evict(self, namespace: str, name: str) -> bool: ...

    async def apply(
        self, manifest: dict[str, Any], field_manager: str = naming.FIELD_MANAGER
    ) -> dict[str, Any]: ...

    async def delete(self, kind: str, namespace: str, name: str) -> None: ...

    async def get_secret(self, namespace: str, name: str) -> SecretData | None: ...

    async def post_event(
        self, obj: dict[str, Any], event_type: str, reason: str, message: str
    ) -> None: ...


class Kube:
    """Async access to the objects Ferry reads and writes (implements `Api`)."""

    def __init__(self, client: AsyncClient, cache: caching.ObjectCache | None = None) -> None:
        self._client = client
        #: Fed by watch events (ferry.handlers); reads try it before the API server.
        self.cache = cache if cache is not None else caching.ObjectCache()

    @classmethod
    def from_env(cls, kubeconfig: str | None = None) -> Kube:
        """In-cluster service account, else `kubeconfig`, else $KUBECONFIG/~/.kube/config."""
        config = KubeConfig.from_file(kubeconfig) if kubeconfig else KubeConfig.from_env()
        timeout = httpx2.Timeout(30.0, connect=10.0)
        # HTTP/2: every worker's requests share one TLS connection. Over HTTP/1.1 a
        # burst opens and drops connections faster than keep-alive can hold them,
        # and the API server spends its CPU on handshakes.
        client = AsyncClient(
            config=config, field_manager=naming.FIELD_MANAGER, timeout=timeout, http2=True
        )
        return cls(client)

    async def close(self) -> None:
        await self._client.close()

    # --- generic verbs ------------------------------------------------------------

    @_reachable
    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist. Cached kinds read the cache first."""
        if kind in CACHED_KINDS:
            hit = self.cache.get(kind, namespace, name)
            if hit is not None:
                return hit
        try:
            obj = await self._client.get(KINDS[kind], name, namespace=namespace or None)
        except ApiError as err:
            if err.status.code == 404:
                return None
            raise _wrap(err, f"cannot read {kind} {namespace}/{name}") from err
        found = _to_dict(obj)
        if kind in CACHED_KINDS:
            self.cache.store(kind, found)
        return found

    @_reachable
    async def list(
        self, kind: str, namespace: str | None = None, labels: dict[str, str] | None = None
    ) -> list[dict[str, Any]]:
        """Objects of `kind` in `namespace` (None: all namespaces) matching `labels`."""
        resource = KINDS[kind]
        scope: dict[str, Any] = {}
        if issubclass(resource, NamespacedResource):
            scope["namespace"] = namespace if namespace is not None else "*"
        try:
            return [
                _to_dict(o)
                async for o in self._client.list(resource, labels=dict(labels or {}), **scope)
            ]
        except ApiError as err:
            raise _wrap(err, f"cannot list {kind} in {namespace or 'all namespaces'}") from err

    @_reachable
    async def patch(
        self,
        kind: str,
        namespace: str,
        name: str,
        patch: dict[str, Any],
        resource_version: str | None = None,
        field_manager: str | None = None,
    ) -> dict[str, Any]:
        """Merge-patch metadata/spec; with `resource_version` it raises Conflict if stale.

        `field_manager` names the writer in managedFields (default: Ferry's).
        """
        body = dict(patch)
        if resource_version is not None:
            # A resourceVersion in a merge patch makes the API server check it.
            body["metadata"] = {**body.get("metadata", {}), "resourceVersion": resource_version}
        try:
            obj = await self._client.patch(
                KINDS[kind],
                name,
                body,
                namespace=namespace or None,
                patch_type=PatchType.MERGE,
                field_manager=field_manager,
            )
        except ApiError as err:
            wrapped = _wrap(err, f"cannot update {kind} {namespace}/{name}")
            if isinstance(wrapped, Conflict):
                # The cached copy is the stale one: the next read must go to the server.
                self.cache.drop(kind, namespace, name)
            raise wrapped from err
        result = _to_dict(obj)
        if kind in CACHED_KINDS:
            self.cache.store(kind, result)
        return result

    @_reachable
    async def patch_status(
        self, kind: str, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Merge-patch the status subresource; None when the object is gone."""
        try:
            obj = await self._client.patch(
                KINDS[kind].Status,
                name,
                {"status": status},
                namespace=namespace,
                patch_type=PatchType.MERGE,
            )
        except ApiError as err:
            if err.status.code == 404:
                return None
            raise _wrap(err, f"cannot update status of {kind} {namespace}/{name}") from err
        result = _to_dict(obj)
        if kind in CACHED_KINDS:
            # The next reconcile compares against this status, not the one before it.
            self.cache.store(kind, result)
        return result

    @_reachable
    async def set_pod_condition(
        self, namespace: str, name: str, ctype: str, status: str, reason: str, message: str
    ) -> None:
        """Set one condition of a pod's status (a readiness gate); other conditions stay.

        A strategic merge patch: pod conditions merge by type. A pod that is gone is
        left alone.
        """
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        condition = {
            "type": ctype,
            "status": status,
            "reason": reason,
            "message": message,
            "lastTransitionTime": now,
        }
        try:
            await self._client.patch(
                Pod.Status,
                name,
                {"status": {"conditions": [condition]}},
                namespace=namespace,
                patch_type=PatchType.STRATEGIC,
            )
        except ApiError as err:
            if err.status.code != 404:
                raise _wrap(err, f"cannot set condition {ctype} of pod {namespace}/{name}") from err

    @_reachable
    async def evict(self, namespace: str, name: str) -> bool:
        """Evict a pod through the eviction subresource, which its PodDisruptionBudget
        guards. True when evicted (or already gone); False when the budget refuses
        now (429): try again later."""
        eviction = Pod.Eviction(metadata=ObjectMeta(name=name, namespace=namespace))
        try:
            await self._client.create(eviction, name=name, namespace=namespace)
        except ApiError as err:
            if err.status.code == 404:
                return True
            if err.status.code == 429:
                return False
            raise _wrap(err, f"cannot evict pod {namespace}/{name}") from err
        return True

    @_reachable
    async def apply(
        self, manifest: dict[str, Any], field_manager: str = naming.FIELD_MANAGER
    ) -> dict[str, Any]:
        """Server-side apply `manifest` as `field_manager`, taking over conflicts."""
        obj = codecs.from_dict(manifest)
        try:
            result = await self._client.apply(obj, field_manager=field_manager, force=True)
        except ApiError as err:
            meta = manifest["metadata"]
            raise _wrap(
                err, f"cannot apply {manifest['kind']} {meta.get('namespace')}/{meta['name']}"
            ) from err
        applied = _to_dict(result)
        if manifest["kind"] in CACHED_KINDS:
            self.cache.store(manifest["kind"], applied)
        return applied

    @_reachable
    async def delete(self, kind: str, namespace: str, name: str) -> None:
        """Delete in the foreground; an object that is already gone is success."""
        try:
            await self._client.delete(
                KINDS[kind], name, namespace=namespace, cascade=CascadeType.FOREGROUND
            )
        except ApiError as err:
            if err.status.code != 404:
                raise _wrap(err, f"cannot delete {kind} {namespace}/{name}") from err
        self.cache.drop(kind, namespace, name)

    @_reachable
    async def get_secret(self, namespace: str, name: str) -> SecretData | None:
        """The Secret's data, decoded, with its annotations. Callers never log the values."""
        try:
            secret = await self._client.get(Secret, name, namespace=namespace)
        except ApiError as err:
            if err.status.code == 404:
                return None
            raise _wrap(err, f"cannot read Secret {namespace}/{name}") from err
        data = {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}
        data.update(secret.stringData or {})
        meta = secret.metadata
        return SecretData(
            name=name,
            resource_version=(meta.resourceVersion if meta else None) or "",
            annotations=dict((meta.annotations if meta else None) or {}),
            data=data,
        )

    # --- events -----------------------------------------------------------------

    async def post_event(
        self, obj: dict[str, Any], event_type: str, reason: str, message: str
    ) -> None:
        """Record a core/v1 Event on `obj` (a Ferry object); failures are logged only.

        `eventTime` carries microseconds, so events of one second keep their order.
        """
        moment = datetime.now(UTC)
        now = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
        meta = obj.get("metadata") or {}
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "generateName": f"{meta.get('name')}.",
                "namespace": meta.get("namespace"),
            },
            "involvedObject": {
                "apiVersion": obj.get("apiVersion", types.API_VERSION),
                "kind": obj.get("kind", ENDPOINT),
                "name": meta.get("name"),
                "namespace": meta.get("namespace"),
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "type": event_type,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": "ferry"},
            "reportingComponent": "ferry.dev/operator",
            "reportingInstance": "ferry",
            "action": reason,
            "eventTime": moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            await self._client.create(cast(Event, codecs.from_dict(event)))
        except httpx2.HTTPError as err:
            log.warning(
                "cannot post event %s on %s/%s: %s",
                reason,
                meta.get("namespace"),
                meta.get("name"),
                err,
            )
