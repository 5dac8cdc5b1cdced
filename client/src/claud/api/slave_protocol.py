"""The master <-> slave protocol (internal, authenticated by the cluster secret).

The slave is level-triggered: each reply carries the *whole* desired set of
allocations for that slave, never a delta, so a lost reply or a restarted
agent converges on the next one. An allocation is one attempt of one job; a
restart is a new allocation with a new id, so a container never has to be
"restarted" in place and ``claud.alloc`` names exactly one container ever.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import ConfigDict, Field, model_validator

from claud.api.jobs import (
    MAX_EXIT_CODE,
    AbsolutePath,
    Address,
    Command,
    ContainerUser,
    Environment,
    Health,
    HealthCheck,
    JobId,
    Labels,
    LongId,
    Message,
    NodeId,
    PortName,
    Resources,
    VolumeSpec,
)
from claud.api.jobs import WireModel as BaseModel
from claud.api.nodes import MAX_CPUS, MAX_MB, HostUsage

#: Allocations one heartbeat may report, and one slave may be told about.
MAX_ALLOCATIONS = 100_000
MAX_VERSION = 2**63 - 1

#: The masters' --fence-stop-grace default, seconds: what a slave assumes until a leader names its own.
DEFAULT_FENCE_STOP_GRACE = 2.0


class ContainerState(StrEnum):
    STARTING = "starting"  # the agent is creating/starting it (maybe pulling)
    RUNNING = "running"
    EXITED = "exited"  # ran and ended; exit_code set
    FAILED = "failed"  # could not be started (bad image, bad command); message set
    MISSING = "missing"  # was started once but is gone (removed behind our back)


class AllocationStatus(BaseModel):
    """What the slave observes about one allocation's container."""

    alloc_id: LongId
    job_id: JobId
    state: ContainerState
    container_id: LongId | None = None
    exit_code: int | None = Field(None, ge=-(2**31), le=MAX_EXIT_CODE)
    message: Message | None = Field(None, description="cut to 4096 characters")
    started_at: datetime | None = None
    finished_at: datetime | None = None
    fenced: bool = Field(
        False,
        description="the slave itself stopped this container because its lease ended (fencing): "
        "the job is lost, not failed, and is not charged a retry",
    )
    health: Health | None = Field(
        None, description="while running, with a check: what the slave's checks concluded (None: not yet)"
    )


class DesiredState(StrEnum):
    RUN = "run"
    STOP = "stop"


class PortBinding(BaseModel):
    """One of the job's ports, with the slave port the masters gave this allocation."""

    name: PortName
    container: int = Field(..., ge=1, le=65535)
    host: int = Field(..., ge=1, le=65535)


class PortRange(BaseModel):
    """The slave's range for dynamic host ports (``--port-range``), both ends included."""

    low: int = Field(..., ge=1, le=65535)
    high: int = Field(..., ge=1, le=65535)

    @model_validator(mode="after")
    def _ordered(self) -> PortRange:
        if self.low > self.high:
            raise ValueError(f"port range {self.low}-{self.high} is empty")
        return self


class Allocation(BaseModel):
    """What the masters want one slave to do about one allocation."""

    alloc_id: LongId
    job_id: JobId
    attempt: int = Field(..., ge=0, le=MAX_VERSION)
    desired: DesiredState
    image: str = Field(..., max_length=255)
    command: Command = Field(default_factory=list)
    env: Environment = Field(default_factory=dict)
    resources: Resources
    stop_timeout: float = Field(5.0, ge=0, le=600)
    user: ContainerUser | None = Field(None, description="user[:group] of the job's spec; None: the image's")
    index: int = Field(0, ge=0, le=MAX_VERSION, description="the allocation's index in its job (0..count-1)")
    version: int = Field(0, ge=0, le=MAX_VERSION, description="the job version it runs (the claud.version label)")
    ports: list[PortBinding] = Field(default_factory=list, max_length=64)
    check: HealthCheck | None = None
    volumes: list[VolumeSpec] = Field(default_factory=list, max_length=64)
    may_start: bool = Field(
        True,
        description="False once the masters have seen this attempt start: a slave that finds no "
        "container for it then reports it missing instead of starting it a second time",
    )


class RuntimeHealth(BaseModel):
    """Whether the slave's container engine answers; a slave whose engine does not takes no placements."""

    healthy: bool = True
    error: Message | None = Field(None, description="why not, cut to 4096 characters")


#: A slave's id on the wire: ``node_id``, its name from before slaves had a word of
#: their own, so slaves and masters of the earlier version still understand each other.
SlaveId = Annotated[NodeId, Field(alias="node_id")]
#: Models with a :data:`SlaveId`: built in code by the field's name, sent by the alias.
_BY_ALIAS = ConfigDict(validate_by_name=True, validate_by_alias=True, serialize_by_alias=True)


class Heartbeat(BaseModel):
    """Sent by a slave every heartbeat interval, and at once when a container changes."""

    model_config = _BY_ALIAS

    slave_id: SlaveId
    address: Address = Field(..., description="host:port where the slave serves container logs")
    labels: Labels = Field(default_factory=dict)
    cpu_total: float = Field(..., ge=0, le=MAX_CPUS)
    memory_mb_total: int = Field(..., ge=0, le=MAX_MB)
    usage: HostUsage = Field(default_factory=HostUsage)
    allocations: list[AllocationStatus] = Field(default_factory=list, max_length=MAX_ALLOCATIONS)
    runtime: RuntimeHealth = Field(default_factory=RuntimeHealth)
    port_range: PortRange | None = Field(None, description="where dynamic host ports come from (--port-range)")
    ports_host: str | None = Field(
        None, max_length=253, pattern=r"^[A-Za-z0-9_.:-]+$",
        description="where its published ports are reached (--ports-host); None: the host of address",
    )
    host_volumes: list[AbsolutePath] = Field(
        default_factory=list, max_length=64,
        description="host path prefixes jobs may bind (--allow-host-volumes)",
    )


class Assignments(BaseModel):
    """A master's answer to a heartbeat or a watch: the full desired set."""

    term: int
    leader_id: int | None
    leader_address: str | None
    version: int = Field(..., description="changes whenever this slave's desired set changes")
    allocations: list[Allocation] = Field(default_factory=list)
    lease_seconds: float = Field(..., description="stop all containers after this long without a leader")
    heartbeat_interval: float = Field(..., description="the masters' base interval: never beat slower than this "
                                      "unless told to by next_heartbeat")
    next_heartbeat: float | None = Field(
        None,
        description="beat again after this many seconds (the leader scales it with the cluster's size, "
        "see --max-heartbeats-per-second); lease_seconds and the masters' dead-after for this slave are "
        "scaled with it. None (an earlier master): heartbeat_interval",
    )
    fence_stop_grace: float = Field(
        DEFAULT_FENCE_STOP_GRACE, description="when fencing, SIGKILL after at most this many seconds of SIGTERM grace"
    )


class WatchRequest(BaseModel):
    model_config = _BY_ALIAS

    slave_id: SlaveId
    known_version: int = Field(..., ge=0, le=MAX_VERSION)
    wait_seconds: float = Field(10.0, ge=0, le=60)
