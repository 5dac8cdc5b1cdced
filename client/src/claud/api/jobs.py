"""The job spec users submit and the job view the masters return.

These classes *are* the public contract (see shared/CONTRACT.md): the masters
validate submissions with them, the SDK parses answers with them. Unknown
fields are refused rather than ignored, so a typo (``"memroy_mb"``) is a 422
naming the field instead of a job that silently runs with the default.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator

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
JOB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
LABEL_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_./-]{0,62}$")


class StrictModel(BaseModel):
    """Base for every wire model: unknown fields are an error, not a no-op."""

    model_config = ConfigDict(extra="forbid")


class JobType(StrEnum):
    BATCH = "batch"  # runs to completion
    SERVICE = "service"  # kept running


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
    labels: dict[str, str] = Field(
        default_factory=dict, description="the slave must carry every one of these labels"
    )

    @field_validator("labels")
    @classmethod
    def _label_keys(cls, labels: dict[str, str]) -> dict[str, str]:
        for key in labels:
            if not LABEL_KEY.match(key):
                raise ValueError(f"invalid label key {key!r}")
        return labels


class JobSpec(StrictModel):
    """What to run. Everything but ``name`` and ``image`` has a default."""

    name: str = Field(..., description="human name; need not be unique")
    image: str = Field(..., description="a Docker image reference present on the slaves")
    command: list[str] = Field(
        default_factory=list, max_length=1024, description="argv; empty runs the image's default"
    )
    env: dict[str, str] = Field(default_factory=dict)
    resources: Resources = Field(default_factory=Resources)
    restart: RestartPolicy = Field(default_factory=RestartPolicy)
    type: JobType = JobType.BATCH
    constraints: Constraints = Field(default_factory=Constraints)
    stop_timeout: float = Field(
        5.0, ge=0, le=600, description="seconds between SIGTERM and SIGKILL when stopping"
    )
    idempotency_key: str | None = Field(None, min_length=1, max_length=200)

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        if not JOB_NAME.match(name):
            raise ValueError(
                "must be 1-63 characters of letters, digits, '_', '.', '-', starting with a letter or digit"
            )
        return name

    @field_validator("image")
    @classmethod
    def _image(cls, image: str) -> str:
        if len(image) > 255 or not IMAGE_REFERENCE.match(image):
            raise ValueError(f"{image!r} is not a valid Docker image reference")
        return image

    @field_validator("env")
    @classmethod
    def _env(cls, env: dict[str, str]) -> dict[str, str]:
        for key, value in env.items():
            if not ENV_NAME.match(key):
                raise ValueError(f"invalid environment variable name {key!r}")
            if "\x00" in value:
                raise ValueError(f"environment variable {key!r} contains a NUL byte")
        return env

    @field_validator("command")
    @classmethod
    def _command(cls, command: list[str]) -> list[str]:
        if any("\x00" in arg for arg in command):
            raise ValueError("command arguments may not contain NUL bytes")
        return command


class JobEvent(BaseModel):
    """One transition of a job, in the order the masters committed it."""

    at: datetime
    state: JobState
    message: str = ""
    node_id: str | None = None
    attempt: int = 0


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
    events: list[JobEvent] | None = Field(
        None, description="every transition; present on GET /v1/jobs/{id}, omitted in lists"
    )


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
