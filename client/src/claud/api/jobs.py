"""The job spec users submit and the job view the masters return.

These classes *are* the public API's job fields, which users and scripts rely
on (extend them, never rename one): the masters validate submissions with
them, the SDK parses answers with them. Unknown fields are refused rather
than ignored, so a typo (``"memroy_mb"``) is a 422 naming the field instead
of a job that silently runs with the default.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

# Docker's reference grammar (distribution/reference): an optional registry
# host[:port], lowercase path components joined by separators, an optional tag
# and an optional digest. Checked here so that a name Docker would reject is a
# 422 at submit time, not a failed job minutes later.
_HOST = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?/)"
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
IMAGE_REFERENCE = re.compile(
    rf"^{_HOST}?{_COMPONENT}(?:/{_COMPONENT})*(?::{_TAG})?(?:@{_DIGEST})?$"
)
# Patterns are used with ``fullmatch`` (``$`` alone would let a trailing newline through).
JOB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,255}$")
LABEL_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_./-]{0,62}$")
#: Ids of jobs and slaves (the slave's ``--id`` follows the same rule).
ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
#: Allocation ids are ``<job id>-<attempt>``; container ids are the runtime's.
LONG_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
#: A container's ``user[:group]`` as Docker takes it: each part a numeric id or
#: a name of the image's /etc/passwd or /etc/group (POSIX portable names, as
#: useradd accepts them; at most 32 characters, Linux's limit).
_USER_PART = r"(?:[0-9]{1,10}|[A-Za-z_][A-Za-z0-9_.-]{0,31})"
CONTAINER_USER = re.compile(rf"{_USER_PART}(?::{_USER_PART})?")
#: The largest uid or gid: (uid_t)-1 means "no id" to the kernel.
MAX_ID = 2**32 - 2
#: ``host:port`` as slaves advertise it; IPv6 in brackets.
ADDRESS = re.compile(r"(?:\[[0-9A-Fa-f:.]{2,45}\]|[A-Za-z0-9_.-]{1,253}):[0-9]{1,5}")

# ------------------------------------------------------------------ limits
# Docker and Kubernetes set no tighter rules that CLAUD relies on; these keep a
# single spec (one log entry) well under a megabyte.
MAX_COMMAND_ARGS = 1024
MAX_ARG_BYTES = 16 * 1024
MAX_COMMAND_BYTES = 64 * 1024
MAX_ENV_VARS = 1024
MAX_ENV_BYTES = 64 * 1024  # the sum of len("NAME=value") in UTF-8 bytes
MAX_LABELS = 64
MAX_LABEL_VALUE = 63  # Kubernetes' limit for label values
MAX_IDEMPOTENCY_KEY = 200
#: Jobs in one ``POST /v1/jobs:batch``; the batch is one log entry, so this also
#: bounds an entry (and the request body limit still applies).
MAX_BATCH_JOBS = 1000
#: Longest ``Idempotency-Key`` of a batch: job ``i`` of a keyed batch gets the key
#: ``<key>/<i>`` (:func:`batch_job_key`), which must itself be a legal key.
MAX_BATCH_IDEMPOTENCY_KEY = MAX_IDEMPOTENCY_KEY - 1 - len(str(MAX_BATCH_JOBS - 1))
MAX_MESSAGE = 4096  # messages and reasons longer than this are cut, not refused
MAX_REASON = 16 * 1024
MAX_EXIT_CODE = 2**31 - 1

_SURROGATE = re.compile("[\ud800-\udfff]")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
#: What an idempotency key (field or ``Idempotency-Key`` header) may be: 1-200
#: characters, none of them a control character or a lone surrogate.
IDEMPOTENCY_KEY = re.compile(r"[^\x00-\x1f\x7f-\x9f\ud800-\udfff]{1,200}")


def valid_unicode(value: str) -> str:
    """Refuse text with lone surrogates: it cannot be encoded, so no replica could store it."""
    if not value.isascii() and _SURROGATE.search(value):
        raise ValueError("contains a lone surrogate (text that is not valid Unicode)")
    return value


def printable(value: str) -> str:
    """Valid Unicode without control characters."""
    valid_unicode(value)
    if _CONTROL.search(value):
        raise ValueError("contains a control character")
    return value


def validate_idempotency_key(value: str) -> str:
    """The rule for ``idempotency_key`` and the ``Idempotency-Key`` header; ValueError says why not."""
    if not isinstance(value, str):
        raise ValueError("idempotency key must be a string")
    if not IDEMPOTENCY_KEY.fullmatch(value):
        if not 1 <= len(value) <= MAX_IDEMPOTENCY_KEY:
            raise ValueError(f"idempotency key must be 1-{MAX_IDEMPOTENCY_KEY} characters, got {len(value)}")
        raise ValueError("idempotency key may not contain control characters or lone surrogates")
    return value


def _pattern(regex: re.Pattern[str], what: str) -> AfterValidator:
    def check(value: str) -> str:
        if not regex.fullmatch(value):
            raise ValueError(f"{value[:80]!r} is not a valid {what}")
        return value

    return AfterValidator(check)


def clip(limit: int) -> AfterValidator:
    """Informational text: lone surrogates become U+FFFD and overlong text is cut
    to ``limit`` characters, so a chatty error never makes a whole report invalid."""

    def check(value: str) -> str:
        if not value.isascii():
            value = _SURROGATE.sub("\ufffd", value)
        return value if len(value) <= limit else value[: limit - 1] + "\u2026"

    return AfterValidator(check)


#: A job id.
JobId = Annotated[str, StringConstraints(min_length=1, max_length=63), _pattern(ID, "id")]
#: A slave id.
NodeId = Annotated[str, StringConstraints(min_length=1, max_length=63), _pattern(ID, "node id")]
#: An allocation id (``<job id>-<attempt>``) or a container id.
LongId = Annotated[str, StringConstraints(min_length=1, max_length=128), _pattern(LONG_ID, "id")]
#: ``host:port``.
Address = Annotated[str, StringConstraints(min_length=3, max_length=261), _pattern(ADDRESS, "host:port address")]
#: A message (cut at MAX_MESSAGE characters).
Message = Annotated[str, clip(MAX_MESSAGE)]
#: A scheduler's pending reason (cut at MAX_REASON characters).
Reason = Annotated[str, clip(MAX_REASON)]


def _utf8_len(value: str) -> int:
    return len(value) if value.isascii() else len(value.encode("utf-8"))


def check_command(command: list[str]) -> list[str]:
    if len(command) > MAX_COMMAND_ARGS:
        raise ValueError(f"at most {MAX_COMMAND_ARGS} arguments, got {len(command)}")
    total = 0
    for i, arg in enumerate(command):
        try:
            valid_unicode(arg)
        except ValueError as exc:
            raise ValueError(f"argument {i} {exc}") from None
        if "\x00" in arg:
            raise ValueError("command arguments may not contain NUL bytes")
        size = _utf8_len(arg)
        if size > MAX_ARG_BYTES:
            raise ValueError(f"argument {i} is {size} bytes; at most {MAX_ARG_BYTES}")
        total += size
    if total > MAX_COMMAND_BYTES:
        raise ValueError(f"arguments total {total} bytes; at most {MAX_COMMAND_BYTES}")
    return command


def check_env(env: dict[str, str]) -> dict[str, str]:
    if len(env) > MAX_ENV_VARS:
        raise ValueError(f"at most {MAX_ENV_VARS} variables, got {len(env)}")
    total = 0
    for key, value in env.items():
        if not ENV_NAME.fullmatch(key):
            raise ValueError(f"invalid environment variable name {key[:80]!r}")
        try:
            valid_unicode(value)
        except ValueError as exc:
            raise ValueError(f"environment variable {key!r} {exc}") from None
        if "\x00" in value:
            raise ValueError(f"environment variable {key!r} contains a NUL byte")
        total += len(key) + 1 + _utf8_len(value)
    if total > MAX_ENV_BYTES:
        raise ValueError(f"environment totals {total} bytes; at most {MAX_ENV_BYTES}")
    return env


def check_user(user: str) -> str:
    """The rule for a job's ``user``; ValueError says why not.

    A name Docker cannot resolve fails the start on the slave; what is refused
    here is what no image could ever resolve, or ids the kernel has no room for.
    """
    if not CONTAINER_USER.fullmatch(user):
        raise ValueError(
            "must be user or user:group, each a numeric id or a name of 1-32 letters, digits, "
            "'_', '.', '-' starting with a letter or '_'"
        )
    for part in user.split(":"):
        if part.isdigit() and int(part) > MAX_ID:
            raise ValueError(f"id {part} is out of range 0-{MAX_ID}")
    return user


def check_labels(labels: dict[str, str]) -> dict[str, str]:
    if len(labels) > MAX_LABELS:
        raise ValueError(f"at most {MAX_LABELS} labels, got {len(labels)}")
    for key, value in labels.items():
        if not LABEL_KEY.fullmatch(key):
            raise ValueError(f"invalid label key {key[:80]!r}")
        if len(value) > MAX_LABEL_VALUE:
            raise ValueError(f"label {key!r}: value is {len(value)} characters; at most {MAX_LABEL_VALUE}")
        try:
            printable(value)
        except ValueError as exc:
            raise ValueError(f"label {key!r}: value {exc}") from None
    return labels


# The Field limits put the counts into the JSON schema (maxItems, maxProperties) for
# clients to read; the validators hold the sizes and byte totals, with messages naming the field.
Command = Annotated[
    list[str],
    Field(max_length=MAX_COMMAND_ARGS),
    AfterValidator(check_command),
]
Environment = Annotated[
    dict[str, str],
    Field(max_length=MAX_ENV_VARS),
    AfterValidator(check_env),
]
ContainerUser = Annotated[str, AfterValidator(check_user)]
Labels = Annotated[
    dict[str, str],
    Field(max_length=MAX_LABELS),
    AfterValidator(check_labels),
]


class WireModel(BaseModel):
    """Base for the wire models: no NaN or infinity (JSON's 1e400 included) in any float."""

    model_config = ConfigDict(allow_inf_nan=False)


class StrictModel(WireModel):
    """Base for every user-facing wire model: unknown fields are an error, not a no-op."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class JobType(StrEnum):
    BATCH = "batch"  # runs to completion
    SERVICE = "service"  # kept running


class Health(StrEnum):
    """What a service's health check last concluded."""

    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"


class RestartPolicyName(StrEnum):
    NEVER = "never"
    ON_FAILURE = "on-failure"
    ALWAYS = "always"


class JobState(StrEnum):
    PENDING = "pending"
    SCHEDULED = "scheduled"
    STARTING = "starting"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    STOPPING = "stopping"
    STOPPED = "stopped"
    LOST = "lost"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.STOPPED})
