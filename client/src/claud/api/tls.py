"""Every TLS context a CLAUD process or client builds, in one place.

Masters and slaves are given three files (``--tls-cert-file``,
``--tls-key-file``, ``--tls-ca-file``): their own certificate, its key, and the
CA that signed every certificate of the cluster. With them, each listener
serves HTTPS and each client between processes checks the peer's certificate
against that CA *and* the address it dialled (the certificate names each
process by IP and DNS subject alternative names), as Nomad's
``verify_server_hostname`` does. The same CA file lets the SDK and the CLI
trust the masters (``--ca-cert``).

Only the standard library is used here: the SDK needs none of ``cryptography``
(which only makes certificates, in :mod:`claud.client.tls_certs`).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

#: TLS 1.2 is the oldest version any of our peers speak; nothing older is offered.
MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2
#: TLS 1.2 suites with forward secrecy and AEAD only (uvicorn's default, "TLSv1",
#: would also offer CBC suites); TLS 1.3's are all of that kind already.
SERVER_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


class UvicornTlsOptions(TypedDict, total=False):
    """uvicorn's ``ssl_*`` keyword arguments, typed so that ``**options`` is checked against them.

    Not total: without TLS a process passes an empty one.
    """

    ssl_certfile: str
    ssl_keyfile: str
    ssl_ca_certs: str
    ssl_cert_reqs: int
    ssl_ciphers: str


@dataclass(frozen=True)
class TlsFiles:
    """A process's certificate, its key and the cluster's CA, checked to load together."""

    cert_file: Path
    key_file: Path
    ca_file: Path

    def server_context(self, *, require_client_cert: bool) -> ssl.SSLContext:
        """For a listener; a client certificate, when one is presented, must chain to the CA."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = MINIMUM_VERSION
        context.load_cert_chain(self.cert_file, self.key_file)
        context.load_verify_locations(cafile=self.ca_file)
        context.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
        context.set_ciphers(SERVER_CIPHERS)
        return context

    def client_context(self) -> ssl.SSLContext:
        """For calls to other CLAUD processes: verify them, and present our own certificate."""
        return client_context(self.ca_file, self.cert_file, self.key_file)

    def uvicorn_options(self, *, require_client_cert: bool) -> UvicornTlsOptions:
        """uvicorn's ssl_* settings for the same server context as :meth:`server_context`."""
        return {
            "ssl_certfile": str(self.cert_file),
            "ssl_keyfile": str(self.key_file),
            "ssl_ca_certs": str(self.ca_file),
            "ssl_cert_reqs": int(ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL),
            "ssl_ciphers": SERVER_CIPHERS,
        }


def client_context(
    ca_file: str | Path | None, cert_file: str | Path | None = None, key_file: str | Path | None = None
) -> ssl.SSLContext:
    """A context that verifies the server's certificate and the name (host or IP) dialled.

    ``ca_file`` None trusts the system's CAs (a master behind a public
    certificate); a given one trusts only it.
    """
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file) if ca_file else None)
    context.minimum_version = MINIMUM_VERSION
    if cert_file is not None:
        context.load_cert_chain(str(cert_file), str(key_file) if key_file else None)
    return context


def load_tls_files(cert_file: Path | None, key_file: Path | None, ca_file: Path | None) -> TlsFiles | None:
    """All three files or none; the ones given must load as a certificate, its key and a CA.

    Raises ValueError with one line an operator can act on, so a typo in a
    path stops the process at start, not at its first connection.
    """
    given = {"--tls-cert-file": cert_file, "--tls-key-file": key_file, "--tls-ca-file": ca_file}
    missing = [flag for flag, value in given.items() if value is None]
    if len(missing) == 3:
        return None
    if missing:
        present = [flag for flag, value in given.items() if value is not None]
        raise ValueError(f"TLS needs all three of --tls-cert-file, --tls-key-file and --tls-ca-file: "
                         f"{', '.join(present)} given without {', '.join(missing)}")
    assert cert_file is not None and key_file is not None and ca_file is not None
    for flag, path in given.items():
        assert path is not None
        if not path.is_file():
            raise ValueError(f"{flag} {str(path)!r} is not a readable file")
    files = TlsFiles(cert_file, key_file, ca_file)
    try:
        files.server_context(require_client_cert=True)
    except ssl.SSLError as exc:
        raise ValueError(
            f"{cert_file} with key {key_file} and CA {ca_file} do not load as a certificate, "
            f"its key and a CA: {exc.reason or exc}"
        ) from None
    except OSError as exc:
        raise ValueError(f"cannot read the TLS files: {exc.strerror or exc}") from None
    return files


def untrusted_certificate_error(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate-verification failure somewhere in ``exc``'s chain (httpx wraps it twice)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLCertVerificationError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None
