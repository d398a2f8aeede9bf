"""The per-backend field rules (decisions.md D8) as data, and the CEL generated from them.

Every spec field is either honoured by the endpoint's backend or rejected at
`kubectl apply`, with the field and the backend named. The tables below say, per
(field, backend), what is rejected, required or bounded; `endpoint_rules()` turns
them into `x-kubernetes-validations` entries on `InferenceEndpointSpec`, one rule
per row and backend, each with a `fieldPath` so kubectl names the field. The GPU
rules come from the tables in `platforms`, which the provider mappers also read.

Rules are kept simple (a provider test, a `has()` chain, one comparison) so the API
server's CEL cost estimate stays far below its budget.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from ferry.api.v1alpha1 import platforms

Rule = dict[str, str]

#: Kubernetes/Go durations (a subset of Go's grammar): one or more <number><unit>
#: with units h, m, s, ms and an optional decimal fraction: 500ms, 4s, 1.5m, 1h30m.
#: Digits are bounded so that no accepted value overflows Go's time.Duration, which
#: the CEL rules' `duration()` parses; `[.]` rather than an escaped dot, so the same
#: text is a valid regex in OpenAPI, CEL and Python. `ferry.logic.durations` reads it.
DURATION_PATTERN: Final = "^([0-9]{1,6}([.][0-9]{1,6})?(h|ms|m|s))+$"
DURATION_MAX_LENGTH: Final = 16


def cel(
    rule: str,
    message: str,
    *,
    field_path: str | None = None,
    reason: str | None = None,
    message_expression: str | None = None,
) -> Rule:
    """One `x-kubernetes-validations` entry; `field_path` makes kubectl name the field.

    `reason` is one of FieldValueInvalid (the default), FieldValueForbidden,
    FieldValueRequired or FieldValueDuplicate; `message_expression` is a CEL string
    expression shown instead of `message` when it evaluates.
    """
    entry = {"rule": rule, "message": message}
    if message_expression:
        entry["messageExpression"] = message_expression
    if field_path:
        entry["fieldPath"] = field_path
    if reason:
        entry["reason"] = reason
    return entry


@dataclass(frozen=True)
class Rejected:
    """`field` (a wire path under spec) is rejected by each backend in `why`."""

    field: str
    why: Mapping[str, str]


@dataclass(frozen=True)
class Required:
    """`field` must be set for each backend in `what` (the text says what it is for)."""

    field: str
    what: Mapping[str, str]


@dataclass(frozen=True)
class DurationBound:
    """A duration field's range on one backend, as Go durations."""

    field: str
    provider: str
    minimum: str
    maximum: str
    what: str


@dataclass(frozen=True)
class Maximum:
    """An integer field's upper bound on one backend."""

    field: str
    provider: str
    maximum: int
    what: str


_SCALES_ITSELF = "the platform's autoscaler decides"

