"""The TLS part of a master's and a slave's settings: whether TLS is on, and so the scheme.

Both processes declare the same three fields, ``tls_cert_file``, ``tls_key_file`` and
``tls_ca_file`` (each with its own description, so that ``--help`` says what that
process does with them), and call :meth:`TlsSettings._load_tls` from their
after-validator; what follows from those files is decided here, once.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import PrivateAttr
from pydantic_settings import BaseSettings

from claud.api.tls import TlsFiles, load_tls_files


class TlsSettings(BaseSettings):
    """Mixin of MasterSettings and SlaveSettings; it declares no field of its own, so the
    order of their flags in ``--help`` stays theirs."""

    if TYPE_CHECKING:  # declared by each subclass, with its own description
        tls_cert_file: Path | None
        tls_key_file: Path | None
        tls_ca_file: Path | None

    _tls: TlsFiles | None = PrivateAttr(None)

    def _load_tls(self) -> None:
        """Check that the three files load together (or that none is given); raises ValueError."""
        self._tls = load_tls_files(self.tls_cert_file, self.tls_key_file, self.tls_ca_file)

    @property
    def tls(self) -> TlsFiles | None:
        """The TLS files when TLS is on (checked to load at start), else None."""
        return self._tls

    @property
    def scheme(self) -> str:
        """How every CLAUD process of this cluster is reached, those learned by discovery
        too: one setting, never mixed."""
        return "https" if self._tls else "http"
