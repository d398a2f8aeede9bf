"""What the model server is told through its environment on a remote platform.

The names are the reserved ones of D19 (`ferry.api.v1alpha1.platforms.ENV_*`); the
local provider puts the same model reference into its pods' env. Pure functions,
called by the provider mappers (RunPod worker env, Modal's secret) and the manifests.
"""

from __future__ import annotations

from collections.abc import Iterable

from ferry.api.v1alpha1 import platforms, types


def model_reference(spec: types.InferenceEndpointSpec) -> str | None:
    """FERRY_MODEL: `model.uri`, with `@revision` when one is pinned; None without a URI."""
    model = spec.model
    if not model.uri:
        return None
    return f"{model.uri}@{model.revision}" if model.revision else model.uri


def platform_env(
    spec: types.InferenceEndpointSpec,
    platform: str,
    uid: str,
    user_env: Iterable[tuple[str, str]],
) -> dict[str, str]:
    """The server's env on `platform`: the user's (Secret values resolved), then Ferry's.

    FERRY_ENDPOINT_UID carries the endpoint's UID: it is how Ferry finds what it made
    again where a platform has no labels (it is restated with every env change).
    """
    env = dict(user_env)
    model = model_reference(spec)
    if model:
        env[platforms.ENV_MODEL] = model
    env[platforms.ENV_PLATFORM] = platform
    env[platforms.ENV_ENDPOINT_UID] = uid
    return env
