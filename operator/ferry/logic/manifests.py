"""Render the Kubernetes objects the local provider applies for an endpoint.

Pure functions from an `InferenceEndpoint` to Deployment, Service and
PodDisruptionBudget dicts, ready for server-side apply, plus the temporary surge
Deployment a drain under an external autoscaler adds (`ferry.draining`, D10).
Owner references make the objects go with the endpoint (deletionPolicy Delete);
the local provider strips them for Orphan.

Every pod carries the readiness gate `ferry.dev/in-service`: Ferry sets it True as
a pod appears and False to take a doomed pod out of service before it is evicted.
"""

from __future__ import annotations

from typing import Any

from ferry.api.v1alpha1 import platforms, types
from ferry.logic import defaults, drains, gpus, naming, serverenv, spot

# Every cloud spells "this node is spot" differently; Ferry honours them all.
SPOT_LABELS = spot.SPOT_LABELS
# Taints spot and GPU nodes commonly carry. Tolerating a taint only permits
# scheduling there; node affinity decides where pods actually go.
SPOT_TAINT_KEYS = (
    "ferry.dev/spot",
    "cloud.google.com/gke-spot",
    "cloud.google.com/gke-preemptible",
    "karpenter.sh/capacity-type",
    "kubernetes.azure.com/scalesetpriority",
)
GPU_TAINT_KEY = "nvidia.com/gpu"
# Model servers need time to load weights before the first readiness check.
STARTUP_SECONDS = 1800
STARTUP_PERIOD_SECONDS = 5
TERMINATION_SLACK_SECONDS = 5
#: Pods (and the selector) of the temporary surge Deployment carry this label.
SURGE_LABEL = "ferry.dev/surge"


def owner_reference(ep: types.InferenceEndpoint) -> dict[str, Any]:
    """The controller reference that makes an object go with `ep`."""
    return {
        "apiVersion": types.API_VERSION,
        "kind": "InferenceEndpoint",
        "name": ep.metadata.name,
        "uid": ep.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _metadata(ep: types.InferenceEndpoint, name: str) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": ep.metadata.namespace,
        "labels": naming.endpoint_labels(name, ep.metadata.name, ep.metadata.uid),
    }
    if ep.metadata.uid:
        meta["ownerReferences"] = [owner_reference(ep)]
    return meta


def _affinity(spec: types.InferenceEndpointSpec) -> dict[str, Any]:
    fallback = defaults.gpu_fallback(spec)
    wanted = [spec.gpu.type, *fallback]
    gpu_expr = {"key": gpus.PRODUCT_LABEL, "operator": "In", "values": gpus.products(wanted)}
    policy = defaults.spot_policy(spec)
    if policy == "spot":
        # Terms are ORed: any one of the clouds' spot labels will do.
        terms = [{"matchExpressions": [gpu_expr, _label_in(k, v)]} for k, v in SPOT_LABELS]
    elif policy == "on-demand":
        not_spot = [{"key": k, "operator": "NotIn", "values": [v]} for k, v in SPOT_LABELS]
        terms = [{"matchExpressions": [gpu_expr, *not_spot]}]
    else:
        terms = [{"matchExpressions": [gpu_expr]}]
    preferred: list[dict[str, Any]] = []
    # The first GPU type is preferred over the fallbacks, in their order.
    if fallback:
        for rank, gpu in enumerate(wanted):
            preferred.append(
                {
                    "weight": max(1, 100 - 10 * rank),
                    "preference": {
                        "matchExpressions": [
                            {
                                "key": gpus.PRODUCT_LABEL,
                                "operator": "In",
                                "values": list(gpus.PRODUCTS[gpu]),
                            }
                        ]
                    },
                }
            )
    if policy == "spot-with-fallback":
        preferred.extend(
            {
                "weight": 50,
                "preference": {"matchExpressions": [{"key": k, "operator": "In", "values": [v]}]},
            }
            for k, v in SPOT_LABELS
        )
    node_affinity: dict[str, Any] = {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}
    }
    if preferred:
        node_affinity["preferredDuringSchedulingIgnoredDuringExecution"] = preferred
    return {"nodeAffinity": node_affinity}


def _label_in(key: str, value: str) -> dict[str, Any]:
    return {"key": key, "operator": "In", "values": [value]}


def _tolerations(spec: types.InferenceEndpointSpec) -> list[dict[str, Any]]:
    tolerations = [{"key": GPU_TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}]
    if defaults.spot_policy(spec) != "on-demand":
        tolerations.extend(
            {"key": key, "operator": "Exists", "effect": "NoSchedule"} for key in SPOT_TAINT_KEYS
        )
    return tolerations


def _env(spec: types.InferenceEndpointSpec) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = []
    uri = serverenv.model_reference(spec)
    if uri:
        env.append({"name": platforms.ENV_MODEL, "value": uri})
    env.append({"name": platforms.ENV_PORT, "value": str(defaults.server_port(spec))})
    env.append(
        {"name": platforms.ENV_DRAIN_GRACE_S, "value": str(defaults.drain_grace_seconds(spec))}
    )
    for var in defaults.server_env(spec):
        if var.value_from is not None:
            ref = var.value_from.secret_key_ref
            env.append(
                {
                    "name": var.name,
                    "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}},
                }
            )
        else:
            env.append({"name": var.name, "value": var.value or ""})
    return env


