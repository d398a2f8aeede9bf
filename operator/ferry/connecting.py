"""Turn (endpoint, ProviderConfig, Secret) into a provider client: Crossplane's connector.

The reconciler calls `Connector.connect` once per reconcile. This module owns:

- the ProviderConfig lookup and its checks (right provider, credential keys);
- the export rules for Secrets (decisions.md, "Secrets leaving the cluster"): a
  Secret's values go to a platform only if its `ferry.dev/export-to` names that
  provider, and a non-default `baseUrl`/`inferenceBaseUrl` only if the credentials
  Secret lists it in `ferry.dev/export-base-urls`, so a person who may create
  endpoints or ProviderConfigs but not read Secrets cannot aim one at their own
  server;
- the client cache (D14): one client per ProviderConfig, keyed by its uid, its
  `metadata.generation` and the Secret's resourceVersion, closed when replaced;
- deletion without what deletion deletes (D5): the last client built for a
  ProviderConfig stays in memory, so an endpoint whose Secret vanished first (a
  namespace deletion) can still delete what it made; without one it says
  `CredentialsGone` and names both ways out.

The ProviderConfig controller (`check_config`) shares the key and export checks,
so a message about a Secret reads the same in both places.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from ferry import kube as kube_api
from ferry.api.v1alpha1 import types
from ferry.logic import naming
from ferry.providers.base import (
    Backend,
    ClientConfig,
    Credentials,
    PermanentProviderError,
    Provider,
    Target,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Connection:
    """A provider client and the endpoint as it should be handed to it."""

    provider: Provider
    target: Target
    #: The ProviderConfig used, when the endpoint names one (for its finalizer).
    config: types.ProviderConfig | None = None


#: Reasons that a change to a Secret (which Ferry does not watch) can clear.
SECRET_REASONS = frozenset(
    {
        "CredentialsNotFound",
        "CredentialsIncomplete",
        "CredentialsRejected",
        "SecretNotExportable",
        "BaseUrlNotExportable",
        "SecretNotFound",
        "SecretKeyNotFound",
    }
)

CacheKey = tuple[str, int, str]  # (ProviderConfig uid, generation, Secret resourceVersion)


def _norm(url: str) -> str:
    return url.rstrip("/")


class Connector:
    """Builds and caches provider clients; see the module docstring."""

    def __init__(
        self,
        kube: kube_api.Api,
        backends: Mapping[str, Backend],
        *,
        call_timeout: float = 10.0,
        shared_ttl: float = 60.0,
        retire_after: float = 60.0,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._kube = kube
        self._backends = dict(backends)
        self._call_timeout = call_timeout
        self._shared_ttl = shared_ttl
        # A replaced client may still be in use by reconciles that connected before the
        # change: it is closed only after the longest a reconcile may run.
        self._retire_after = retire_after
        self._retiring: set[asyncio.Task[None]] = set()
        self._clock = clock
        # uid -> (key, client); (namespace, name) -> uid, for a config that is gone.
        self._clients: dict[str, tuple[CacheKey, Provider]] = {}
        self._uids: dict[tuple[str, str], str] = {}

    @property
    def providers(self) -> list[str]:
        return sorted(self._backends)

    def backend(self, provider: str) -> Backend:
        backend = self._backends.get(provider)
        if backend is None:
            raise PermanentProviderError(
                f"provider {provider} is not available in this Ferry build"
                f" (available: {', '.join(self.providers)})",
                reason="ProviderNotSupported",
            )
        return backend

    async def close(self) -> None:
        """Close every cached client and every retiring one (operator shutdown)."""
        for task in list(self._retiring):
            task.cancel()
        await asyncio.gather(*self._retiring, return_exceptions=True)
        for _, client in self._clients.values():
            await client.close()
        self._clients.clear()

    # --- endpoints ------------------------------------------------------------------

    async def connect(self, ep: types.InferenceEndpoint, *, deleting: bool = False) -> Connection:
        """The client for `ep` and the target to hand it.

        Raises `PermanentProviderError` with reason ProviderNotSupported,
        ProviderConfigNotFound, ProviderConfigMismatch, CredentialsNotFound,
        CredentialsIncomplete, SecretNotExportable, BaseUrlNotExportable or (while
        deleting) CredentialsGone; `kube.KubeError` when Kubernetes cannot be read.
        """
        spec = ep.spec
        backend = self.backend(spec.provider)
        namespace = ep.metadata.namespace or "default"
        if not backend.required_keys:
            # The local provider: the cluster is the platform, no account needed.
            provider = backend.connect(self._client_config(backend, None, None, None))
            return Connection(provider, Target(ep))
        ref = spec.provider_config_ref.name if spec.provider_config_ref else ""
        raw = await self._kube.get(kube_api.PROVIDER_CONFIG, namespace, ref)
        if raw is None:
            if deleting:
                cached = self._cached_by_name(namespace, ref)
                if cached is not None:
                    return Connection(cached, Target(ep))
                raise await self._gone(ep, f"ProviderConfig {ref}")
            raise PermanentProviderError(
                f"ProviderConfig {ref} not found in namespace {namespace}",
                reason="ProviderConfigNotFound",
            )
        config = types.ProviderConfig.model_validate(raw)
        if config.spec.provider != spec.provider:
            raise PermanentProviderError(
                f"ProviderConfig {ref} is for {config.spec.provider}, but this endpoint"
                f" uses {spec.provider}",
                reason="ProviderConfigMismatch",
            )
        uid = config.metadata.uid or f"{namespace}/{ref}"
        self._uids[(namespace, ref)] = uid
        secret_ref = config.spec.credentials_secret_ref
        secret = await self._kube.get_secret(namespace, secret_ref.name) if secret_ref else None
        if secret is None and deleting and uid in self._clients:
            # D5: the Secret went first (a namespace deletion); the last client
            # built for this ProviderConfig still holds working credentials.
            return Connection(self._clients[uid][1], Target(ep), config)
        if secret is None and deleting:
            raise await self._gone(ep, f"Secret {secret_ref.name if secret_ref else ''}")
        self._check_secret(config, backend, secret)
        assert secret is not None  # _check_secret raised otherwise
        key: CacheKey = (uid, config.metadata.generation or 0, secret.resource_version)
        provider = await self._client(uid, key, config, backend, secret)
        env = await self._resolve_env(ep, backend) if not deleting else ()
        return Connection(provider, Target(ep, env), config)

    async def _client(
        self,
        uid: str,
        key: CacheKey,
        config: types.ProviderConfig,
        backend: Backend,
        secret: kube_api.SecretData,
    ) -> Provider:
        held = self._clients.get(uid)
        if held is not None and held[0] == key:
            return held[1]
        client = backend.connect(
            self._client_config(backend, config, secret, Credentials(dict(secret.data)))
        )
        self._clients[uid] = (key, client)
        if held is not None:
            # The ProviderConfig or its Secret changed: the old client's credentials are
            # of no further use, but calls it has in flight must finish.
            task = asyncio.create_task(self._retire(held[1]))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
        return client

    def forget(self, namespace: str, name: str) -> None:
        """The ProviderConfig `namespace/name` is gone (its finalizer held it while used):
        retire its client."""
        uid = self._uids.pop((namespace, name), None)
        held = self._clients.pop(uid, None) if uid else None
        if held is not None:
            task = asyncio.create_task(self._retire(held[1]))
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)

    async def _retire(self, client: Provider) -> None:
        try:
            await asyncio.sleep(self._retire_after)
        finally:
            await client.close()

    def _cached_by_name(self, namespace: str, name: str) -> Provider | None:
        uid = self._uids.get((namespace, name))
        held = self._clients.get(uid) if uid else None
        return held[1] if held else None

    def _client_config(
        self,
        backend: Backend,
        config: types.ProviderConfig | None,
        secret: kube_api.SecretData | None,
        credentials: Credentials | None,
    ) -> ClientConfig:
        spec = config.spec if config else None
        regions = tuple(spec.defaults.regions or ()) if spec and spec.defaults else ()
        return ClientConfig(
            provider=backend.name,
            base_url=_norm((spec.base_url if spec else None) or backend.default_base_url or ""),
            inference_base_url=_norm(
                (spec.inference_base_url if spec else None)
                or backend.default_inference_base_url
                or ""
            )
            or None,
            credentials=credentials or Credentials({}),
            config_name=config.metadata.name if config else "",
            secret_name=secret.name if secret else "",
            regions=regions,
            call_timeout=self._call_timeout,
            shared_ttl=self._shared_ttl,
            clock=self._clock,
        )

    async def _resolve_env(
        self, ep: types.InferenceEndpoint, backend: Backend
    ) -> tuple[tuple[str, str], ...]:
        """server.env with Secret values filled in, for platforms that take env as text."""
        if not backend.exports_env:
            return ()
        namespace = ep.metadata.namespace or "default"
        resolved: list[tuple[str, str]] = []
        for i, var in enumerate(ep.spec.server.env or []):
            if var.value_from is None:
                resolved.append((var.name, var.value or ""))
                continue
            ref = var.value_from.secret_key_ref
            where = f"spec.server.env[{i}] ({var.name})"
            secret = await self._kube.get_secret(namespace, ref.name)
            if secret is None:
                raise PermanentProviderError(
                    f"Secret {ref.name} named by {where} not found in namespace {namespace}",
                    reason="SecretNotFound",
                )
            self._check_export(secret, backend.name, f"named by {where}")
            if ref.key not in secret.data:
                raise PermanentProviderError(
                    f"Secret {ref.name} named by {where} has no key {ref.key}",
                    reason="SecretKeyNotFound",
                )
            resolved.append((var.name, secret.data[ref.key]))
        return tuple(resolved)

    async def _gone(self, ep: types.InferenceEndpoint, what: str) -> PermanentProviderError:
        namespace = ep.metadata.namespace or "default"
        external = ep.metadata.annotations.get(naming.EXTERNAL_NAME) or "the remote resource"
        ns = await self._kube.get("Namespace", "", namespace)
        terminating = bool(ns and (ns.get("status") or {}).get("phase") == "Terminating")
        orphan = (
            f"set spec.deletionPolicy: Orphan to finish and leave {external} running on"
            f" {ep.spec.provider} (it keeps costing money until you delete it there)"
        )
        if terminating:
            ways = (
                f"namespace {namespace} is being deleted, so the credentials cannot be"
                f" restored: {orphan}"
            )
        else:
            ways = f"restore {what}, or {orphan}"
        return PermanentProviderError(
            f"cannot delete {external}: {what} is gone and no earlier client for it is"
            f" held; {ways}",
            reason="CredentialsGone",
        )

    # --- ProviderConfigs (shared with the ProviderConfig controller) ------------------

    async def check_config(self, config: types.ProviderConfig) -> None:
        """Raise `PermanentProviderError` when `config` cannot be used as it is."""
        backend = self.backend(config.spec.provider)
        ref = config.spec.credentials_secret_ref
        secret = (
            await self._kube.get_secret(config.metadata.namespace or "default", ref.name)
            if ref
            else None
        )
        self._check_secret(config, backend, secret)

    def _check_secret(
        self,
        config: types.ProviderConfig,
        backend: Backend,
        secret: kube_api.SecretData | None,
    ) -> None:
        name = config.metadata.name
        namespace = config.metadata.namespace or "default"
        ref = config.spec.credentials_secret_ref
        if not backend.required_keys:
            return
        if ref is None or secret is None:
            secret_name = ref.name if ref else "(none named)"
            raise PermanentProviderError(
                f"Secret {secret_name} named by ProviderConfig {name} not found in"
                f" namespace {namespace}",
                reason="CredentialsNotFound",
            )
        absent = [k for k in backend.required_keys if not secret.data.get(k)]
        if absent:
            raise PermanentProviderError(
                f"Secret {secret.name} named by ProviderConfig {name} lacks the key(s)"
                f" {', '.join(absent)} that {backend.name} needs",
                reason="CredentialsIncomplete",
            )
        self._check_export(secret, backend.name, f"named by ProviderConfig {name}")
        allowed = {
            _norm(u) for u in naming.annotation_list(secret.annotations, naming.EXPORT_BASE_URLS)
        }
        missing = [
            (field_name, url)
            for field_name, url, default in (
                ("baseUrl", config.spec.base_url, backend.default_base_url),
                (
                    "inferenceBaseUrl",
                    config.spec.inference_base_url,
                    backend.default_inference_base_url,
                ),
            )
            if url and _norm(url) != _norm(default or "") and _norm(url) not in allowed
        ]
        if missing:
            shown = " and ".join(f"spec.{f} {u}" for f, u in missing)
            urls = ",".join(_norm(u) for _, u in missing)
            raise PermanentProviderError(
                f"ProviderConfig {name} sends the credentials in Secret {secret.name} to"
                f" {shown}, not the {backend.name} default; to allow it, list"
                f" {'them' if len(missing) > 1 else 'it'} in the Secret's annotation"
                f" {naming.EXPORT_BASE_URLS} (comma-separated), e.g."
                f" {naming.EXPORT_BASE_URLS}: {urls}",
                reason="BaseUrlNotExportable",
            )

    @staticmethod
    def _check_export(secret: kube_api.SecretData, provider: str, named_by: str) -> None:
        if provider not in naming.annotation_list(secret.annotations, naming.EXPORT_TO):
            raise PermanentProviderError(
                f"Secret {secret.name} {named_by} may not be sent to {provider}: add the"
                f" annotation {naming.EXPORT_TO}: {provider} to it (a Secret's values leave"
                " the cluster only for the providers it lists)",
                reason="SecretNotExportable",
            )
