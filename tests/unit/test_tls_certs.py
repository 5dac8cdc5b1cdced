"""`claud tls cert create`'s names: whatever is typed, a certificate names exactly what was asked,
or nothing is made."""

from __future__ import annotations

import ipaddress
from functools import cache
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from claud.client import tls_certs
from claud.client.tls_certs import Role, x509


@cache
def ca() -> tuple[x509.Certificate, object]:
    pem = tls_certs.create_ca(days=1)
    return x509.load_pem_x509_certificate(pem.cert), tls_certs.serialization.load_pem_private_key(pem.key, None)


def sans(pem: tls_certs.Pem) -> tuple[set[str], set[str]]:
    cert = x509.load_pem_x509_certificate(pem.cert)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(names.get_values_for_type(x509.DNSName)), {str(i) for i in names.get_values_for_type(x509.IPAddress)}


hostile = st.text(st.characters(codec="utf-8"), max_size=40)
ips = st.one_of(st.ip_addresses().map(str), hostile)
names = st.one_of(st.from_regex(r"\A[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?(\.[a-z0-9]{1,8}){0,3}\Z"), hostile)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(role=st.sampled_from(list(Role)), ip_list=st.lists(ips, max_size=3), dns_list=st.lists(names, max_size=3))
def test_a_certificate_names_exactly_what_was_asked(role: Role, ip_list: list[str], dns_list: list[str]) -> None:
    ca_cert, ca_key = ca()
    try:
        pem = tls_certs.create_cert(ca_cert, ca_key, role, ips=ip_list, dns=dns_list)
    except ValueError:
        # Refused only for input that is not an IP address or a DNS name.
        bad_ip = any(not _is_ip(i) for i in ip_list)
        bad_dns = any(not _is_dns(d) for d in dns_list)
        assert bad_ip or bad_dns
        return
    dns, ip = sans(pem)
    assert dns == {f"{role.value}.dc1.claud", "localhost", *(d.strip().rstrip(".").lower() for d in dns_list)}
    base = set() if role is Role.CLI else {"127.0.0.1"}
    assert ip == base | {str(ipaddress.ip_address(i.strip().strip("[]"))) for i in ip_list}


def _is_ip(value: str) -> bool:
    try:
        tls_certs.parse_ip(value)
        return True
    except ValueError:
        return False


def _is_dns(value: str) -> bool:
    try:
        tls_certs.check_dns(value)
        return True
    except ValueError:
        return False


@pytest.mark.parametrize("bad", ["", "a b", "-x.example", "x..y", "ex_ample.com", "a" * 64, "é.example", "1.2.3.4/8"])
def test_dns_names_that_are_not_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        tls_certs.check_dns(bad)


def test_days_are_bounded() -> None:
    with pytest.raises(ValueError):
        tls_certs.create_ca(days=0)
    ca_cert, ca_key = ca()
    with pytest.raises(ValueError):
        tls_certs.create_cert(ca_cert, ca_key, Role.MASTER, days=10**6)


def test_a_leaf_never_outlives_its_ca() -> None:
    ca_cert, ca_key = ca()
    pem = tls_certs.create_cert(ca_cert, ca_key, Role.SLAVE, days=365)
    assert x509.load_pem_x509_certificate(pem.cert).not_valid_after_utc <= ca_cert.not_valid_after_utc


def test_without_cryptography_claud_tls_says_what_to_install(tmp_path: Path) -> None:
    import subprocess
    import sys

    probe = (
        "import sys; sys.modules['cryptography'] = None\n"
        "from claud.client.cli import main\n"
        "sys.argv = ['claud', 'tls', 'ca', 'create']\n"
        "main()\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "claud-client[tls]" in result.stderr and "Traceback" not in result.stderr
    assert not list(tmp_path.iterdir())