#: States in which the job holds resources on a slave.
PLACED_STATES = frozenset(
    {JobState.SCHEDULED, JobState.STARTING, JobState.RUNNING, JobState.STOPPING}
)


class Resources(StrictModel):
    """What a job reserves on its slave; the scheduler never over-commits it."""

    cpu: float = Field(0.1, ge=0.001, le=512, description="CPU cores; fractions down to a milli-core")
    memory_mb: int = Field(64, ge=6, le=4 * 1024 * 1024, description="memory limit in MiB")


class RestartPolicy(StrictModel):
    policy: RestartPolicyName = RestartPolicyName.NEVER
    max_retries: int = Field(
        0, ge=0, le=10_000, description="restarts allowed after the first attempt (on-failure)"
    )


class Constraints(StrictModel):
    labels: Labels = Field(
        default_factory=dict,
        description=(
            f"the slave must carry every one of these labels; at most {MAX_LABELS}, keys 1-63 characters "
            f"(letters, digits, '_', '.', '/', '-'), values at most {MAX_LABEL_VALUE} characters, no control characters"
        ),
    )


#: Names of ports and volumes: lowercase, short, usable in a volume's name.
PORT_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
VOLUME_NAME = PORT_NAME
#: Ports and volumes one job may declare.
MAX_PORTS = 32
MAX_VOLUMES = 32
MAX_PATH = 1024
MAX_PORT = 65535