def progress_deadline_seconds(spec: types.InferenceEndpointSpec) -> int:
    """D20: at least capacityTimeout plus the startup probe's allowance, so the
    Deployment does not report ProgressDeadlineExceeded while Ferry's own capacity
    wait still runs."""
    capacity = defaults.capacity_timeout_seconds(spec) or defaults.CAPACITY_TIMEOUT_SECONDS
    return int(capacity) + STARTUP_SECONDS + 60


def deployment(ep: types.InferenceEndpoint, name: str, replicas: int | None) -> dict[str, Any]:
    """The Deployment running `replicas` model-server pods for `ep`.

    `replicas` None leaves the count out: another field manager (Ferry's autoscaler,
    or an HPA/KEDA under `scaling.autoscaler: external`) owns it (D10).
    """
    spec = ep.spec
    port = defaults.server_port(spec)
    gpu_count = str(spec.gpu.count)
    probe_get = {"path": "/readyz", "port": "http"}
    container: dict[str, Any] = {
        "name": "server",
        "image": spec.server.image,
        "args": defaults.server_args(spec),
        "env": _env(spec),
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
        "resources": {
            "requests": {gpus.GPU_RESOURCE: gpu_count},
            "limits": {gpus.GPU_RESOURCE: gpu_count},
        },
        "readinessProbe": {"httpGet": probe_get, "periodSeconds": 5, "failureThreshold": 2},
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "http"},
            "periodSeconds": 10,
            "failureThreshold": 6,
        },
        "startupProbe": {
            "httpGet": {"path": "/healthz", "port": "http"},
            "periodSeconds": STARTUP_PERIOD_SECONDS,
            "failureThreshold": STARTUP_SECONDS // STARTUP_PERIOD_SECONDS,
        },
    }
    pod_labels = naming.endpoint_labels(name, ep.metadata.name, ep.metadata.uid)
    spec_body: dict[str, Any] = {} if replicas is None else {"replicas": replicas}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(ep, name),
        "spec": {
            **spec_body,
            "selector": {"matchLabels": naming.selector_labels(name)},
            "progressDeadlineSeconds": progress_deadline_seconds(spec),
            # Never take a serving replica away before its replacement is ready.
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": {
                    "containers": [container],
                    # Ferry takes a doomed pod out of service with this gate before
                    # evicting it; kubelets keep a pod unready until it is True.
                    "readinessGates": [{"conditionType": drains.GATE}],
                    "affinity": _affinity(spec),
                    "tolerations": _tolerations(spec),
                    # The server drains on SIGTERM within drainGraceSeconds; the
                    # slack covers process exit after the last request.
                    "terminationGracePeriodSeconds": defaults.drain_grace_seconds(spec)
                    + TERMINATION_SLACK_SECONDS,
                },
            },
        },
    }


def service(ep: types.InferenceEndpoint, name: str) -> dict[str, Any]:
    """The ClusterIP Service in front of the endpoint's pods."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(ep, name),
        "spec": {
            "type": "ClusterIP",
            "selector": naming.selector_labels(name),
            "ports": [
                {
                    "name": "http",
                    "port": defaults.server_port(ep.spec),
                    "targetPort": "http",
                    "protocol": "TCP",
                }
            ],
        },
    }


def pod_disruption_budget(
    ep: types.InferenceEndpoint, name: str, normal_replicas: int
) -> dict[str, Any]:
    """Voluntary disruptions (node drains) take one replica at a time, and never the
    only one before its replacement is Ready.

    With one replica, `maxUnavailable: 1` would let a drain evict it at once, so it
    is `minAvailable: 1`: the eviction waits until the replacement Ferry starts on
    seeing the drain (a surge above the count) is Ready. Pods out of service (Ferry's
    readiness gate False, so not Ready) may always go: `AlwaysAllow`.
    """
    budget: dict[str, Any] = {"minAvailable": 1} if normal_replicas <= 1 else {"maxUnavailable": 1}
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(ep, name),
        "spec": {
            **budget,
            "selector": {"matchLabels": naming.selector_labels(name)},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


def surge_name(name: str) -> str:
    """The temporary surge Deployment's name for the endpoint's Deployment `name`."""
    return naming.fit(name, prefix="", max_length=naming.MAX_NAME - 6) + "-surge"


def surge_deployment(
    ep: types.InferenceEndpoint, name: str, replicas: int, avoid_nodes: list[str]
) -> dict[str, Any]:
    """The temporary second Deployment a drain adds under an external autoscaler (D10).

    Same pod template (so the Service and the PodDisruptionBudget select its pods),
    plus the surge label in its own selector (the main Deployment never adopts them)
    and a required node anti-affinity for the noticed nodes.
    """
    base = deployment(ep, name, replicas)
    base["metadata"]["name"] = surge_name(name)
    base["metadata"]["labels"] = {**base["metadata"]["labels"], SURGE_LABEL: "true"}
    spec = base["spec"]
    spec["selector"] = {"matchLabels": {**naming.selector_labels(name), SURGE_LABEL: "true"}}
    template = spec["template"]
    template["metadata"]["labels"] = {**template["metadata"]["labels"], SURGE_LABEL: "true"}
    if avoid_nodes:
        away = {"key": "kubernetes.io/hostname", "operator": "NotIn", "values": sorted(avoid_nodes)}
        required = template["spec"]["affinity"]["nodeAffinity"][
            "requiredDuringSchedulingIgnoredDuringExecution"
        ]
        for term in required["nodeSelectorTerms"]:
            term["matchExpressions"] = [*term["matchExpressions"], away]
    return base


def service_url(namespace: str, name: str, port: int) -> str:
    """The in-cluster URL of the Service `name`."""
    return f"http://{name}.{namespace}.svc.cluster.local:{port}"