#: The D8 table's "rejected" cells.
REJECTED: Final[tuple[Rejected, ...]] = (
    Rejected(
        "model.uri",
        {"replicate": "Replicate runs models published on Replicate: use model.providerRef"},
    ),
    Rejected(
        "model.providerRef",
        {
            "local": "use model.uri",
            "runpod": "use model.uri; workers run Ferry's model server",
            "modal": "use model.uri; Modal runs Ferry's model server",
        },
    ),
    Rejected("server.image", {"replicate": "Replicate runs the model's own image"}),
    Rejected("server.env", {"replicate": "a Replicate deployment takes no environment"}),
    Rejected(
        "server.port",
        {
            "runpod": "queue workers listen on nothing",
            "modal": "Modal serves the ASGI app itself",
            "replicate": "Replicate serves the model itself",
        },
    ),
    Rejected(
        "server.args",
        {
            "runpod": "the worker's command is fixed",
            "modal": "Modal runs the server's ASGI app, not its command",
            "replicate": "Replicate runs the model's own image",
        },
    ),
    Rejected("gpu.fallback", {"replicate": "a deployment runs on one hardware SKU"}),
    Rejected(
        "scaling.targetInflightRequests",
        {"replicate": "Replicate scales deployments on its own signal"},
    ),
    Rejected(
        "scaling.targetQueueDelay",
        {
            "local": "Ferry's autoscaler targets in-flight requests: use targetInflightRequests",
            "modal": "Modal scales on in-flight inputs: use targetInflightRequests",
            "replicate": "Replicate scales deployments on its own signal",
        },
    ),
    Rejected("scaling.scaleDownDelay", {"replicate": "Replicate scales down on its own"}),
    Rejected(
        "scaling.scaleToZeroAfter",
        {
            "runpod": "use scaleDownDelay (RunPod's idle timeout) with minReplicas: 0",
            "modal": "use scaleDownDelay (Modal's scaledown window) with minReplicas: 0",
            "replicate": "set minReplicas: 0; Replicate scales idle deployments down itself",
        },
    ),
    Rejected(
        "scaling.scaleUpDelay",
        {"runpod": _SCALES_ITSELF, "modal": _SCALES_ITSELF, "replicate": _SCALES_ITSELF},
    ),
    Rejected(
        "scaling.bufferReplicas",
        {"runpod": _SCALES_ITSELF, "replicate": _SCALES_ITSELF},
    ),
    Rejected(
        "scaling.autoscaler",
        {
            "runpod": "RunPod's autoscaler sets the workers",
            "modal": "Modal's autoscaler sets the containers",
            "replicate": "Replicate's autoscaler sets the instances",
        },
    ),
    Rejected(
        "scaling.capacityTimeout",
        {
            "modal": "Modal queues inputs until capacity arrives and reports no shortage",
            "replicate": "Replicate queues predictions and reports no shortage",
        },
    ),
    Rejected(
        "spot",
        {
            "runpod": "RunPod chooses the capacity",
            "modal": "Modal chooses the capacity",
            "replicate": "Replicate chooses the capacity",
        },
    ),
)

#: The D8 table's "required" cells.
REQUIRED: Final[tuple[Required, ...]] = (
    Required(
        "model.uri",
        {
            "local": "the model the server loads",
            "runpod": "the model the server loads",
            "modal": "the model the server loads",
        },
    ),
    Required(
        "model.providerRef",
        {"replicate": "the Replicate model as owner/model or owner/model:version"},
    ),
    Required(
        "server.image",
        {
            "local": "the model-server image the pods run",
            "runpod": "the Ferry model-server image (or one built from it) the workers run",
        },
    ),
)

#: Duration ranges per backend (decisions.md D9). Ranges common to every backend
#: that honours a field live on the field's type.
DURATION_BOUNDS: Final[tuple[DurationBound, ...]] = (
    DurationBound(
        "scaling.targetQueueDelay", "runpod", "500ms", "1h", "RunPod's QUEUE_DELAY scaler"
    ),
    DurationBound(
        "scaling.scaleDownDelay",
        "runpod",
        "1s",
        "1h",
        "RunPod's idle timeout; whole seconds, rounded up",
    ),
    DurationBound(
        "scaling.scaleDownDelay",
        "modal",
        "2s",
        "1h",
        "Modal's scaledown_window; whole seconds, rounded up",
    ),
    DurationBound("scaling.scaleDownDelay", "local", "0s", "1h", "the scale-down window"),
)

#: Integer upper bounds per backend.
MAXIMA: Final[tuple[Maximum, ...]] = (
    Maximum("scaling.minReplicas", "replicate", 5, "Replicate's min_instances limit"),
    Maximum("scaling.maxReplicas", "replicate", 20, "Replicate's max_instances limit"),
    Maximum(
        "scaling.targetInflightRequests",
        "modal",
        500,
        "Modal's target_inputs limit",
    ),
)

#: Autoscaling fields that mean nothing when an external autoscaler owns replicas.
EXTERNAL_AUTOSCALER_EXCLUDES: Final = (
    "targetInflightRequests",
    "scaleDownDelay",
    "scaleUpDelay",
    "bufferReplicas",
    "scaleToZeroAfter",
)