def check_absolute_path(path: str) -> str:
    """An absolute, normalised path (no ``.``/``..`` parts, no ``//``, no trailing ``/``): the
    same directory on every slave, and a prefix test that cannot be fooled."""
    printable(path)
    if not path.startswith("/"):
        raise ValueError(f"{path[:80]!r} is not an absolute path")
    if path != "/" and (path.endswith("/") or "//" in path):
        raise ValueError(f"{path[:80]!r} is not normalised (no trailing '/' nor '//')")
    if any(part in (".", "..") for part in path.split("/")):
        raise ValueError(f"{path[:80]!r} may not contain '.' or '..' parts")
    return path


AbsolutePath = Annotated[str, StringConstraints(min_length=1, max_length=MAX_PATH), AfterValidator(check_absolute_path)]
PortName = Annotated[
    str, StringConstraints(min_length=1, max_length=32), _pattern(PORT_NAME, "name (1-32 of a-z, 0-9, '_', '-')")
]


class PortSpec(StrictModel):
    """A container port published on the slave (tcp)."""

    name: PortName = Field(..., description="unique in the job; names the address in the job view")
    container: int = Field(..., ge=1, le=MAX_PORT, description="the port the container listens on")
    host: int = Field(
        0, ge=0, le=MAX_PORT,
        description="the slave's port: 0 picks a free one from the slave's --port-range; a number asks for that one",
    )


