"""The ferry.dev/v1alpha1 API: InferenceEndpoint and ProviderConfig.

This module is the single source of truth for both kinds. `ferry.api.crdgen` turns
these pydantic models into the CRD YAML under `crds/`; validation that must happen
in the API server (enums, ranges, cross-field CEL rules, immutability) is declared
here, on the types, so that `kubectl apply` rejects a bad manifest with a message
naming the field. The operator reads objects back through the same models.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from ferry.api.v1alpha1 import platforms, rules
from ferry.api.v1alpha1.rules import cel

GROUP = "ferry.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

#: Portable GPU names (`platforms.GPU_TYPES`). Each backend's table in `platforms`
#: says which it sells; the CRD rejects the others per backend.
GPU_TYPES = platforms.GPU_TYPES
GpuType = Literal["T4", "L4", "A10G", "L40S", "A100-40GB", "A100-80GB", "H100", "H200", "RTX4090"]
assert get_args(GpuType) == GPU_TYPES, "GpuType and platforms.GPU_TYPES disagree"
#: A bound on GPU names for the API server's CEL cost estimate (it ignores enums).
_GPU_NAME = {"maxLength": max(len(gpu) for gpu in GPU_TYPES)}

ProviderName = Literal["local", "modal", "replicate", "runpod"]
assert get_args(ProviderName) == platforms.PROVIDERS
SpotPolicy = Literal["spot", "on-demand", "spot-with-fallback"]
DeletionPolicy = Literal["Delete", "Orphan"]
AutoscalerKind = Literal["ferry", "external"]

#: Kubernetes/Go durations: see `rules.DURATION_PATTERN`.
DURATION_PATTERN = rules.DURATION_PATTERN
DURATION_MAX_LENGTH = rules.DURATION_MAX_LENGTH
#: RFC 1123 label used for names that become Kubernetes objects or provider names.
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
#: A Replicate model reference: owner/model, optionally pinned to a version id.
REPLICATE_MODEL_REF = r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*(:[A-Za-z0-9]+)?$"


def validations(*entries: dict[str, str]) -> dict[str, Any]:
    """`json_schema_extra` carrying CEL rules for a type or field."""
    return {"x-kubernetes-validations": list(entries)}


def duration_field(
    description: str, *, minimum: str | None = None, maximum: str | None = None
) -> Any:
    """A Go-duration string field, with an optional range that holds on every backend."""
    extra: dict[str, Any] = {}
    if minimum is not None and maximum is not None:
        extra = validations(
            cel(
                # A value the pattern refuses is reported by the pattern alone.
                f"!self.matches('{DURATION_PATTERN}')"
                f" || (duration(self) >= duration('{minimum}')"
                f" && duration(self) <= duration('{maximum}'))",
                f"must be between {minimum} and {maximum}",
            )
        )
    return Field(
        description=description,
        pattern=DURATION_PATTERN,
        min_length=2,
        max_length=DURATION_MAX_LENGTH,
        json_schema_extra=extra or None,
    )


class Model(BaseModel):
    """Base for every API type: camelCase on the wire, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=False
    )


# --- spec -------------------------------------------------------------------------


class ModelSource(Model):
    """Which model the endpoint serves: a portable URI, or a Replicate model reference."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "!(has(self.uri) && has(self.providerRef))",
                "set model.uri or model.providerRef, not both",
            ),
            cel(
                "!has(self.revision) || has(self.uri)",
                "model.revision only applies to model.uri",
                field_path=".revision",
            ),
        )
    )

    uri: Annotated[
        str | None,
        Field(
            description=(
                "Portable model location: hf://org/name, s3://bucket/path, gs://bucket/path"
                " or an absolute path (file:///models/x) inside the server image. Required"
                " for local, runpod and modal; rejected for replicate."
            ),
            pattern=r"^(hf://[A-Za-z0-9][\w.-]*/[\w.-]+|s3://\S+|gs://\S+|file:///\S*)$",
            max_length=512,
        ),
    ] = None
    revision: Annotated[
        str | None,
        Field(
            description="Revision (branch, tag or commit) of an hf:// model. Defaults to main.",
            max_length=128,
            pattern=r"^[\w./-]+$",
        ),
    ] = None
    provider_ref: Annotated[
        str | None,
        Field(
            description=(
                "Replicate model reference, owner/model or owner/model:version (without a"
                " version, the model's latest version at deploy time; status.resolvedModelVersion"
                " shows which). Required for replicate; rejected for every other provider."
            ),
            min_length=3,
            max_length=256,
            json_schema_extra=validations(
                cel(
                    f"self.matches('{REPLICATE_MODEL_REF}')",
                    "model.providerRef must be owner/model or owner/model:version",
                )
            ),
        ),
    ] = None


class SecretKeySelector(Model):
    """A key of a Secret in the endpoint's namespace."""

    name: Annotated[str, Field(description="Secret name.", pattern=DNS_LABEL, max_length=253)]
    key: Annotated[str, Field(description="Key within the Secret.", min_length=1, max_length=253)]