def _has(*paths: str) -> str:
    """`has()` for every step of each path, so an absent parent is not an error."""
    steps: list[str] = []
    for path in paths:
        parts = path.split(".")
        for i in range(len(parts)):
            step = f"has(self.{'.'.join(parts[: i + 1])})"
            if step not in steps:
                steps.append(step)
    return " && ".join(steps)


def _not(provider: str) -> str:
    return f"self.provider != '{provider}'"


def _cel_list(values: tuple[str, ...]) -> str:
    return "[" + ", ".join(f"'{v}'" for v in values) + "]"


def rejection_message(field: str, provider: str, why: str) -> str:
    """The message kubectl shows for a field `provider` does not support."""
    return f"{field} is not supported by the {provider} provider ({why}); remove it"


def _rejections() -> list[Rule]:
    return [
        cel(
            f"{_not(provider)} || !({_has(row.field)})",
            rejection_message(row.field, provider, why),
            field_path=f".{row.field}",
            reason="FieldValueForbidden",
        )
        for row in REJECTED
        for provider, why in row.why.items()
    ]


def _requirements() -> list[Rule]:
    return [
        cel(
            f"{_not(provider)} || ({_has(row.field)})",
            f"{row.field} is required by the {provider} provider: {what}",
            field_path=f".{row.field}",
            reason="FieldValueRequired",
        )
        for row in REQUIRED
        for provider, what in row.what.items()
    ]


def _bounds() -> list[Rule]:
    rules: list[Rule] = []
    for b in DURATION_BOUNDS:
        value = f"duration(self.{b.field})"
        rules.append(
            cel(
                f"{_not(b.provider)} || !({_has(b.field)})"
                f" || !self.{b.field}.matches('{DURATION_PATTERN}')"
                f" || ({value} >= duration('{b.minimum}') && {value} <= duration('{b.maximum}'))",
                f"{b.field} must be between {b.minimum} and {b.maximum} on the {b.provider}"
                f" provider ({b.what})",
                field_path=f".{b.field}",
            )
        )
    for m in MAXIMA:
        rules.append(
            cel(
                f"{_not(m.provider)} || !({_has(m.field)}) || self.{m.field} <= {m.maximum}",
                f"{m.field} must be at most {m.maximum} on the {m.provider} provider ({m.what})",
                field_path=f".{m.field}",
            )
        )
    return rules


def _runpod_scalers() -> list[Rule]:
    inflight = "scaling.targetInflightRequests"
    return [
        cel(
            f"{_not('runpod')} || !({_has(inflight, 'scaling.targetQueueDelay')})",
            "scaling.targetInflightRequests and scaling.targetQueueDelay are two RunPod scalers"
            " (REQUEST_COUNT and QUEUE_DELAY); set one of them on the runpod provider",
            field_path=".scaling.targetQueueDelay",
            reason="FieldValueForbidden",
        ),
        cel(
            f"{_not('runpod')} || !({_has(inflight, 'scaling.scaleDownDelay')})",
            "scaling.scaleDownDelay is not supported with scaling.targetInflightRequests by the"
            " runpod provider (its REQUEST_COUNT scaler takes no idle timeout); remove one",
            field_path=".scaling.scaleDownDelay",
            reason="FieldValueForbidden",
        ),
    ]


def _gpu_list(provider: str) -> str:
    return ", ".join(platforms.offered_gpus(provider))