class PortView(PortSpec):
    """A port of a job's current allocation, as the job view shows it."""

    model_config = ConfigDict(extra="ignore")

    host_port: int | None = Field(None, description="the slave's port the allocation was given")
    address: str | None = Field(None, description="<slave host>:<host_port>, where the service is reached")


class HealthCheck(StrictModel):
    """A service's health check, run by its slave: exactly one of ``http``, ``tcp``, ``command``."""

    http: str | None = Field(
        None, min_length=1, max_length=MAX_PATH,
        description="GET this path (with query) on the named port; a 2xx or 3xx answer is healthy",
    )
    tcp: bool | None = Field(None, description="true: a TCP connection to the named port is healthy")
    command: Command | None = Field(None, description="argv run in the container (docker exec); exit 0 is healthy")
    port: PortName | None = Field(None, description="the name of a declared port (http and tcp checks)")
    interval: float = Field(10.0, ge=0.1, le=3600, description="seconds between checks")
    timeout: float = Field(2.0, gt=0, le=600, description="seconds one check may take")
    failures: int = Field(3, ge=1, le=100, description="failed checks in a row that make it unhealthy")
    grace: float = Field(0.0, ge=0, le=3600, description="seconds after the start during which failures do not count")

    @field_validator("http")
    @classmethod
    def _http(cls, path: str | None) -> str | None:
        if path is not None:
            printable(path)
            if not path.startswith("/") or " " in path:
                raise ValueError(f"{path[:80]!r} is not a path: it must start with '/' and hold no spaces")
        return path

    @field_validator("command")
    @classmethod
    def _command(cls, command: list[str] | None) -> list[str] | None:
        if command is not None and not command:
            raise ValueError("a command check needs at least one argument")
        return command

    @model_validator(mode="after")
    def _one_kind(self) -> HealthCheck:
        kinds = [k for k in ("http", "tcp", "command") if getattr(self, k) is not None]
        if self.tcp is False:
            raise ValueError("tcp: must be true when given (leave it out for another kind of check)")
        if len(kinds) != 1:
            raise ValueError(f"a check is exactly one of http, tcp, command; got {', '.join(kinds) or 'none'}")
        if kinds[0] in ("http", "tcp") and self.port is None:
            raise ValueError(f"port: an {kinds[0]} check names the port it checks")
        return self

    @property
    def kind(self) -> str:
        return "http" if self.http is not None else "tcp" if self.tcp else "command"


