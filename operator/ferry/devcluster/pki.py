"""A throwaway certificate authority for one local control plane.

Owns key and certificate generation; `ferry.devcluster.cluster` calls `generate()`
once per start and writes the result with `write()`. Nothing here outlives the
cluster, so keys are small-ish, unencrypted, and valid for a day.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: The first address of --service-cluster-ip-range=10.0.0.0/16: in-cluster clients
#: reach the API server as `kubernetes.default` on it, so the serving cert names it.
SERVICE_IP = "10.0.0.1"
SERVING_DNS = ("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc")
SERVING_IPS = ("127.0.0.1", SERVICE_IP)


@dataclass(frozen=True)
class KeyPair:
    """A PEM certificate (empty for the service-account pair) and its PEM private key."""

    cert_pem: bytes
    key_pem: bytes
    public_pem: bytes = b""


@dataclass(frozen=True)
class Pki:
    """Everything the plane needs: CA, API serving cert, admin client, SA signing key."""

    ca: KeyPair
    serving: KeyPair
    admin: KeyPair
    service_account: KeyPair


def _key() -> rsa.RSAPrivateKey:
    # 2048 bits: generation is the slow part of start-up and these keys live minutes.
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _key_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def _sign(
    subject: x509.Name,
    key: rsa.RSAPrivateKey,
    issuer: x509.Name,
    issuer_key: rsa.RSAPrivateKey,
    extensions: list[tuple[x509.ExtensionType, bool]],
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        # Back-dated so that a clock a few seconds apart never yields "not yet valid".
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    for ext, critical in extensions:
        builder = builder.add_extension(ext, critical=critical)
    return builder.sign(issuer_key, hashes.SHA256())


def _leaf(
    cn: str,
    ca_name: x509.Name,
    ca_key: rsa.RSAPrivateKey,
    *,
    org: str | None = None,
    server: bool = False,
) -> KeyPair:
    key = _key()
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        # Kubernetes maps O= to the user's groups: system:masters bypasses RBAC.
        attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    exts: list[tuple[x509.ExtensionType, bool]] = [
        (x509.BasicConstraints(ca=False, path_length=None), True),
        (
            x509.KeyUsage(
                digital_signature=True,
                key_encipherment=True,
                content_commitment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            True,
        ),
        (x509.ExtendedKeyUsage([usage]), False),
    ]
    if server:
        names: list[x509.GeneralName] = [x509.DNSName(d) for d in SERVING_DNS]
        names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in SERVING_IPS]
        exts.append((x509.SubjectAlternativeName(names), False))
    cert = _sign(x509.Name(attrs), key, ca_name, ca_key, exts)
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def generate() -> Pki:
    """Create a fresh CA and the certificates signed by it."""
    ca_key = _key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ferry-devcluster-ca")])
    ca_cert = _sign(
        ca_name,
        ca_key,
        ca_name,
        ca_key,
        [
            (x509.BasicConstraints(ca=True, path_length=None), True),
            (
                x509.KeyUsage(
                    digital_signature=True,
                    key_encipherment=False,
                    content_commitment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                True,
            ),
        ],
    )
    sa_key = _key()
    return Pki(
        ca=KeyPair(ca_cert.public_bytes(serialization.Encoding.PEM), _key_pem(ca_key)),
        serving=_leaf("kube-apiserver", ca_name, ca_key, server=True),
        # One admin identity for kubectl, controller-manager, scheduler and kwok:
        # per-component identities would only exercise RBAC bootstrap policy,
        # which is not what this plane exists to test.
        admin=_leaf("ferry-admin", ca_name, ca_key, org="system:masters"),
        service_account=KeyPair(
            b"",
            _key_pem(sa_key),
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        ),
    )


@dataclass(frozen=True)
class PkiFiles:
    """Where `write()` put each PEM file."""

    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    admin_cert: Path
    admin_key: Path
    sa_public: Path
    sa_private: Path


def write(pki: Pki, directory: Path) -> PkiFiles:
    """Write every PEM under `directory` (private keys mode 0600)."""
    directory.mkdir(parents=True, exist_ok=True)
    files = PkiFiles(
        *(
            directory / n
            for n in (
                "ca.crt",
                "ca.key",
                "apiserver.crt",
                "apiserver.key",
                "admin.crt",
                "admin.key",
                "sa.pub",
                "sa.key",
            )
        )
    )
    contents = (
        pki.ca.cert_pem,
        pki.ca.key_pem,
        pki.serving.cert_pem,
        pki.serving.key_pem,
        pki.admin.cert_pem,
        pki.admin.key_pem,
        pki.service_account.public_pem,
        pki.service_account.key_pem,
    )
    for path, data in zip(vars(files).values(), contents, strict=True):
        path.write_bytes(data)
        if path.suffix == ".key":
            path.chmod(0o600)
    return files
