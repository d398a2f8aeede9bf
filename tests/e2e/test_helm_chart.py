"""The Helm chart, installed with real helm: CRDs, RBAC that is enough, the operator.

Pods on this control plane are simulated, so the chart's operator Deployment never
runs real code; instead the operator runs here as a process with a token of the
chart's ServiceAccount, which proves the chart's RBAC is sufficient for the job.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from ferry import devcluster
from tests.integration import kit
from tests.integration.test_lifecycle import ready

CHART = Path(__file__).resolve().parents[2] / "charts" / "ferry"


def helm(cluster: devcluster.Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(cluster.helm_path), "--kubeconfig", str(cluster.kubeconfig_path), *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=180,
    )


def test_chart_lints_and_renders(cluster: devcluster.Cluster) -> None:
    helm(cluster, "lint", str(CHART), "--strict")
    rendered = helm(
        cluster, "template", "ferry", str(CHART), "--set", "watchNamespaces={a,b}"
    ).stdout
    kinds = [d["kind"] for d in yaml.safe_load_all(rendered) if d]
    assert sorted(kinds) == sorted(
        ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Deployment", "Service"]
    )
    assert "--namespace=a" in rendered
    assert "--namespace=b" in rendered


@pytest.fixture
def release(cluster: devcluster.Cluster) -> Iterator[str]:
    ns = kit.unique("ferry-system")
    helm(
        cluster,
        "install",
        "ferry",
        str(CHART),
        "--namespace",
        ns,
        "--create-namespace",
        "--wait",
        "--timeout",
        "120s",
    )
    yield ns
    helm(cluster, "uninstall", "ferry", "--namespace", ns)
    cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def test_installed_chart_rbac_runs_the_operator(
    cluster: devcluster.Cluster, release: str, tmp_path: Path
) -> None:
    status = helm(cluster, "status", "ferry", "--namespace", release, "-o", "yaml").stdout
    assert yaml.safe_load(status)["info"]["status"] == "deployed"
    crds = cluster.kubectl("get", "crd", "-o", "name").stdout
    assert "inferenceendpoints.ferry.dev" in crds

    # What drains and the autoscaler need beyond the endpoint lifecycle, granted to
    # the chart's ServiceAccount (and nothing broader on pods or nodes). Asked as a
    # SubjectAccessReview: kubectl's can-i cannot name a group the server does not
    # serve (KEDA is not installed here).
    who = f"system:serviceaccount:{release}:ferry-operator"

    def can(verb: str, group: str, resource: str, subresource: str = "") -> bool:
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": who,
                "groups": ["system:serviceaccounts", f"system:serviceaccounts:{release}"],
                "resourceAttributes": {
                    "verb": verb,
                    "group": group,
                    "resource": resource,
                    "subresource": subresource,
                    "namespace": "anywhere",
                },
            },
        }
        out = cluster.kubectl(
            "create", "-f", "-", "-o", "jsonpath={.status.allowed}", input=yaml.safe_dump(review)
        )
        return out.stdout.strip() == "true"

    for verb, group, resource, sub in [
        ("get", "", "nodes", ""),
        ("list", "", "nodes", ""),
        ("watch", "", "nodes", ""),
        ("create", "", "pods", "eviction"),
        ("patch", "", "pods", "status"),
        ("patch", "", "pods", ""),
        ("list", "autoscaling", "horizontalpodautoscalers", ""),
        ("list", "keda.sh", "scaledobjects", ""),
    ]:
        assert can(verb, group, resource, sub), f"the chart does not let Ferry {verb} {resource}"
    for verb, resource in [("delete", "pods"), ("patch", "nodes"), ("update", "nodes")]:
        assert not can(verb, "", resource), f"the chart lets Ferry {verb} {resource}"

    token = cluster.kubectl(
        "create", "token", "ferry-operator", "-n", release, "--duration=1h"
    ).stdout.strip()
    config = yaml.safe_load(Path(cluster.kubeconfig_path).read_text())
    config["users"] = [{"name": "ferry-sa", "user": {"token": token}}]
    for ctx in config["contexts"]:
        ctx["context"]["user"] = "ferry-sa"
    sa_kubeconfig = tmp_path / "sa.kubeconfig"
    sa_kubeconfig.write_text(yaml.safe_dump(config))
    sa_cluster = devcluster.ExistingCluster(sa_kubeconfig, cluster.bin_dir)

    app_ns = kit.unique("ferry-helm")
    cluster.kubectl("create", "namespace", app_ns)
    op = kit.Operator(sa_cluster, [app_ns], tmp_path / "operator.log")
    op.start()
    try:
        ns = kit.Namespace(cluster, app_ns)
        ns.apply(kit.endpoint("via-chart-rbac"))
        kit.wait_for(
            lambda: ready(ns, "via-chart-rbac"), "endpoint Ready under the chart's RBAC", timeout=90
        )
        # Under the chart's RBAC the operator watched nodes and pods and set the pods'
        # readiness gate (a pod is Ready only then).
        pods = ns.items("pods", "app.kubernetes.io/instance=via-chart-rbac")
        gates = [
            c["status"]
            for p in pods
            for c in p["status"].get("conditions", [])
            if c["type"] == "ferry.dev/in-service"
        ]
        assert gates == ["True"]
        ns.kubectl("delete", "inferenceendpoint", "via-chart-rbac", "--timeout=60s")
        assert "forbidden" not in op.logs().lower()
    finally:
        op.stop()
        cluster.kubectl("delete", "namespace", app_ns, "--wait=false", check=False)
