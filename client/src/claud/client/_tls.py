"""Which certificates the SDK trusts, and which one it presents.

``https://`` masters are verified against the CA bundle given (``ca_cert``,
else ``$CLAUD_CACERT``), or the system's CAs without one; a client
certificate (``$CLAUD_CLIENT_CERT`` and ``$CLAUD_CLIENT_KEY``) is presented
only when the masters require one (``claud-master --tls-verify-clients``).
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path

import httpx

from claud.api.tls import client_context, untrusted_certificate_error

CA_CERT_ENV = "CLAUD_CACERT"
CLIENT_CERT_ENV = "CLAUD_CLIENT_CERT"
CLIENT_KEY_ENV = "CLAUD_CLIENT_KEY"


def verify_setting(
    ca_cert: str | Path | None, client_cert: str | Path | None, client_key: str | Path | None
) -> ssl.SSLContext | bool:
    """httpx's ``verify``: a context when a CA or a client certificate is configured, else the defaults.

    Raises ValueError naming the file when one cannot be loaded, before any request.
    """
    ca_cert = ca_cert or os.environ.get(CA_CERT_ENV) or None
    client_cert = client_cert or os.environ.get(CLIENT_CERT_ENV) or None
    client_key = client_key or os.environ.get(CLIENT_KEY_ENV) or None
    if client_key and not client_cert:
        raise ValueError("a client key was given without its certificate (client_cert / $CLAUD_CLIENT_CERT)")
    if ca_cert is None and client_cert is None:
        return True
    try:
        return client_context(ca_cert, client_cert, client_key)
    except FileNotFoundError as exc:
        raise ValueError(f"cannot read {exc.filename or ca_cert}: no such file") from None
    except (ssl.SSLError, OSError) as exc:
        which = f"CA bundle {ca_cert}" if client_cert is None else f"CA {ca_cert} or client certificate {client_cert}"
        raise ValueError(f"the {which} does not load: {exc}") from None


def untrusted_reason(exc: httpx.HTTPError) -> str | None:
    """Why a master's certificate was refused, when that is what ``exc`` is; else None."""
    error = untrusted_certificate_error(exc)
    if error is None:
        return None
    return f"TLS certificate not trusted: {error.verify_message or error.reason or error}"
