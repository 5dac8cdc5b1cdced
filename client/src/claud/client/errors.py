"""The exceptions the SDK raises.

Every failure surfaces as a :class:`ClaudError` subclass, never as an httpx or
pydantic exception, so callers handle the cluster's failure modes (nothing to
talk to, no leader, a bad spec) without knowing how the SDK talks to it.

::

    ClaudError
    ├── InvalidSpec        422 (or a spec refused locally before sending); .field
    ├── NotFound           404
    │   └── JobNotFound    404 for a job id
    ├── Conflict           409: the request clashes with the object's state
    ├── Unauthorized       401/403: missing or wrong token
    ├── NoLeader           503: masters answered, but none can commit right now
    ├── Unreachable        no master answered at all
    ├── Untrusted          every master's TLS certificate failed verification (--ca-cert)
    ├── ServerError        any other 5xx
    └── WaitTimeout        wait()/watch() ran out of time (also a TimeoutError)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from claud.api.jobs import JobView

__all__ = [
    "ClaudError",
    "Conflict",
    "InvalidSpec",
    "JobNotFound",
    "NoLeader",
    "NotFound",
    "ServerError",
    "Unauthorized",
    "Unreachable",
    "Untrusted",
    "WaitTimeout",
]


class ClaudError(Exception):
    """Base of every SDK error; catching it catches them all.

    ``code`` is the master's machine-readable error code (``"not_found"``...)
    and ``status_code`` the HTTP status, both ``None`` when the error was
    raised on the client side without an answer from a master.
    """

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status_code: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status_code = status_code

    def __str__(self) -> str:
        return self.message


class InvalidSpec(ClaudError):
    """The request's content was refused; ``field`` is the dotted path at fault.

    Raised for a 422 from a master, and before any request when a spec given as
    a dict does not validate locally, so a typo never costs a round trip.
    """

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        code: str | None = "invalid_spec",
        status_code: int | None = None,
    ) -> None:
        super().__init__(message, code=code, status_code=status_code)
        self.field = field

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


class NotFound(ClaudError):
    """The object named in the request does not exist."""


class JobNotFound(NotFound):
    """No job has this id (it never existed, or the masters have forgotten it)."""


class Conflict(ClaudError):
    """The request clashes with the object's current state (409)."""


class Unauthorized(ClaudError):
    """The API token is missing or wrong; retrying will not help."""


class NoLeader(ClaudError):
    """Masters answered, but the cluster cannot commit right now (no quorum or
    an election in progress). ``retry_after`` is the masters' hint, in seconds.
    """

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        code: str | None = "no_leader",
        status_code: int | None = 503,
    ) -> None:
        super().__init__(message, code=code, status_code=status_code)
        self.retry_after = retry_after


class Unreachable(ClaudError):
    """No master answered before the failover deadline.

    ``reasons`` maps each master address tried to why it failed, because "which
    one was down and how" is the first question an operator asks.
    """

    def __init__(self, message: str, *, reasons: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.reasons = dict(reasons or {})


class Untrusted(ClaudError):
    """No master could be trusted: each one's TLS certificate failed verification.

    The CA given (``ca_cert``, ``$CLAUD_CACERT``) did not sign it, or it does
    not name the address dialled. Retrying will not help; ``reasons`` maps each
    master to what the check said.
    """

    def __init__(self, message: str, *, reasons: dict[str, str] | None = None) -> None:
        super().__init__(message, code="untrusted_certificate")
        self.reasons = dict(reasons or {})


class ServerError(ClaudError):
    """A master failed on its side (5xx other than a missing leader)."""


class WaitTimeout(ClaudError, TimeoutError):
    """The job did not reach a terminal state in the time allowed.

    ``job`` is the last view seen, so the caller can tell what it was doing.
    """

    def __init__(self, message: str, *, job: JobView | None = None) -> None:
        super().__init__(message)
        self.job = job