class VolumeSpec(StrictModel):
    """A volume mounted into the container: a named volume of the slave, or an allowed host directory."""

    name: Annotated[
        str, StringConstraints(min_length=1, max_length=32), _pattern(VOLUME_NAME, "name (1-32 of a-z, 0-9, '_', '-')")
    ] | None = Field(
        None, description="a Docker volume claud-<job>-<index>-<name> made by the slave; it outlives restarts there"
    )
    host_path: AbsolutePath | None = Field(
        None, description="a host directory; only under a prefix the slave allows (--allow-host-volumes)"
    )
    path: AbsolutePath = Field(..., description="where it is mounted in the container")
    read_only: bool = False

    @model_validator(mode="after")
    def _one_source(self) -> VolumeSpec:
        if (self.name is None) == (self.host_path is None):
            raise ValueError("a volume has exactly one of name, host_path")
        if self.path == "/":
            raise ValueError("path: a volume cannot be mounted on /")
        return self


def _empty(value: object) -> bool:
    return value is None or value == []


#: The most allocations one job may ask for (``count``).
MAX_COUNT = 100
#: Versions of a job the masters keep (``GET /v1/jobs/{id}/versions``); older ones are forgotten.
MAX_VERSIONS = 10


class UpdatePolicy(StrictModel):
    """How a new version of the job replaces its allocations (a rolling update)."""

    max_parallel: int = Field(1, ge=1, le=MAX_COUNT, description="allocations replaced at a time")
    min_healthy_time: float = Field(
        10.0, ge=0, le=3600,
        description="seconds a new allocation must stay healthy (running, or passing its check) before the next "
        "is replaced",
    )
    healthy_deadline: float = Field(
        300.0, gt=0, le=86400,
        description="seconds a new allocation has to become healthy; past it the update fails and stops",
    )
    auto_revert: bool = Field(
        False, description="a failed update goes back, as a new version, to the last version that rolled out whole"
    )

    @model_validator(mode="after")
    def _deadline_after_min_healthy(self) -> UpdatePolicy:
        if self.healthy_deadline <= self.min_healthy_time:
            raise ValueError("healthy_deadline: must be longer than min_healthy_time, or no allocation could pass")
        return self


def _unique(items: list[Any], attr: str, what: str) -> None:
    seen: set[Any] = set()
    for i, item in enumerate(items):
        value = getattr(item, attr)
        if value is None:
            continue
        if value in seen:
            raise ValueError(f"{i}: {what} {value!r} appears twice")
        seen.add(value)