def _gpu_rules() -> list[Rule]:
    rules: list[Rule] = []
    for provider in ("runpod", "modal"):
        offered = platforms.offered_gpus(provider)
        rules.append(
            cel(
                f"{_not(provider)} || self.gpu.type in {_cel_list(offered)}",
                f"gpu.type is not sold by the {provider} provider; it offers {_gpu_list(provider)}",
                field_path=".gpu.type",
                message_expression=(
                    f"'gpu.type ' + self.gpu.type + ' is not sold by the {provider} provider;"
                    f" it offers {_gpu_list(provider)}'"
                ),
            )
        )
        rules.append(
            cel(
                f"{_not(provider)} || !({_has('gpu.fallback')})"
                f" || self.gpu.fallback.all(g, g in {_cel_list(offered)})",
                f"gpu.fallback lists a GPU the {provider} provider does not sell; it offers"
                f" {_gpu_list(provider)}",
                field_path=".gpu.fallback",
            )
        )
    counts: dict[str, list[int]] = {}
    for gpu, count in platforms.REPLICATE_HARDWARE:
        counts.setdefault(gpu, []).append(count)
    pairs = " || ".join(
        f"(self.gpu.type == '{gpu}' && self.gpu.count in {sorted(n)})" for gpu, n in counts.items()
    )
    offered_pairs = ", ".join(
        f"{gpu} x{count} ({sku})" for (gpu, count), sku in platforms.REPLICATE_HARDWARE.items()
    )
    rules.append(
        cel(
            f"{_not('replicate')} || {pairs}",
            f"gpu.type and gpu.count match no hardware of the replicate provider; it offers"
            f" {offered_pairs}",
            field_path=".gpu",
            message_expression=(
                # string(int) has no size bound for the cost estimate; gpu.count is 1-8.
                "'gpu.type ' + self.gpu.type + ' with gpu.count '"
                " + ['1', '2', '3', '4', '5', '6', '7', '8'][self.gpu.count - 1]"
                f" + ' matches no hardware of the replicate provider; it offers {offered_pairs}'"
            ),
        )
    )
    return rules


def endpoint_rules() -> list[Rule]:
    """Every per-backend rule of `InferenceEndpointSpec`, in table order."""
    return [
        *_requirements(),
        *_rejections(),
        *_bounds(),
        *_runpod_scalers(),
        *_gpu_rules(),
    ]


def reserved_env_rule() -> Rule:
    """The rule on each `server.env` item that keeps the operator's names (D19)."""
    names = platforms.RESERVED_ENV_NAMES
    listed = ", ".join(names)
    return cel(
        f"!(self.name in {_cel_list(names)})",
        f"this name is reserved: the operator sets {listed}; other FERRY_* names are yours",
        field_path=".name",
        reason="FieldValueForbidden",
        message_expression=(
            f"self.name + ' is reserved: the operator sets {listed}; other FERRY_* names are yours'"
        ),
    )


#: ProviderConfig fields per provider: rejected where the table says why.
PROVIDER_CONFIG_REJECTED: Final[tuple[Rejected, ...]] = (
    Rejected("baseUrl", {"local": "local endpoints call no platform API"}),
    Rejected(
        "inferenceBaseUrl",
        {
            "local": "local endpoints are Services in this cluster",
            "modal": "Modal returns each endpoint's URL itself",
            "replicate": "Replicate's client has one base URL: set baseUrl",
        },
    ),
    Rejected(
        "defaults.regions",
        {
            "local": "the cluster's nodes decide",
            "modal": "only RunPod takes preferred data centers",
            "replicate": "only RunPod takes preferred data centers",
        },
    ),
)


def provider_config_rules() -> list[Rule]:
    """Every per-provider rule of `ProviderConfigSpec`."""
    return [
        *(
            cel(
                f"{_not(provider)} || !({_has(row.field)})",
                rejection_message(row.field, provider, why),
                field_path=f".{row.field}",
                reason="FieldValueForbidden",
            )
            for row in PROVIDER_CONFIG_REJECTED
            for provider, why in row.why.items()
        ),
        # The replicate client appends /v1/... to its base URL itself.
        cel(
            f"{_not('replicate')} || !has(self.baseUrl)"
            " || !(self.baseUrl.endsWith('/v1') || self.baseUrl.endsWith('/v1/'))",
            "baseUrl must not end in /v1 for the replicate provider (its client adds /v1/...);"
            " use the API's root, e.g. https://api.replicate.com",
            field_path=".baseUrl",
            reason="FieldValueInvalid",
        ),
    ]


def rejected_fields(provider: str) -> tuple[str, ...]:
    """Endpoint spec fields (wire paths) that `provider` rejects."""
    return tuple(row.field for row in REJECTED if provider in row.why)
