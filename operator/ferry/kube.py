"""The only module that talks to the Kubernetes API.

A thin async facade over lightkube: it speaks plain dicts to the rest of Ferry, so
that the reconciler and providers stay free of client types, and it turns "not
found" into `None` and version conflicts into `Conflict`. Writes to Ferry's own
objects are merge patches (status through the status subresource); objects Ferry
owns (Deployments, Services, PDBs) are written with server-side apply under the
`ferry` field manager, so a drifted field is taken back on the next apply.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

import httpx2
from lightkube import AsyncClient, KubeConfig, codecs
from lightkube.core.exceptions import ApiError
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import Event, Pod, Secret, Service
from lightkube.resources.policy_v1 import PodDisruptionBudget
from lightkube.types import CascadeType, PatchType

from ferry import caching
from ferry.api.v1alpha1 import types
from ferry.logic import naming

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])

InferenceEndpointRes = create_namespaced_resource(
    types.GROUP, types.VERSION, "InferenceEndpoint", "inferenceendpoints"
)
ProviderConfigRes = create_namespaced_resource(
    types.GROUP, types.VERSION, "ProviderConfig", "providerconfigs"
)

_KINDS: dict[str, Any] = {
    "Deployment": Deployment,
    "Service": Service,
    "PodDisruptionBudget": PodDisruptionBudget,
}


ENDPOINT = "InferenceEndpoint"
#: Kinds whose reads are answered from the watch cache.
CACHED_KINDS = (ENDPOINT, *_KINDS)


class Conflict(Exception):
    """The object changed since it was read (409); read it again and retry."""


class KubeError(Exception):
    """The API server refused a request for a reason other than not-found or conflict."""


def _to_dict(obj: Any) -> dict[str, Any]:
    return cast(dict[str, Any], obj.to_dict() if hasattr(obj, "to_dict") else dict(obj))


def _wrap(err: ApiError, what: str) -> Exception:
    if err.status.code == 409:
        return Conflict(f"{what}: {err.status.message}")
    return KubeError(f"{what}: {err.status.message}")


def _reachable(fn: F) -> F:
    """Turn transport failures (timeouts, refused connections) into KubeError."""

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return await fn(*args, **kwargs)
        except httpx2.HTTPError as err:
            raise KubeError(f"cannot reach the Kubernetes API: {err}") from err

    return cast(F, wrapper)


class Kube:
    """Async access to the objects Ferry reads and writes."""

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

    # --- Ferry's own kinds ------------------------------------------------------

    @_reachable
    async def get_endpoint(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._cached(ENDPOINT, InferenceEndpointRes, namespace, name)

    @_reachable
    async def patch_endpoint(
        self, namespace: str, name: str, patch: dict[str, Any], resource_version: str | None = None
    ) -> dict[str, Any]:
        """Merge-patch metadata/spec; with `resource_version` it fails with Conflict if stale."""
        body = dict(patch)
        if resource_version is not None:
            # A resourceVersion in a merge patch makes the API server check it.
            body.setdefault("metadata", {})
            body["metadata"] = {**body["metadata"], "resourceVersion": resource_version}
        try:
            obj = await self._client.patch(
                InferenceEndpointRes, name, body, namespace=namespace, patch_type=PatchType.MERGE
            )
        except ApiError as err:
            raise _wrap(err, f"cannot update InferenceEndpoint {namespace}/{name}") from err
        result = _to_dict(obj)
        self.cache.store(ENDPOINT, result)
        return result

    @_reachable
    async def patch_endpoint_status(
        self, namespace: str, name: str, status: dict[str, Any]
    ) -> None:
        obj = await self._patch_status(InferenceEndpointRes, namespace, name, status)
        if obj is not None:
            # The next reconcile compares against this status, not the one before it.
            self.cache.store(ENDPOINT, obj)

    @_reachable
    async def list_endpoints(self, namespace: str | None = None) -> list[dict[str, Any]]:
        ns = namespace if namespace is not None else "*"
        return [_to_dict(o) async for o in self._client.list(InferenceEndpointRes, namespace=ns)]

    @_reachable
    async def get_provider_config(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._get(ProviderConfigRes, name, namespace)

    @_reachable
    async def patch_provider_config_status(
        self, namespace: str, name: str, status: dict[str, Any]
    ) -> None:
        await self._patch_status(ProviderConfigRes, namespace, name, status)

    @_reachable
    async def get_secret_data(self, namespace: str, name: str) -> dict[str, str] | None:
        """The Secret's data, base64-decoded. Callers must never log the values."""
        import base64

        try:
            secret = await self._client.get(Secret, name, namespace=namespace)
        except ApiError as err:
            if err.status.code == 404:
                return None
            raise _wrap(err, f"cannot read Secret {namespace}/{name}") from err
        data = {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}
        data.update(secret.stringData or {})
        return data

    # --- objects Ferry owns -----------------------------------------------------

    @_reachable
    async def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply `manifest` as field manager `ferry`, taking over conflicts."""
        obj = codecs.from_dict(manifest)
        try:
            result = await self._client.apply(obj, field_manager=naming.FIELD_MANAGER, force=True)
        except ApiError as err:
            meta = manifest["metadata"]
            raise _wrap(
                err, f"cannot apply {manifest['kind']} {meta.get('namespace')}/{meta['name']}"
            ) from err
        applied = _to_dict(result)
        self.cache.store(manifest["kind"], applied)
        return applied

    @_reachable
    async def get_owned(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._cached(kind, _KINDS[kind], namespace, name)

    @_reachable
    async def delete_owned(self, kind: str, namespace: str, name: str) -> None:
        try:
            await self._client.delete(
                _KINDS[kind], name, namespace=namespace, cascade=CascadeType.FOREGROUND
            )
        except ApiError as err:
            if err.status.code != 404:
                raise _wrap(err, f"cannot delete {kind} {namespace}/{name}") from err
        self.cache.drop(kind, namespace, name)

    @_reachable
    async def list_pods(self, namespace: str, labels: dict[str, str]) -> list[dict[str, Any]]:
        return [
            _to_dict(p)
            async for p in self._client.list(Pod, namespace=namespace, labels=dict(labels))
        ]

    # --- events -----------------------------------------------------------------

    async def post_event(
        self, ep: types.InferenceEndpoint, event_type: str, reason: str, message: str
    ) -> None:
        """Record a core/v1 Event on the endpoint; failures are logged, never raised."""
        now = datetime.now(UTC)
        meta = ep.metadata
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta.name}.", "namespace": meta.namespace},
            "involvedObject": {
                "apiVersion": types.API_VERSION,
                "kind": "InferenceEndpoint",
                "name": meta.name,
                "namespace": meta.namespace,
                "uid": meta.uid,
                "resourceVersion": meta.resource_version,
            },
            "type": event_type,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": "ferry"},
            "reportingComponent": "ferry.dev/operator",
            "reportingInstance": "ferry",
            "firstTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "lastTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "count": 1,
        }
        try:
            await self._client.create(cast(Event, codecs.from_dict(event)))
        except (ApiError, httpx2.HTTPError) as err:
            log.warning("cannot post event %s on %s/%s: %s", reason, meta.namespace, meta.name, err)

    async def list_events(self, namespace: str) -> AsyncIterator[dict[str, Any]]:
        async for e in self._client.list(Event, namespace=namespace):
            yield _to_dict(e)

    # --- helpers ----------------------------------------------------------------

    @_reachable
    async def _patch_status(
        self, res: Any, namespace: str, name: str, status: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Merge-patch the status subresource; None when the object is gone."""
        try:
            obj = await self._client.patch(
                res.Status,
                name,
                {"status": status},
                namespace=namespace,
                patch_type=PatchType.MERGE,
            )
        except ApiError as err:
            if err.status.code == 404:
                return None
            raise _wrap(err, f"cannot update status of {res.__name__} {namespace}/{name}") from err
        return _to_dict(obj)

    async def _cached(
        self, kind: str, res: Any, namespace: str, name: str
    ) -> dict[str, Any] | None:
        hit = self.cache.get(kind, namespace, name)
        if hit is not None:
            return hit
        found = await self._get(res, name, namespace)
        if found is not None:
            self.cache.store(kind, found)
        return found

    async def _get(self, res: Any, name: str, namespace: str) -> dict[str, Any] | None:
        try:
            obj = await self._client.get(res, name, namespace=namespace)
        except ApiError as err:
            if err.status.code == 404:
                return None
            raise _wrap(err, f"cannot read {res.__name__} {namespace}/{name}") from err
        return _to_dict(obj)
