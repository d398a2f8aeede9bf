"""The ferry.dev/v1alpha1 API: InferenceEndpoint and ProviderConfig.

This module is the single source of truth for both kinds. `ferry.api.crdgen` turns
these pydantic models into the CRD YAML under `crds/`; validation that must happen
in the API server (enums, ranges, cross-field CEL rules, immutability) is declared
here, on the types, so that `kubectl apply` rejects a bad manifest with a message
naming the field. The operator reads objects back through the same models.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP = "ferry.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

#: Portable GPU names. Providers map them to their own SKUs (RunPod pools, Modal
#: gpu strings, Replicate hardware); the local provider maps them to node labels.
GPU_TYPES = ("T4", "L4", "A10G", "L40S", "A100-40GB", "A100-80GB", "H100", "H200", "RTX4090")
GpuType = Literal["T4", "L4", "A10G", "L40S", "A100-40GB", "A100-80GB", "H100", "H200", "RTX4090"]

ProviderName = Literal["local", "modal", "replicate", "runpod"]
SpotPolicy = Literal["spot", "on-demand", "spot-with-fallback"]
DeletionPolicy = Literal["Delete", "Orphan"]

#: Kubernetes-style durations accepted by scaleToZeroAfter: 30s, 5m, 1h30m.
DURATION_PATTERN = r"^([0-9]+h)?([0-9]+m)?([0-9]+s)?$"
#: RFC 1123 label used for names that become Kubernetes objects or provider names.
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


def cel(rule: str, message: str, *, field_path: str | None = None) -> dict[str, str]:
    """One `x-kubernetes-validations` entry; `field_path` makes kubectl name the field."""
    entry = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    return entry


def validations(*rules: dict[str, str]) -> dict[str, Any]:
    return {"x-kubernetes-validations": list(rules)}


class Model(BaseModel):
    """Base for every API type: camelCase on the wire, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=False
    )


# --- spec -------------------------------------------------------------------------