class JobSpec(StrictModel):
    """What to run. Everything but ``name`` and ``image`` has a default."""

    name: str = Field(..., description="human name; need not be unique")
    image: str = Field(..., description="a Docker image reference present on the slaves")
    command: Command = Field(
        default_factory=list,
        description=(
            f"argv; empty runs the image's default. At most {MAX_COMMAND_ARGS} arguments of at most "
            f"{MAX_ARG_BYTES} bytes each, {MAX_COMMAND_BYTES} bytes in all; no NUL bytes"
        ),
    )
    env: Environment = Field(
        default_factory=dict,
        description=(
            f"environment variables; at most {MAX_ENV_VARS}, names [A-Za-z_][A-Za-z0-9_]* of at most 256 characters, "
            f"{MAX_ENV_BYTES} bytes of NAME=value in all; no NUL bytes"
        ),
    )
    resources: Resources = Field(default_factory=Resources)
    restart: RestartPolicy = Field(default_factory=RestartPolicy)
    type: JobType = JobType.BATCH
    constraints: Constraints = Field(default_factory=Constraints)
    stop_timeout: float = Field(
        5.0, ge=0, le=600, description="seconds between SIGTERM and SIGKILL when stopping"
    )
    user: ContainerUser | None = Field(
        None,
        description="user[:group] the job runs as, each a name (of the image) or a numeric id; "
        "default: the image's user",
    )
    # Left out of the JSON while unset (exclude_if): a spec without them encodes as before,
    # byte for byte, in the log and in snapshots.
    ports: list[PortSpec] = Field(
        default_factory=list, max_length=MAX_PORTS, exclude_if=_empty,
        description="container ports published on the slave (tcp); names and static host ports unique",
    )
    check: HealthCheck | None = Field(
        None, exclude_if=_empty,
        description="services only: a health check its slave runs; unhealthy restarts the allocation",
    )
    volumes: list[VolumeSpec] = Field(
        default_factory=list, max_length=MAX_VOLUMES, exclude_if=_empty,
        description="volumes mounted into the container",
    )
    count: int = Field(
        1, ge=1, le=MAX_COUNT, exclude_if=lambda v: v == 1,
        description=f"allocations (copies) of the job, 1-{MAX_COUNT}; each placed, started, lost and placed again "
        "on its own",
    )
    spread: bool = Field(
        True, exclude_if=lambda v: v is True,
        description="no two allocations of the job on one slave while another slave fits (false: pack them)",
    )
    update: UpdatePolicy | None = Field(
        None, exclude_if=_empty,
        description="how PUT /v1/jobs/{id} rolls a new version out (default: one at a time, 10 s healthy, "
        "300 s deadline, no auto revert)",
    )
    idempotency_key: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_IDEMPOTENCY_KEY,
        description=(
            f"1-{MAX_IDEMPOTENCY_KEY} characters, no control characters; a retry with the same key "
            "returns the job the first attempt created (until GC removes that job)"
        ),
    )

    def with_idempotency_key(self, key: str | None) -> JobSpec:
        """This spec with ``key`` as its idempotency key, the key validated by the field's
        own rules (ValidationError naming ``idempotency_key``), never ``model_copy(update=...)``
        alone, which skips validation. The other fields are this spec's, valid already:
        validating them again was most of a 1000-job batch's cost, measured."""
        if key is None:
            return self
        copy = self.model_copy()
        type(self).__pydantic_validator__.validate_assignment(copy, "idempotency_key", key)
        return copy

    @field_validator("idempotency_key")
    @classmethod
    def _idempotency_key(cls, key: str | None) -> str | None:
        return None if key is None else validate_idempotency_key(key)

    @field_validator("ports")
    @classmethod
    def _ports(cls, ports: list[PortSpec]) -> list[PortSpec]:
        _unique(ports, "name", "port name")
        _unique(ports, "container", "container port")
        _unique([p for p in ports if p.host], "host", "host port")
        return ports

    @field_validator("volumes")
    @classmethod
    def _volumes(cls, volumes: list[VolumeSpec]) -> list[VolumeSpec]:
        _unique(volumes, "name", "volume name")
        _unique(volumes, "path", "mount path")
        return volumes

    @field_validator("check")
    @classmethod
    def _check(cls, check: HealthCheck | None, info: ValidationInfo) -> HealthCheck | None:
        if check is None:
            return None
        if info.data.get("type", JobType.BATCH) != JobType.SERVICE:
            raise ValueError('only a service ("type": "service") has a health check')
        ports = info.data.get("ports")
        if check.port is not None and ports is not None and check.port not in {p.name for p in ports}:
            raise ValueError(f"port: {check.port!r} is not a port of this job")
        return check

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not JOB_NAME.fullmatch(name):
            raise ValueError(
                "must be 1-63 characters of letters, digits, '_', '.', '-', starting with a letter or digit"
            )
        return name

    @field_validator("image")
    @classmethod
    def _image(cls, image: str) -> str:
        if len(image) > 255 or not IMAGE_REFERENCE.fullmatch(image):
            raise ValueError(f"{image[:300]!r} is not a valid Docker image reference")
        return image