class EnvVarSource(Model):
    """Where an environment variable's value comes from."""

    secret_key_ref: Annotated[
        SecretKeySelector, Field(description="Take the value from a Secret key.")
    ]


class EnvVar(Model):
    """One environment variable for the model server."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "has(self.value) != has(self.valueFrom)",
                "exactly one of value or valueFrom must be set",
            ),
            rules.reserved_env_rule(),
        )
    )

    name: Annotated[
        str,
        Field(
            description=(
                "Variable name. The names the operator sets ("
                + ", ".join(platforms.RESERVED_ENV_NAMES)
                + ") are reserved; the model server's other FERRY_* settings are yours."
            ),
            pattern=ENV_NAME,
            max_length=128,
        ),
    ]
    value: Annotated[str | None, Field(description="Literal value.", max_length=32768)] = None
    value_from: Annotated[EnvVarSource | None, Field(description="Value taken from a Secret.")] = (
        None
    )


class ServerSpec(Model):
    """The model server container. Which fields a backend honours: see each field."""

    image: Annotated[
        str | None,
        Field(
            description=(
                "Container image of the model server. Required for local and runpod (for"
                " runpod, Ferry's model-server image or one built from it); optional for"
                " modal, which defaults to Ferry's model-server image"
                f" ({platforms.MODEL_SERVER_IMAGE});"
                " rejected for replicate, which runs the model's own image."
            ),
            min_length=1,
            max_length=512,
            pattern=r"^\S+$",
        ),
    ] = None
    port: Annotated[
        int | None,
        Field(
            description=(
                "Port the server listens on (local only; default 8000). Rejected for runpod"
                " (queue workers listen on nothing), modal (Modal serves the app itself) and"
                " replicate."
            ),
            ge=1,
            le=65535,
        ),
    ] = None
    args: Annotated[
        list[Annotated[str, Field(max_length=4096)]] | None,
        Field(
            description=(
                "Extra arguments appended to the server's command (local only; rejected"
                " for runpod, modal and replicate)."
            ),
            max_length=64,
        ),
    ] = None
    env: Annotated[
        list[EnvVar] | None,
        Field(
            description=(
                "Environment variables for the server: local and runpod as given, modal"
                " with Secret-backed values passed as Modal secrets; rejected for replicate."
            ),
            max_length=128,
            json_schema_extra={
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["name"],
            },
        ),
    ] = None


def _gpu_offer(provider: str) -> str:
    return ", ".join(platforms.offered_gpus(provider))


_REPLICATE_SKUS = ", ".join(f"{gpu} x{count}" for gpu, count in platforms.REPLICATE_HARDWARE)


class GpuSpec(Model):
    """Which accelerator each replica gets."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "!has(self.fallback) || !(self.type in self.fallback)",
                "gpu.fallback must not repeat gpu.type",
                field_path=".fallback",
            )
        )
    )

    type: Annotated[
        GpuType,
        Field(
            json_schema_extra=_GPU_NAME,
            description=(
                "Portable GPU name. local: any (the cluster's nodes decide); runpod: "
                + _gpu_offer("runpod")
                + "; modal: "
                + _gpu_offer("modal")
                + "; replicate: a (type, count) with a hardware SKU: "
                + _REPLICATE_SKUS
                + "."
            ),
        ),
    ]
    count: Annotated[int, Field(description="GPUs per replica.", ge=1, le=8)] = 1
    fallback: Annotated[
        list[Annotated[GpuType, Field(json_schema_extra=_GPU_NAME)]] | None,
        Field(
            description=(
                "GPU types to use when gpu.type has no capacity. local: in order (node"
                " affinity weights); modal: in order (a ranked list); runpod: as a set (any"
                " listed pool may place a worker); rejected for replicate."
            ),
            max_length=8,
            json_schema_extra={"x-kubernetes-list-type": "set"},
        ),
    ] = None


