"""Pure parts of ferry.devcluster: PKI, node manifests, kubeconfig, process groups."""

from __future__ import annotations

import base64
import io
import ipaddress
import os
import time
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ferry.devcluster import cluster, kubeconfig, nodes, pki, supervising


@pytest.fixture(scope="module")
def certs() -> pki.Pki:
    return pki.generate()


def _cert(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def test_leaf_certificates_are_signed_by_the_ca(certs: pki.Pki) -> None:
    ca = _cert(certs.ca.cert_pem)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for pair in (certs.serving, certs.admin):
        _cert(pair.cert_pem).verify_directly_issued_by(ca)


def test_serving_certificate_names_loopback_and_the_service_ip(certs: pki.Pki) -> None:
    san = (
        _cert(certs.serving.cert_pem)
        .extensions.get_extension_for_class(x509.SubjectAlternativeName)
        .value
    )
    assert set(san.get_values_for_type(x509.IPAddress)) >= {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("10.0.0.1"),
    }
    assert "localhost" in san.get_values_for_type(x509.DNSName)


def test_admin_certificate_is_a_system_masters_client(certs: pki.Pki) -> None:
    cert = _cert(certs.admin.cert_pem)
    orgs = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    assert orgs == ["system:masters"]
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_service_account_keys_are_a_matching_rsa_pair(certs: pki.Pki) -> None:
    private = serialization.load_pem_private_key(certs.service_account.key_pem, None)
    public = serialization.load_pem_public_key(certs.service_account.public_pem)
    assert isinstance(private, rsa.RSAPrivateKey)
    assert isinstance(public, rsa.RSAPublicKey)
    signature = private.sign(b"token", padding.PKCS1v15(), SHA256())
    public.verify(signature, b"token", padding.PKCS1v15(), SHA256())


def test_write_keeps_private_keys_private(certs: pki.Pki, tmp_path: Path) -> None:
    files = pki.write(certs, tmp_path)
    assert files.ca_cert.read_bytes() == certs.ca.cert_pem
    assert files.sa_public.read_bytes() == certs.service_account.public_pem
    for key in (files.ca_key, files.serving_key, files.admin_key, files.sa_private):
        assert key.stat().st_mode & 0o777 == 0o600


# --- nodes ------------------------------------------------------------------------


def _by_name(pools: tuple[nodes.NodePool, ...]) -> dict[str, dict[str, object]]:
    return {m["metadata"]["name"]: m for m in nodes.manifests(pools)}


def test_default_pools_have_spot_on_demand_and_h100() -> None:
    ms = nodes.manifests(nodes.DEFAULT_POOLS)
    kinds = {
        (
            m["metadata"]["labels"]["ferry.dev/gpu-type"],
            m["metadata"]["labels"]["karpenter.sh/capacity-type"],
        )
        for m in ms
    }
    assert kinds == {("L4", "on-demand"), ("L4", "spot"), ("H100", "on-demand")}
    assert all(m["metadata"]["labels"]["type"] == "kwok" for m in ms)
    assert all(m["metadata"]["annotations"]["kwok.x-k8s.io/node"] == "fake" for m in ms)


@pytest.mark.parametrize(
    ("pool", "labels", "taints"),
    [
        pytest.param(
            nodes.NodePool("od", "A100-80GB", gpus_per_node=4),
            {
                "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB",
                "nvidia.com/gpu.count": "4",
                "karpenter.sh/capacity-type": "on-demand",
                "eks.amazonaws.com/capacityType": "ON_DEMAND",
                "ferry.dev/capacity-type": "on-demand",
                "kubernetes.io/hostname": "od-0",
            },
            [],
            id="on-demand",
        ),
        pytest.param(
            nodes.NodePool("sp", "L4", capacity_type="spot"),
            {
                "nvidia.com/gpu.product": "NVIDIA-L4",
                "karpenter.sh/capacity-type": "spot",
                "eks.amazonaws.com/capacityType": "SPOT",
                "cloud.google.com/gke-spot": "true",
                "ferry.dev/pool": "sp",
            },
            [{"key": "ferry.dev/spot", "value": "true", "effect": "NoSchedule"}],
            id="spot",
        ),
    ],
)
def test_node_manifest_labels_and_taints(
    pool: nodes.NodePool, labels: dict[str, str], taints: list[dict[str, str]]
) -> None:
    m = nodes.node_manifest(pool, 0)
    assert labels.items() <= m["metadata"]["labels"].items()
    assert m["spec"].get("taints", []) == taints
    if pool.capacity_type == "on-demand":
        assert "cloud.google.com/gke-spot" not in m["metadata"]["labels"]


def test_node_manifest_advertises_gpus_as_capacity_and_allocatable() -> None:
    m = nodes.node_manifest(nodes.NodePool("p", "H100", gpus_per_node=8), 1)
    assert m["metadata"]["name"] == "p-1"
    for field in ("capacity", "allocatable"):
        assert m["status"][field]["nvidia.com/gpu"] == "8"
        assert m["status"][field]["pods"] == "110"


def test_pools_expand_to_count_nodes() -> None:
    names = list(_by_name((nodes.NodePool("a", "L4", count=2), nodes.NodePool("b", "H100"))))
    assert names == ["a-0", "a-1", "b-0"]


@pytest.mark.parametrize(
    "pools",
    [
        pytest.param((nodes.NodePool("a", "B200"),), id="unknown-gpu"),
        pytest.param((nodes.NodePool("a", "L4"), nodes.NodePool("a", "H100")), id="dup-name"),
    ],
)
def test_invalid_pools_are_rejected(pools: tuple[nodes.NodePool, ...]) -> None:
    with pytest.raises(ValueError, match="a"):
        nodes.manifests(pools)


# --- kubeconfig -------------------------------------------------------------------


def test_kubeconfig_embeds_credentials_and_round_trips(tmp_path: Path) -> None:
    doc = kubeconfig.render("https://127.0.0.1:6443", b"CA", b"CERT", b"KEY")
    path = kubeconfig.write(doc, tmp_path / "kc")
    loaded = yaml.safe_load(path.read_text())
    assert base64.b64decode(loaded["clusters"][0]["cluster"]["certificate-authority-data"]) == b"CA"
    user = loaded["users"][0]["user"]
    assert base64.b64decode(user["client-certificate-data"]) == b"CERT"
    assert base64.b64decode(user["client-key-data"]) == b"KEY"
    assert kubeconfig.server_of(path) == "https://127.0.0.1:6443"
    assert path.stat().st_mode & 0o777 == 0o600


def test_server_of_rejects_a_kubeconfig_without_context(tmp_path: Path) -> None:
    (tmp_path / "kc").write_text("apiVersion: v1\nkind: Config\n")
    with pytest.raises(ValueError, match="no usable current context"):
        kubeconfig.server_of(tmp_path / "kc")


# --- process supervision ----------------------------------------------------------


def test_free_ports_are_distinct() -> None:
    ports = supervising.free_ports(6)
    assert len(set(ports)) == 6


def test_a_component_that_dies_is_reported_with_its_log(tmp_path: Path) -> None:
    proc = supervising.Process(
        "boom", ["sh", "-c", "echo cannot bind port; exit 3"], tmp_path / "boom.log"
    )
    proc.start()
    try:
        with pytest.raises(supervising.StartupError, match=r"(?s)status 3.*cannot bind port"):
            supervising.wait_for(
                proc, "ready", lambda: False, supervising.Progress(io.StringIO()), timeout=10
            )
    finally:
        proc.stop()


def test_stop_kills_the_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child"
    # The shell ignores SIGTERM, so only the group SIGKILL after the timeout ends it,
    # and its background child must go with it.
    proc = supervising.Process(
        "stubborn",
        ["sh", "-c", f"trap '' TERM; sleep 60 & echo $! > {pidfile}; wait"],
        tmp_path / "stubborn.log",
    )
    proc.start()
    deadline = time.monotonic() + 5
    while not pidfile.exists() or not pidfile.read_text().strip():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    child = int(pidfile.read_text())
    proc.stop(timeout=0.5)
    assert proc.exit_code() is not None
    assert not _running(child)


def _running(pid: int) -> bool:
    # A killed child may linger as a zombie when init does not reap (containers).
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


# --- existing cluster ---------------------------------------------------------------


def test_use_existing_cluster_starts_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = kubeconfig.write(
        kubeconfig.render("https://10.1.2.3:443", b"", b"", b""), tmp_path / "k"
    )
    monkeypatch.setenv("USE_EXISTING_CLUSTER", "true")
    monkeypatch.setenv("KUBECONFIG", f"{path}{os.pathsep}/elsewhere")
    with cluster.connect_or_start() as c:
        assert isinstance(c, cluster.ExistingCluster)
        assert c.kubeconfig_path == path
        assert c.server_url == "https://10.1.2.3:443"


def test_kwok_stages_leave_readiness_gates_to_their_owner() -> None:
    # D16: a simulated pod is Ready only when every readiness gate is True, as a
    # kubelet computes it; kwok's default stage set every gate True itself.
    from importlib import resources

    import yaml

    text = resources.files("ferry.devcluster").joinpath("kwok-stages.yaml").read_text()
    stages = {d["metadata"]["name"]: d for d in yaml.safe_load_all(text) if d}
    ready = stages["pod-ready"]["spec"]["next"]["statusTemplate"]
    assert "readinessGates" in ready  # Ready is computed from them...
    assert "type: {{ .conditionType" not in ready  # ...and never sets them
    gates = stages["pod-readiness-gates"]["spec"]
    assert gates["selector"]["matchExpressions"][-1]["values"] == ["false"]
    assert "Ready" in gates["next"]["statusTemplate"]