class JobEvent(BaseModel):
    """One transition of a job, in the order the masters committed it."""

    at: datetime
    state: JobState
    message: str = ""
    node_id: str | None = None
    attempt: int = 0
    health: Health | None = Field(
        None, exclude_if=_empty, description="set on a health transition: healthy | unhealthy"
    )
    index: int = Field(0, exclude_if=lambda v: v == 0, description="the allocation it is about (left out: 0)")


class AllocationView(BaseModel):
    """One allocation of a job: copy ``index`` of ``count``, at some version, in its current attempt."""

    model_config = ConfigDict(extra="ignore")

    id: str | None = Field(None, description="<job id>-<attempt> (index 0) or <job id>.<index>-<attempt>; "
                           "null before its first placement")
    index: int = Field(..., description="0..count-1, fixed for the allocation's life")
    version: int = Field(0, description="the job version it runs")
    state: JobState
    slave_id: str | None = Field(None, description="the slave it is placed on")
    container_id: str | None = None
    attempt: int = Field(0, description="its placements so far")
    exit_code: int | None = None
    ports: list[PortView] = Field(default_factory=list, description="each port with its host_port and address")
    health: Health | None = Field(None, description="with a check, while running: healthy | unhealthy")
    pending_reason: str | None = None
    message: str | None = None
    updated_at: datetime


class RolloutState(StrEnum):
    RUNNING = "running"  # replacing allocations, or waiting for the new ones to be healthy
    COMPLETE = "complete"  # every allocation runs the version and was healthy: the version is stable
    FAILED = "failed"  # one was not healthy within healthy_deadline; the rollout stopped there


class RolloutView(BaseModel):
    """The rollout of the job's current version."""

    version: int
    state: RolloutState
    message: str = ""
    updated_at: datetime


class JobVersionView(BaseModel):
    """A version of a job, as ``PUT /v1/jobs/{id}``, a scale or a revert made it."""

    version: int
    at: datetime
    stable: bool = Field(False, description="it rolled out whole (every allocation healthy at it)")
    spec: JobSpec


class JobVersionList(BaseModel):
    """``GET /v1/jobs/{id}/versions``: the versions kept, newest first."""

    versions: list[JobVersionView]
    index: int = Field(..., description="the commit index this answer reflects")


class ScaleRequest(StrictModel):
    """``POST /v1/jobs/{id}/scale``: a new count, nothing else changed (nothing is replaced)."""

    count: int = Field(..., ge=1, le=MAX_COUNT, description=f"allocations wanted, 1-{MAX_COUNT}")


class RevertRequest(StrictModel):
    """``POST /v1/jobs/{id}/revert``: roll the job back to an earlier version's spec, as a new version."""

    version: int = Field(..., ge=0, le=2**31, description="a version listed by GET /v1/jobs/{id}/versions")


class JobView(JobSpec):
    """A job as the masters know it: the spec plus its life so far."""

    model_config = ConfigDict(extra="ignore")

    id: str
    state: JobState
    node_id: str | None = None
    alloc_id: str | None = None
    container_id: str | None = None
    attempts: int = 0
    exit_code: int | None = None
    created_at: datetime
    updated_at: datetime
    pending_reason: str | None = None
    message: str | None = None
    ports: list[PortView] = Field(  # type: ignore[assignment]
        default_factory=list, description="the spec's ports, with the current allocation's host_port and address"
    )
    health: Health | None = Field(
        None, description="with a check, while running: healthy | unhealthy (null: not checked yet)"
    )
    events: list[JobEvent] | None = Field(
        None, description="every transition; present on GET /v1/jobs/{id}, omitted in lists"
    )
    version: int = Field(0, description="the job's current (desired) version; its spec is the fields above")
    desired: int = Field(1, description="allocations wanted (count)")
    running: int = Field(0, description="allocations running now")
    allocations: list[AllocationView] = Field(
        default_factory=list, description="every allocation, by index; node_id, alloc_id, ports... above are index 0's"
    )
    rollout: RolloutView | None = Field(None, description="the current version's rollout, once the job was updated")