class ModelSource(Model):
    """Which model the endpoint serves: a portable URI, or a provider-native reference."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "has(self.uri) != has(self.providerRef)",
                "exactly one of model.uri or model.providerRef must be set",
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
                " or an absolute path (file:///models/x) inside the server image."
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
                "Provider-native model reference, used as is: a Replicate model"
                " owner/name:version, a RunPod template id, a Modal image tag."
            ),
            min_length=1,
            max_length=256,
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
            )
        )
    )

    name: Annotated[str, Field(description="Variable name.", pattern=ENV_NAME, max_length=128)]
    value: Annotated[str | None, Field(description="Literal value.", max_length=32768)] = None
    value_from: Annotated[EnvVarSource | None, Field(description="Value taken from a Secret.")] = (
        None
    )


class ServerSpec(Model):
    """The model server container every backend runs."""

    image: Annotated[
        str | None,
        Field(
            description=(
                "Container image of the model server. Required for local and runpod."
                " Defaults to the Ferry inference server image when unset elsewhere."
            ),
            min_length=1,
            max_length=512,
            pattern=r"^\S+$",
        ),
    ] = None
    port: Annotated[int, Field(description="Port the server listens on.", ge=1, le=65535)] = 8000
    args: Annotated[
        list[Annotated[str, Field(max_length=4096)]],
        Field(description="Extra arguments for the server process.", max_length=64),
    ] = Field(default_factory=list)
    env: Annotated[
        list[EnvVar],
        Field(
            description="Environment variables for the server.",
            max_length=128,
            json_schema_extra={
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["name"],
            },
        ),
    ] = Field(default_factory=list)


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

    type: Annotated[GpuType, Field(description="Portable GPU name: " + ", ".join(GPU_TYPES) + ".")]
    count: Annotated[int, Field(description="GPUs per replica.", ge=1, le=8)] = 1
    fallback: Annotated[
        list[GpuType],
        Field(
            description="GPU types to try in order when gpu.type has no capacity.",
            max_length=8,
            json_schema_extra={"x-kubernetes-list-type": "set"},
        ),
    ] = Field(default_factory=list)


class ScalingSpec(Model):
    """Replica bounds and the autoscaling target."""

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
        )
    )

    min_replicas: Annotated[
        int,
        Field(description="Replicas always kept running (0 allows scale to zero).", ge=0, le=1000),
    ] = 1
    max_replicas: Annotated[int, Field(description="Upper bound on replicas.", ge=1, le=1000)] = 1
    scale_to_zero_after: Annotated[
        str | None,
        Field(
            description="Idle time before scaling to zero, e.g. 5m or 1h30m. Needs minReplicas 0.",
            pattern=DURATION_PATTERN,
            min_length=2,
            max_length=16,
        ),
    ] = None
    target_inflight_requests: Annotated[
        int,
        Field(description="Target concurrent in-flight requests per replica.", ge=1, le=10000),
    ] = 8


class SpotSpec(Model):
    """Whether replicas may run on spot (preemptible) capacity."""

    policy: Annotated[
        SpotPolicy,
        Field(
            description=(
                "spot: only spot capacity; on-demand: never spot; spot-with-fallback:"
                " prefer spot, fall back to on-demand."
            )
        ),
    ] = "on-demand"
    drain_grace_seconds: Annotated[
        int,
        Field(
            description="Seconds a replica gets to finish in-flight requests when drained.",
            ge=0,
            le=3600,
        ),
    ] = 120


class LocalObjectReference(Model):
    """A reference to an object in the same namespace."""

    name: Annotated[str, Field(description="Object name.", pattern=DNS_LABEL, max_length=253)]


class InferenceEndpointSpec(Model):
    """Desired state of an InferenceEndpoint."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "self.provider == 'local' ? has(self.server.image) : true",
                "server.image is required when provider is local",
                field_path=".server.image",
            ),
            cel(
                "self.provider == 'runpod'"
                " ? has(self.server.image) || has(self.model.providerRef) : true",
                "runpod needs server.image or a template id in model.providerRef",
                field_path=".server",
            ),
            cel(
                "self.provider == 'replicate' ? has(self.model.providerRef) : true",
                "replicate needs model.providerRef (owner/name:version)",
                field_path=".model.providerRef",
            ),
            cel(
                "self.provider == 'local' || has(self.providerConfigRef)",
                "providerConfigRef is required for the modal, replicate and runpod providers",
                field_path=".providerConfigRef",
            ),
            cel(
                "self.provider != 'local' || !has(self.model.providerRef)",
                "model.providerRef is not supported by the local provider; use model.uri",
                field_path=".model.providerRef",
            ),
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
    scaling: Annotated[ScalingSpec, Field(description="Replica bounds and target.")] = Field(
        default_factory=ScalingSpec
    )
    spot: Annotated[SpotSpec, Field(description="Spot capacity policy.")] = Field(
        default_factory=SpotSpec
    )
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
        Field(description="ProviderConfig with credentials and defaults for this provider."),
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

    type: Annotated[str, Field(description="Condition type: Ready, Reconciling or Stalled.")]
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
    conditions: Annotated[list[Condition], conditions_field("Ready, Reconciling and Stalled.")] = (
        Field(default_factory=list)
    )
    provider: Annotated[str | None, Field(description="Provider the endpoint runs on.")] = None
    external_name: Annotated[
        str | None, Field(description="Identifier of the external resource at the provider.")
    ] = None
    url: Annotated[str | None, Field(description="Where to send inference requests.")] = None
    desired_replicas: Annotated[int | None, Field(description="Replicas Ferry asked for.")] = None
    ready_replicas: Annotated[int | None, Field(description="Replicas ready to serve.")] = None
    replicas: Annotated[str | None, Field(description="ready/desired, for kubectl get.")] = None


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
            ["URL", "string", ".status.url", ""],
        ],
    )

    api_version: str = Field(default=API_VERSION, alias="apiVersion")
    kind: str = "InferenceEndpoint"
    metadata: ObjectMeta
    spec: InferenceEndpointSpec
    status: InferenceEndpointStatus = Field(default_factory=InferenceEndpointStatus)


# --- ProviderConfig ---------------------------------------------------------------


class ProviderDefaults(Model):
    """Defaults applied to endpoints that use this ProviderConfig."""

    gpu_type: Annotated[
        GpuType | None, Field(description="GPU type when an endpoint names none.")
    ] = None
    spot_policy: Annotated[SpotPolicy | None, Field(description="Default spot policy.")] = None
    regions: Annotated[
        list[Annotated[str, Field(max_length=64)]],
        Field(
            description="Allowed regions or data centers, in the provider's own names.",
            max_length=32,
            json_schema_extra={"x-kubernetes-list-type": "set"},
        ),
    ] = Field(default_factory=list)
    owner: Annotated[
        str | None,
        Field(
            description="Account or organisation that owns created resources (Replicate).",
            max_length=128,
        ),
    ] = None


class ProviderConfigSpec(Model):
    """How to reach one provider account."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "self.provider == 'local' || has(self.credentialsSecretRef)",
                "credentialsSecretRef is required for the modal, replicate and runpod providers",
                field_path=".credentialsSecretRef",
            ),
        )
    )

    provider: Annotated[ProviderName, Field(description="Which provider this configures.")]
    credentials_secret_ref: Annotated[
        LocalObjectReference | None,
        Field(
            description=(
                "Secret in the same namespace holding the API credentials (keys: token for"
                " Replicate and RunPod; tokenId and tokenSecret for Modal)."
            )
        ),
    ] = None
    base_url: Annotated[
        str | None,
        Field(
            description="Override the provider API base URL (for sandboxes and proxies).",
            pattern=r"^https?://\S+$",
            max_length=512,
        ),
    ] = None
    defaults: Annotated[ProviderDefaults, Field(description="Per-provider defaults.")] = Field(
        default_factory=ProviderDefaults
    )


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
