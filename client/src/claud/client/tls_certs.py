"""Making a cluster's CA and its certificates, as ``nomad tls`` does.

``claud tls ca create`` makes ``claud-agent-ca.pem`` and its key; ``claud
tls cert create --master|--slave|--cli`` makes ``dc1-master-claud.pem`` (and
``-key.pem``; a second one is ``dc1-master-claud-1.pem``...) signed by it.
Masters and slaves are both servers and clients of each other, so their
certificates carry both usages; a CLI certificate is only a client's. Each
names its process by subject alternative names: ``<role>.<cluster>.claud``,
``localhost`` and 127.0.0.1 (the CLI's: no IP), plus every ``--ip`` and
``--dns`` given, which must include the address others dial.

Needs ``cryptography`` (``pip install 'claud-client[tls]'``); the SDK does not.
"""

from __future__ import annotations

import enum
import ipaddress
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_CA_PREFIX = "claud-agent-ca"
DEFAULT_CLUSTER = "dc1"
DEFAULT_CA_DAYS = 1825
DEFAULT_CERT_DAYS = 365
MAX_DAYS = 36500
#: Clocks of the machines that check a new certificate may be a little behind ours.
BACKDATE = timedelta(minutes=1)

_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DNS_NAME = re.compile(rf"^(\*\.)?({_LABEL})(\.{_LABEL})*$")
_CLUSTER = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


class Role(enum.StrEnum):
    MASTER = "master"
    SLAVE = "slave"
    CLI = "cli"


@dataclass(frozen=True)
class Pem:
    cert: bytes
    key: bytes


def check_days(days: int) -> int:
    if not 1 <= days <= MAX_DAYS:
        raise ValueError(f"--days {days}: must be between 1 and {MAX_DAYS}")
    return days


def check_cluster(cluster: str) -> str:
    if not _CLUSTER.match(cluster):
        raise ValueError(f"--cluster {cluster!r}: use 1-63 lowercase letters, digits and '-'")
    return cluster


def parse_ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(value.strip().strip("[]"))
    except ValueError:
        raise ValueError(f"--ip {value!r} is not an IP address") from None


def check_dns(value: str) -> str:
    name = value.strip().rstrip(".")
    if len(name) > 253 or not _DNS_NAME.match(name):
        raise ValueError(f"--dns {value!r} is not a DNS name")
    return name.lower()


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def create_ca(days: int = DEFAULT_CA_DAYS, common_name: str | None = None) -> Pem:
    """A self-signed CA that may sign leaf certificates only (path length 0)."""
    key = _key()
    serial = x509.random_serial_number()
    name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "CLAUD"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name or f"CLAUD Agent CA {serial % 10**8}"),
    ])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + timedelta(days=check_days(days)))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Pem(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def load_ca(cert_path: Path, key_path: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The CA's certificate and key, checked to be a CA and to belong together."""
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except OSError as exc:
        raise ValueError(f"cannot read the CA: {exc.filename}: {exc.strerror}") from None
    except (ValueError, TypeError) as exc:
        raise ValueError(
            f"{cert_path} and {key_path} are not a PEM certificate and an unencrypted key: {exc}"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{key_path}: expected the EC key `claud tls ca create` writes")
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise ValueError(f"{cert_path} is not a CA certificate")
    cert_key = cert.public_key()
    if (not isinstance(cert_key, ec.EllipticCurvePublicKey)
            or cert_key.public_numbers() != key.public_key().public_numbers()):
        raise ValueError(f"{key_path} is not the key of {cert_path}")
    return cert, key


def create_cert(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    role: Role,
    *,
    cluster: str = DEFAULT_CLUSTER,
    ips: list[str] | None = None,
    dns: list[str] | None = None,
    days: int = DEFAULT_CERT_DAYS,
) -> Pem:
    """A leaf certificate for one process, naming it by every address it is dialled at."""
    key = _key()
    role_name = f"{role.value}.{check_cluster(cluster)}.claud"
    dns_names = [role_name, "localhost", *(check_dns(d) for d in dns or [])]
    ip_values = [] if role is Role.CLI else [ipaddress.ip_address("127.0.0.1")]
    ip_values += [parse_ip(i) for i in ips or []]
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dict.fromkeys(dns_names)]
    sans += [x509.IPAddress(i) for i in dict.fromkeys(ip_values)]
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH] if role is Role.CLI else [
        ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    now = datetime.now(UTC)
    not_after = min(now + timedelta(days=check_days(days)), ca_cert.not_valid_after_utc)
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "CLAUD"),
            x509.NameAttribute(NameOID.COMMON_NAME, role_name),
        ]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return Pem(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def cert_prefix(role: Role, cluster: str, directory: Path = Path(".")) -> Path:
    """``dc1-master-claud``, or the first ``dc1-master-claud-N`` not yet taken (one per process)."""
    base = f"{check_cluster(cluster)}-{role.value}-claud"
    candidate, n = directory / base, 0
    while _paths(candidate)[0].exists() or _paths(candidate)[1].exists():
        n += 1
        candidate = directory / f"{base}-{n}"
    return candidate


def _paths(prefix: Path) -> tuple[Path, Path]:
    return prefix.with_name(prefix.name + ".pem"), prefix.with_name(prefix.name + "-key.pem")


def write_pem(prefix: Path, pem: Pem) -> tuple[Path, Path]:
    """``PREFIX.pem`` (0644) and ``PREFIX-key.pem`` (0600, created so: never readable by others).

    Never overwrites: an existing file is an error, as losing a CA key is.
    """
    cert_path, key_path = _paths(prefix)
    for path in (cert_path, key_path):
        if path.exists():
            raise FileExistsError(f"{path} already exists; remove it or choose another --out")
    _write_new(key_path, pem.key, 0o600)
    try:
        _write_new(cert_path, pem.cert, 0o644)
    except BaseException:
        key_path.unlink(missing_ok=True)
        raise
    return cert_path, key_path


def _write_new(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # the umask may have taken bits away from a certificate's 0644
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