class JobList(BaseModel):
    jobs: list[JobView]
    index: int = Field(..., description="the commit index this answer reflects")
    next: str | None = Field(
        None, description="with ?limit: the cursor of the next page (pass it as ?next=); null at the end"
    )


class JobEventList(BaseModel):
    """``GET /v1/jobs/{id}/events``: a job's transitions, oldest first, a page at a time."""

    events: list[JobEvent]
    index: int = Field(..., description="the commit index this answer reflects")
    next: str | None = Field(
        None, description="with ?limit: the cursor of the next page (pass it as ?next=); null at the end"
    )


def batch_job_key(batch_key: str, i: int) -> str:
    """The idempotency key job ``i`` of a batch submitted with ``Idempotency-Key: batch_key`` carries.

    Keying each job from the batch's key reuses the single submit's rule as it
    is: a retry of the same batch finds every job it created and creates none,
    and the same key with a different job at some index is a conflict."""
    return f"{batch_key}/{i}"


class JobBatch(StrictModel):
    """``POST /v1/jobs:batch``: jobs accepted or refused together, as one log entry."""

    jobs: list[JobSpec] = Field(
        ..., min_length=1, max_length=MAX_BATCH_JOBS,
        description=(
            f"1-{MAX_BATCH_JOBS} job specs; if any is invalid none is accepted (the error names jobs.<i>.<field>)"
        ),
    )


class JobBatchResult(BaseModel):
    """The answer to a batch, once committed: each job's id, in the order of the batch."""

    ids: list[str] = Field(..., description="the id of jobs[i] at position i")
    created: int = Field(
        ..., description="how many of the jobs this request created (the rest an earlier one with the same key did)"
    )
    index: int = Field(..., description="a commit index at which every job of the batch is applied (read your writes)")


#: ``claud exec``: the longest a command may run, in seconds, and the default.
MAX_EXEC_TIMEOUT = 600.0
DEFAULT_EXEC_TIMEOUT = 30.0
#: Bytes kept of each of stdout and stderr; the rest is dropped and ``truncated`` set.
MAX_EXEC_OUTPUT = 1024 * 1024


class ExecRequest(StrictModel):
    """``POST /v1/jobs/{id}/exec``: run a command in the job's running container (not interactive)."""

    command: Command = Field(..., description="argv run in the container (docker exec), no shell unless named")
    alloc: LongId | None = Field(None, description="the allocation it must run in (default: the job's current one)")
    timeout: float = Field(
        DEFAULT_EXEC_TIMEOUT, gt=0, le=MAX_EXEC_TIMEOUT,
        description=f"seconds the command may take (at most {MAX_EXEC_TIMEOUT:g}); then 504",
    )

    @field_validator("command")
    @classmethod
    def _command(cls, command: list[str]) -> list[str]:
        if not command:
            raise ValueError("exec needs at least one argument")
        return command


class SlaveExecRequest(StrictModel):
    """What a master sends the slave running the allocation (``/v1/allocations/{alloc}/exec``)."""

    command: Command
    timeout: float = Field(DEFAULT_EXEC_TIMEOUT, gt=0, le=MAX_EXEC_TIMEOUT)


class ExecResult(BaseModel):
    """What the command did: its exit code and its output (each stream cut at 1 MiB)."""

    job_id: str = Field("", description="the job it ran in (empty in the slave's own answer)")
    alloc_id: str = Field(..., description="the allocation whose container ran it")
    node_id: str = Field("", description="the slave that ran it")
    exit_code: int = Field(..., description="the command's exit code (-1: unknown)")
    stdout: str = Field("", description="its standard output, decoded as UTF-8 (bad bytes replaced)")
    stderr: str = Field("", description="its standard error, likewise")
    truncated: bool = Field(False, description=f"true: output beyond {MAX_EXEC_OUTPUT} bytes of a stream was dropped")
