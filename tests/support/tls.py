"""A CA and per-process certificates for a test cluster, made by ``claud tls``'s own code."""

from __future__ import annotations

import ssl
from pathlib import Path

from claud.client import tls_certs


class ClusterTls:
    """The CA in ``directory``; one certificate per process, naming its loopback IP."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.ca_file = directory / "claud-agent-ca.pem"
        self.ca_key_file = directory / "claud-agent-ca-key.pem"
        if not self.ca_file.exists():
            tls_certs.write_pem(directory / "claud-agent-ca", tls_certs.create_ca(days=2))

    def flags(self, role: str, name: str, ip: str) -> list[str]:
        """``--tls-*`` flags for process ``name`` reached at ``ip`` (its certificate made once)."""
        prefix = self.directory / name
        cert, key = prefix.with_name(name + ".pem"), prefix.with_name(name + "-key.pem")
        if not cert.exists():
            ca_cert, ca_key = tls_certs.load_ca(self.ca_file, self.ca_key_file)
            pem = tls_certs.create_cert(ca_cert, ca_key, tls_certs.Role(role), ips=[ip], days=2)
            tls_certs.write_pem(prefix, pem)
        return ["--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-ca-file", str(self.ca_file)]

    def client_context(self) -> ssl.SSLContext:
        """What a test's own HTTP client trusts: the CA only."""
        return ssl.create_default_context(cafile=str(self.ca_file))
