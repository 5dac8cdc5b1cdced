"""``claud tls``: make a cluster's CA and its certificates (modelled on ``nomad tls``).

Kept apart from the cluster commands: it talks to no master, and it needs
``cryptography`` (the ``tls`` extra), which is imported only when a command
runs, so ``claud`` works without it and says what to install when it is
missing.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import click

INSTALL_HINT = "`claud tls` needs the cryptography package: pip install 'claud-client[tls]'"


def _certs() -> ModuleType:
    try:
        from claud.client import tls_certs
    except ImportError as exc:
        if "cryptography" not in str(exc):
            raise
        raise click.ClickException(INSTALL_HINT) from None
    return tls_certs


def _saved(paths: tuple[Path, Path]) -> None:
    cert, key = paths
    click.echo(f"==> Saved {cert}", err=True)
    click.echo(f"==> Saved {key} (0600)", err=True)


@click.group()
def tls() -> None:
    """Make a CA and certificates for masters, slaves and the CLI."""


@tls.group()
def ca() -> None:
    """The cluster's certificate authority."""


@ca.command("create")
@click.option("--days", type=int, default=1825, show_default=True, help="Days the CA is valid.")
@click.option("--common-name", help="The CA's common name. [default: CLAUD Agent CA <n>]")
@click.option(
    "--out", type=click.Path(dir_okay=False), default="claud-agent-ca", show_default=True,
    help="Path prefix: writes PREFIX.pem and PREFIX-key.pem.",
)
def ca_create(days: int, common_name: str | None, out: str) -> None:
    """Create a CA: claud-agent-ca.pem (give it to every process) and claud-agent-ca-key.pem (keep it safe)."""
    certs = _certs()
    try:
        pem = certs.create_ca(days, common_name)
        _saved(certs.write_pem(Path(out), pem))
    except (ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from None


@tls.group()
def cert() -> None:
    """Certificates signed by the CA, one per process."""


@cert.command("create")
@click.option("--master", "role", flag_value="master", help="A master's certificate (server and client).")
@click.option("--slave", "role", flag_value="slave", help="A slave's certificate (server and client).")
@click.option("--cli", "role", flag_value="cli", help="A CLI or SDK user's client certificate.")
@click.option("--ca", "ca_file", type=click.Path(dir_okay=False), default="claud-agent-ca.pem", show_default=True,
              help="The CA certificate.")
@click.option("--key", "ca_key_file", type=click.Path(dir_okay=False), default="claud-agent-ca-key.pem",
              show_default=True, help="The CA's key.")
@click.option("--ip", "ips", multiple=True, metavar="IP",
              help="An IP address the process is reached at (repeatable; 127.0.0.1 is always in "
              "master and slave certificates).")
@click.option("--dns", "dns", multiple=True, metavar="NAME",
              help="A DNS name the process is reached at (repeatable; <role>.<cluster>.claud and "
              "localhost are always in).")
@click.option("--days", type=int, default=365, show_default=True, help="Days the certificate is valid.")
@click.option("--cluster", default="dc1", show_default=True,
              help="Cluster name, in the file names and <role>.<cluster>.claud.")
@click.option("--out", type=click.Path(dir_okay=False),
              help="Path prefix: writes PREFIX.pem and PREFIX-key.pem. [default: <cluster>-<role>-claud, "
              "then -1, -2... when taken]")
def cert_create(
    role: str | None, ca_file: str, ca_key_file: str, ips: tuple[str, ...], dns: tuple[str, ...],
    days: int, cluster: str, out: str | None,
) -> None:
    """Create a certificate for one master, slave or CLI user, signed by the CA."""
    if role is None:
        raise click.UsageError("say which certificate: --master, --slave or --cli")
    certs = _certs()
    try:
        ca_cert, ca_key = certs.load_ca(Path(ca_file), Path(ca_key_file))
        pem = certs.create_cert(ca_cert, ca_key, certs.Role(role), cluster=cluster, ips=list(ips),
                                dns=list(dns), days=days)
        prefix = Path(out) if out else certs.cert_prefix(certs.Role(role), cluster)
        click.echo(f"==> Using CA file {ca_file} and CA key {ca_key_file}", err=True)
        _saved(certs.write_pem(prefix, pem))
    except (ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