class ScalingSpec(Model):
    """Replica bounds and autoscaling. Which fields a backend honours: see each field."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "self.minReplicas <= self.maxReplicas",
                "scaling.minReplicas must be less than or equal to scaling.maxReplicas",
                field_path=".minReplicas",
            ),
            cel(
                "!has(self.scaleToZeroAfter) || self.minReplicas == 0",
                "scaling.scaleToZeroAfter requires scaling.minReplicas: 0",
                field_path=".scaleToZeroAfter",
            ),
            *(
                cel(
                    "!(has(self.autoscaler) && self.autoscaler == 'external')"
                    f" || !has(self.{name})",
                    f"scaling.{name} is not supported with scaling.autoscaler: external (the"
                    " external autoscaler owns the replica count); remove it",
                    field_path=f".{name}",
                    reason="FieldValueForbidden",
                )
                for name in rules.EXTERNAL_AUTOSCALER_EXCLUDES
            ),
        )
    )

    min_replicas: Annotated[
        int,
        Field(
            description=(
                "Replicas always kept running (0 allows scale to zero): pods, RunPod workers,"
                " Modal containers, Replicate instances (at most 5 on replicate)."
            ),
            ge=0,
            le=1000,
        ),
    ] = 1
    max_replicas: Annotated[
        int,
        Field(description="Upper bound on replicas (at most 20 on replicate).", ge=1, le=1000),
    ] = 1
    target_inflight_requests: Annotated[
        int | None,
        Field(
            description=(
                "Target concurrent in-flight requests per replica. local: Ferry's autoscaler"
                " target (default 8); runpod: the REQUEST_COUNT scaler (not with"
                " targetQueueDelay or scaleDownDelay); modal: @modal.concurrent target_inputs"
                " (max_inputs twice that; at most 500; a change redeploys); rejected for"
                " replicate."
            ),
            ge=1,
            le=10000,
        ),
    ] = None
    target_queue_delay: Annotated[
        str | None,
        duration_field(
            "runpod only: the QUEUE_DELAY scaler's target queue wait, at least 500ms (default"
            " 4s when targetInflightRequests is unset too). Rejected for local, modal and"
            " replicate."
        ),
    ] = None
    scale_down_delay: Annotated[
        str | None,
        duration_field(
            "How long load must stay low before replicas are removed. local: the scale-down"
            " window (0s-1h); runpod: the idle timeout, 1s-1h in whole seconds (default 60s"
            " under QUEUE_DELAY; not with targetInflightRequests); modal: scaledown_window,"
            " 2s-1h in whole seconds (default 60s); rejected for replicate."
        ),
    ] = None
    scale_up_delay: Annotated[
        str | None,
        duration_field(
            "local only: how long load must stay high before replicas are added (0s-1h).",
            minimum="0s",
            maximum="1h",
        ),
    ] = None
    scale_to_zero_after: Annotated[
        str | None,
        duration_field(
            "local only: idle time before scaling to zero, e.g. 5m or 1h30m (30s-24h; needs"
            " minReplicas 0). On runpod and modal use scaleDownDelay.",
            minimum="30s",
            maximum="24h",
        ),
    ] = None
    buffer_replicas: Annotated[
        int | None,
        Field(
            description=(
                "Idle replicas kept above demand. local: extra pods within maxReplicas;"
                " modal: buffer_containers; rejected for runpod and replicate."
            ),
            ge=0,
            le=1000,
        ),
    ] = None
    autoscaler: Annotated[
        AutoscalerKind | None,
        Field(
            description=(
                "local only: ferry (default) lets Ferry's autoscaler set the replica count;"
                " external leaves it to an HPA or KEDA, within minReplicas and maxReplicas,"
                " and rejects the autoscaling fields (targetInflightRequests, scaleDownDelay,"
                " scaleUpDelay, bufferReplicas, scaleToZeroAfter)."
            )
        ),
    ] = None
    capacity_timeout: Annotated[
        str | None,
        duration_field(
            "How long replicas may wait for GPU capacity before the endpoint is Stalled"
            " (InsufficientGPUCapacity): local pending pods, runpod throttled workers;"
            " 30s-24h, default 10m. Rejected for modal and replicate.",
            minimum="30s",
            maximum="24h",
        ),
    ] = None


class SpotSpec(Model):
    """Whether replicas may run on spot (preemptible) capacity. local only."""

    policy: Annotated[
        SpotPolicy | None,
        Field(
            description=(
                "spot: only spot capacity; on-demand (default): never spot;"
                " spot-with-fallback: prefer spot, fall back to on-demand."
            )
        ),
    ] = None
    drain_grace_seconds: Annotated[
        int | None,
        Field(
            description=(
                "Seconds a replica gets to finish in-flight requests when drained (1-3600,"
                " default 60); the model server reads it as FERRY_DRAIN_GRACE_S."
            ),
            ge=1,
            le=3600,
        ),
    ] = None


class LocalObjectReference(Model):
    """A reference to an object in the same namespace."""

    name: Annotated[str, Field(description="Object name.", pattern=DNS_LABEL, max_length=253)]


class InferenceEndpointSpec(Model):
    """Desired state of an InferenceEndpoint.

    Every field is either honoured by the endpoint's provider or rejected at apply,
    naming the field and the provider; fields only some providers honour have no
    default in the CRD (the operator applies each provider's own).
    """

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "self.provider == 'local' || has(self.providerConfigRef)",
                "providerConfigRef is required for the modal, replicate and runpod providers",
                field_path=".providerConfigRef",
                reason="FieldValueRequired",
            ),
            *rules.endpoint_rules(),
        )
    )

    provider: Annotated[
        ProviderName,
        Field(
            description=(
                "Where the endpoint runs: local (this cluster's GPU nodes), modal, replicate"
                " or runpod. Immutable."
            ),
            json_schema_extra=validations(
                cel("self == oldSelf", "provider is immutable; create a new endpoint to move")
            ),
        ),
    ]
    model: Annotated[ModelSource, Field(description="The model to serve.")]
    server: Annotated[
        ServerSpec, Field(description="Model server image, port, args and environment.")
    ] = Field(default_factory=ServerSpec)
    gpu: Annotated[GpuSpec, Field(description="Accelerator per replica.")]
    scaling: Annotated[ScalingSpec, Field(description="Replica bounds and autoscaling.")] = Field(
        default_factory=ScalingSpec
    )
    spot: Annotated[
        SpotSpec,
        Field(description="Spot capacity policy (local only; rejected for other providers)."),
    ] = Field(default_factory=SpotSpec)
    deletion_policy: Annotated[
        DeletionPolicy,
        Field(
            description=(
                "Delete removes the external resource with the endpoint; Orphan leaves it running."
            )
        ),
    ] = "Delete"
    provider_config_ref: Annotated[
        LocalObjectReference | None,
        Field(
            description=(
                "ProviderConfig with the credentials for this provider (required for modal,"
                " replicate and runpod)."
            )
        ),
    ] = None


# --- status -----------------------------------------------------------------------

ConditionStatus = Literal["True", "False", "Unknown"]


def conditions_field(description: str) -> Any:
    """A conditions list keyed by type, so server-side apply merges it per condition."""
    list_map: dict[str, Any] = {
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
    }
    return Field(description=description, json_schema_extra=list_map)


class Condition(Model):
    """A condition in the Kubernetes API conventions shape."""

    type: Annotated[
        str,
        Field(description="Condition type: Ready, Reconciling, Stalled or SpotInterrupted."),
    ]
    status: Annotated[ConditionStatus, Field(description="True, False or Unknown.")]
    reason: Annotated[str, Field(description="CamelCase reason for the last transition.")]
    message: Annotated[str, Field(description="Human-readable detail.")] = ""
    last_transition_time: Annotated[str, Field(description="When status last changed (RFC 3339).")]
    observed_generation: Annotated[
        int | None, Field(description="Generation this condition was computed from.")
    ] = None


class InferenceEndpointStatus(Model):
    """Observed state of an InferenceEndpoint."""

    model_config = ConfigDict(extra="ignore")

    observed_generation: Annotated[
        int | None, Field(description="The spec generation last reconciled.")
    ] = None
    conditions: Annotated[
        list[Condition],
        conditions_field(
            "Ready, Reconciling and Stalled (kstatus). local endpoints also get SpotInterrupted:"
            " True while a termination notice drains some of their replicas (reason"
            " ReplacingNoticedReplicas, DrainingNoticedReplicas, NoCapacityForReplacement or"
            " NoticeTooShort), False (NotInterrupted) once it is over; absent until the first."
        ),
    ] = Field(default_factory=list)
    provider: Annotated[str | None, Field(description="Provider the endpoint runs on.")] = None
    external_name: Annotated[
        str | None, Field(description="Identifier of the external resource at the provider.")
    ] = None
    url: Annotated[
        str | None,
        Field(
            description=(
                "The platform's native invocation URL: local, the Service"
                " (http://<service>.<namespace>.svc.cluster.local:<port>); runpod, the job plane"
                " (<inferenceBaseUrl>/v2/<id>); modal, the web function URL; replicate, the"
                " deployment's predictions URL."
            )
        ),
    ] = None
    openai_base_url: Annotated[
        str | None,
        Field(
            description=(
                "Where the OpenAI-compatible API answers (its /v1 base): local,"
                " http://<service>.<namespace>.svc.cluster.local:<port>/v1; modal, the web"
                " function URL + /v1; runpod, <inferenceBaseUrl>/v2/<id>/openai/v1; unset on"
                " replicate, which has none."
            )
        ),
    ] = None
    address: Annotated[
        str | None,
        Field(
            description=(
                "Where to send requests: openaiBaseUrl when there is one, else url. Shown by"
                " kubectl get."
            )
        ),
    ] = None
    desired_replicas: Annotated[int | None, Field(description="Replicas Ferry asked for.")] = None
    ready_replicas: Annotated[
        int | None,
        Field(
            description=(
                "Replicas ready to serve (RunPod: workers with the model loaded). Unset on"
                " modal and replicate, which report no ready count."
            )
        ),
    ] = None
    replicas: Annotated[str | None, Field(description="ready/desired, for kubectl get.")] = None
    surge_replicas: Annotated[
        int | None,
        Field(
            description=(
                "Replicas running above the desired count while a drain replaces noticed ones"
                " (local: above maxReplicas if need be); unset when no drain is in progress."
            )
        ),
    ] = None
    waiting_for_capacity_since: Annotated[
        str | None,
        Field(
            description=(
                "When replicas started waiting for GPU capacity (RFC 3339); after"
                " scaling.capacityTimeout of waiting the endpoint turns Stalled. Unset when"
                " nothing waits."
            )
        ),
    ] = None
    running_containers: Annotated[
        int | None,
        Field(description="modal: containers running now, as Modal's stats report them."),
    ] = None
    resolved_model_version: Annotated[
        str | None,
        Field(
            description=(
                "replicate: the model version the current release runs (the version in"
                " model.providerRef, or the latest one when it names none)."
            )
        ),
    ] = None
    release_number: Annotated[
        int | None,
        Field(description="replicate: the deployment's current release number."),
    ] = None


class ObjectMeta(BaseModel):
    """The subset of metadata Ferry reads; everything else is passed through."""

    model_config = ConfigDict(extra="allow")

    name: str
    namespace: str | None = None
    uid: str | None = None
    generation: int | None = None
    resource_version: str | None = Field(default=None, alias="resourceVersion")
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    finalizers: list[str] = Field(default_factory=list)
    deletion_timestamp: str | None = Field(default=None, alias="deletionTimestamp")


def root_kind(
    kind: str, plural: str, short_names: list[str], columns: list[list[str]]
) -> ConfigDict:
    """Model config of a top-level kind, carrying what crdgen needs for its CRD."""
    age = ["Age", "date", ".metadata.creationTimestamp", ""]
    extra: dict[str, Any] = {
        "x-ferry-kind": kind,
        "x-ferry-plural": plural,
        "x-ferry-short-names": short_names,
        "x-ferry-categories": ["ferry"],
        "x-ferry-printer-columns": [*columns, age],
    }
    return ConfigDict(populate_by_name=True, json_schema_extra=extra)


class InferenceEndpoint(BaseModel):
    """A model endpoint on one provider, kept within its scaling bounds."""

    model_config = root_kind(
        "InferenceEndpoint",
        "inferenceendpoints",
        ["iep"],
        [
            ["Provider", "string", ".spec.provider", ""],
            ["GPU", "string", ".spec.gpu.type", ""],
            ["Ready", "string", ".status.replicas", "ready/desired replicas"],
            ["Status", "string", ".status.conditions[?(@.type=='Ready')].reason", ""],
            ["Address", "string", ".status.address", "openaiBaseUrl when there is one, else url"],
        ],
    )

    api_version: str = Field(default=API_VERSION, alias="apiVersion")
    kind: str = "InferenceEndpoint"
    metadata: ObjectMeta
    spec: InferenceEndpointSpec
    status: InferenceEndpointStatus = Field(default_factory=InferenceEndpointStatus)


# --- ProviderConfig ---------------------------------------------------------------


class ProviderDefaults(Model):
    """Settings applied to every endpoint that uses this ProviderConfig."""

    regions: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=64)]] | None,
        Field(
            description=(
                "runpod only: preferred data centers (RunPod's dataCenterIds, e.g. US-TX-3)."
                " A preference, not an allow-list: RunPod may place workers elsewhere."
                " Unset means no preference. Rejected for local, modal and replicate."
            ),
            max_length=32,
            json_schema_extra={"x-kubernetes-list-type": "set"},
        ),
    ] = None


def _base_urls() -> str:
    return ", ".join(f"{p} {url}" for p, url in platforms.PLATFORM_BASE_URLS.items())


class ProviderConfigSpec(Model):
    """How to reach one provider account."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "self.provider == 'local' || has(self.credentialsSecretRef)",
                "credentialsSecretRef is required for the modal, replicate and runpod providers",
                field_path=".credentialsSecretRef",
                reason="FieldValueRequired",
            ),
            *rules.provider_config_rules(),
        )
    )

    provider: Annotated[ProviderName, Field(description="Which provider this configures.")]
    credentials_secret_ref: Annotated[
        LocalObjectReference | None,
        Field(
            description=(
                "Secret in the same namespace holding the API credentials: key token for"
                " runpod and replicate; keys tokenId and tokenSecret for modal. Ferry sends a"
                " Secret's values to a platform only if the Secret carries the annotation"
                " ferry.dev/export-to listing that provider (comma-separated); a baseUrl or"
                " inferenceBaseUrl other than the platform's must also be listed in this"
                " Secret's annotation ferry.dev/export-base-urls."
            )
        ),
    ] = None
    base_url: Annotated[
        str | None,
        Field(
            description=(
                "The platform's API, for sandboxes and proxies; unset means the platform's"
                f" own ({_base_urls()}). A non-default URL must be listed in the credentials"
                " Secret's ferry.dev/export-base-urls annotation. Rejected for local."
            ),
            pattern=r"^https?://\S+$",
            max_length=512,
        ),
    ] = None
    inference_base_url: Annotated[
        str | None,
        Field(
            description=(
                "runpod only: the job plane that serves requests; unset means RunPod's own"
                f" ({platforms.RUNPOD_INFERENCE_BASE_URL}). A non-default URL must be listed in"
                " the credentials Secret's ferry.dev/export-base-urls annotation. Rejected for"
                " modal (Modal returns each endpoint's URL), replicate (its client has one"
                " base URL: use baseUrl) and local."
            ),
            pattern=r"^https?://\S+$",
            max_length=512,
        ),
    ] = None
    defaults: Annotated[
        ProviderDefaults, Field(description="Settings applied to this provider's endpoints.")
    ] = Field(default_factory=ProviderDefaults)


class ProviderConfigStatus(Model):
    """Observed state of a ProviderConfig."""

    model_config = ConfigDict(extra="ignore")

    conditions: Annotated[
        list[Condition], conditions_field("Ready when the credentials Secret is found.")
    ] = Field(default_factory=list)


class ProviderConfig(BaseModel):
    """Credentials and defaults for one provider account."""

    model_config = root_kind(
        "ProviderConfig",
        "providerconfigs",
        ["fpc"],
        [
            ["Provider", "string", ".spec.provider", ""],
            ["Ready", "string", ".status.conditions[?(@.type=='Ready')].status", ""],
        ],
    )

    api_version: str = Field(default=API_VERSION, alias="apiVersion")
    kind: str = "ProviderConfig"
    metadata: ObjectMeta
    spec: ProviderConfigSpec
    status: ProviderConfigStatus = Field(default_factory=ProviderConfigStatus)
