"""The slave's one settings object: every flag, its environment twin, its default.

Flags and environment share one source of truth (the fields below): the CLI in
``__main__`` is generated from these fields, so ``--heartbeat-interval`` and
``CLAUD_HEARTBEAT_INTERVAL`` can never drift apart, and ``--help`` prints the
defaults and descriptions written here. Every timeout the agent uses lives here
with the reason for its default.
"""

from __future__ import annotations

import math
import os
import re
import socket
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from claud.api.jobs import ADDRESS, LABEL_KEY, check_absolute_path, check_labels
from claud.api.slave_protocol import DEFAULT_FENCE_STOP_GRACE, PortRange
from claud.daemon.addresses import names_no_host, parse_host_port
from claud.daemon.tls_settings import TlsSettings
from claud.slave.runtime.hardening import (
    DEFAULT_CAP_DROP,
    DEFAULT_LOG_MAX_FILES,
    DEFAULT_LOG_MAX_SIZE,
    DEFAULT_PIDS_LIMIT,
    Hardening,
    parse_capability,
    parse_log_size,
)

ENV_PREFIX = "CLAUD_"

# Slave ids end up in container labels, names of threads and log lines, and in
# URLs of the masters' API: keep them to a safe, readable alphabet.
_NODE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


def parse_port_range(value: str) -> tuple[int, int]:
    """``LOW-HIGH`` (1-65535, LOW <= HIGH); ValueError says why not."""
    match = re.fullmatch(r"\s*(\d{1,5})\s*-\s*(\d{1,5})\s*", value)
    if not match:
        raise ValueError(f"{value!r} is not LOW-HIGH (e.g. 20000-32000)")
    low, high = int(match[1]), int(match[2])
    if not 1 <= low <= high <= 65535:
        raise ValueError(f"{value!r}: need 1 <= LOW <= HIGH <= 65535")
    return low, high


def _split_list(value: Any) -> Any:
    # Flags and environment both carry "a,b,c"; the JSON decoding pydantic-settings
    # would apply to a list field is switched off by NoDecode so plain text works.
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class SlaveSettings(TlsSettings):
    """Configuration of one slave agent (``claud-slave``)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="ignore", validate_default=True, populate_by_name=True
    )

    # --- identity and peers: flags users and scripts rely on (extend, never rename) ---
    id: str = Field(..., description="this slave's id, unique in the cluster (e.g. s1)")
    listen: str = Field(
        "127.0.0.1:8701", description="host:port where the slave serves container logs and /healthz"
    )
    masters: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="comma-separated host:port (or https://host:port) of the masters, reached over "
        "HTTPS when TLS is on; "
        "with discovery on, more are learned from their UDP announcements",
    )
    job_pid_namespace: str | None = Field(
        None,
        description="PID namespace for job containers: container:<name|id> or host; default: "
        "their own. A job sees, signals and (as the same user) reads the files of every process "
        "of a namespace it shares: never share one with a process holding the Docker socket "
        "or the cluster secret",
    )
    runtime: Literal["docker", "simulated"] = Field(
        "docker", description="docker runs real containers; simulated only pretends (benchmarks)"
    )
    labels: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict, description="comma-separated key=value labels for job constraints"
    )
    cpus: float | None = Field(
        None, gt=0, description="advertised CPU cores (default: cgroup limit, else psutil)"
    )
    memory_mb: int | None = Field(
        None, gt=0, description="advertised memory in MiB (default: cgroup limit, else psutil)"
    )
    heartbeat_interval: float = Field(
        1.0,
        gt=0,
        le=60,
        description="seconds between heartbeats (a shorter interval named by the masters wins, and "
        "so does the one a leader scales with the cluster's size)",
    )
    discovery_port: int = Field(
        8702, ge=1, le=65535, description="UDP port of broadcast discovery"
    )
    no_discovery: bool = Field(False, description="do not take part in UDP broadcast discovery")
    cluster_secret_file: Path | None = Field(
        None,
        description="file holding the secret shared by masters and slaves (stripped); required: "
        "a lone master without one generates <data-dir>/cluster-secret",
    )
    refused_log_every: float = Field(
        10.0, gt=0, description="at most one auth.refused line per client address this often (the next counts the rest)"
    )

    tls_cert_file: Path | None = Field(
        None, description="this slave's TLS certificate (PEM); with the key and CA files the slave serves "
        "HTTPS to masters only (their client certificate is required) and verifies the masters against the CA",
    )
    tls_key_file: Path | None = Field(None, description="the key of --tls-cert-file (PEM)")
    tls_ca_file: Path | None = Field(
        None, description="the CA (PEM) that signed every master's and slave's certificate"
    )

    # --- operations ---
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="log level")
    demo_faults: bool = Field(
        False,
        description="accept fault injection from `claud chaos` (demo clusters only: anyone holding the API token "
        "can then stop this process)",
    )
    advertise: str | None = Field(
        None,
        description="host:port the masters should use to reach this slave "
        "(default: --listen, with the hostname when listening on all interfaces)",
    )
    port_range: str = Field(
        "20000-32000",
        description="LOW-HIGH: the host ports the masters may give jobs' dynamic ports (\"host\": 0) on this "
        "slave, both included; reported when it registers",
    )
    allow_host_volumes: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="comma-separated absolute host path prefixes jobs may bind (\"host_path\" volumes); "
        "empty: none. Reported to the masters, which place such jobs only here",
    )
    ports_host: str | None = Field(
        None,
        description="the host name or IP where people reach the ports this slave publishes, shown in job views "
        "as <host>:<port> (default: the host of --advertise); e.g. the Docker host when the slave runs in a container",
    )
    check_host: str = Field(
        "127.0.0.1",
        description="where this slave reaches its containers' published ports for http and tcp health checks",
    )
    container_labels: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict,
        description="extra key=value labels put on every container this slave creates "
        "(ownership tags; never claud.job/claud.alloc/claud.slave)",
    )

    state_dir: Path | None = Field(
        None,
        description="directory (0700, files 0600) where the slave keeps what must outlive its "
        "process: the lease end and the allocations it fenced (default: /var/lib/claud/slave-<id> "
        "as root, else $XDG_STATE_HOME or ~/.local/state, /claud/slave-<id>)",
    )

    # --- docker runtime ---
    docker_host: str | None = Field(
        None,
        description="Docker engine address, e.g. unix:///var/run/docker.sock or tcp://host:2375 "
        "(default: DOCKER_HOST, else the local socket)",
    )
    docker_workers: int = Field(
        16,
        ge=1,
        le=256,
        description="threads running Docker start/stop/remove calls in parallel; a stop "
        "blocks a thread for the job's whole grace period, so this bounds concurrent stops",
    )
    fence_workers: int = Field(
        64,
        ge=1,
        le=1024,
        description="threads that send fencing signals; their own pool, so fencing never waits "
        "behind ordinary stops and signals every container at once",
    )
    fence_round_trip: float = Field(
        1.0,
        ge=0,
        le=10,
        description="seconds from a fence's SIGKILL to the container's recorded exit, however many "
        "containers (40 on two busy cores: under 1.5 s): the kill is sent this long before lease "
        "end + grace, and a grace shorter than this is met by fencing that much before the lease ends",
    )
    docker_timeout: float = Field(
        30.0,
        gt=0,
        description="seconds one Docker API call may take (a stop adds its grace period)",
    )
    pull_timeout: float = Field(
        120.0,
        gt=0,
        description="seconds of silence tolerated from a pull of a missing image before the "
        "start is reported failed",
    )
    exited_retention: float = Field(
        3600.0,
        ge=0,
        description="seconds to keep an exited container (for its logs) once the masters no "
        "longer list its allocation",
    )
    max_exited: int = Field(
        200,
        ge=0,
        description="most exited containers kept on this slave; the oldest no-longer-desired "
        "ones are removed beyond it",
    )

    # --- protocol timeouts ---
    request_timeout: float = Field(
        2.0,
        gt=0,
        description="seconds a heartbeat may take before the agent tries the next master; "
        "kept well under the lease so a dead master cannot eat it",
    )
    connect_timeout: float = Field(1.0, gt=0, description="seconds to open a TCP connection to a master")
    watch_wait: float = Field(
        10.0,
        ge=0,
        le=60,
        description="seconds a master may hold a watch (long poll) open before answering "
        "with an unchanged desired set",
    )
    retry_min: float = Field(
        0.2, gt=0, description="first pause after a failed watch; doubles up to --retry-max"
    )
    retry_max: float = Field(1.0, gt=0, description="longest pause between failed watches")
    default_lease: float = Field(
        60.0,
        gt=0,
        description="longest lease this slave accepts from the masters (a longer one is cut to "
        "it, and the slave then beats often enough for the shorter lease). Masters scale the lease "
        "with the cluster's size (their --max-heartbeats-per-second): 60 s lets a default leader "
        "slow 1,500 slaves to its rate. Before any leader answered, the agent keeps the lease its "
        "previous process persisted, or starts fenced",
    )
    reconcile_interval: float = Field(
        1.0,
        gt=0,
        le=60,
        description="seconds between reconcile passes when nothing triggers one (Docker "
        "events and master replies trigger one at once)",
    )
    default_stop_timeout: float = Field(
        5.0,
        ge=0,
        description="grace (SIGTERM to SIGKILL) for containers whose allocation the masters do not "
        "list, at most the fence grace: their job may already run elsewhere (lost while this "
        "slave or its engine was away)",
    )
    fence_stop_grace: float | None = Field(
        None,
        ge=0,
        description="cap on the SIGTERM grace when the lease expires (default: the masters' "
        f"fence_stop_grace, {DEFAULT_FENCE_STOP_GRACE:g} until they answer; when both are set the smaller wins): "
        "the masters "
        "reschedule after their own longer timeout, so the old copy must be dead well before",
    )

    # --- job confinement (runtime/hardening.py says why each) ---
    job_pids_limit: int = Field(
        DEFAULT_PIDS_LIMIT,
        ge=0,
        le=4_194_304,
        description="most processes and threads one job container may have (a fork bomb stops "
        "there); 0: no limit",
    )
    job_log_max_size: str = Field(
        DEFAULT_LOG_MAX_SIZE,
        description="size at which a job container's log file (json-file) is rotated: a number "
        "and k, m or g",
    )
    job_log_max_files: int = Field(
        DEFAULT_LOG_MAX_FILES,
        ge=1,
        le=100,
        description="log files kept per job container: its log takes at most this many times "
        "--job-log-max-size of the engine's disk",
    )
    job_cap_drop: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_CAP_DROP),
        description="comma-separated capabilities taken from Docker's default set in job "
        "containers (ALL for every one; the empty string for none)",
    )
    job_allow_new_privileges: bool = Field(
        False,
        description="let job processes gain privileges through setuid and file-capability "
        "binaries (sudo, su, ping on some images); default: no-new-privileges",
    )

    # --- simulated runtime ---
    sim_default_seconds: float = Field(
        1.0,
        ge=0,
        description="simulated runtime: how long a container runs when the job names no "
        "duration (env CLAUD_SIM_SECONDS in the job, or a 'sleep N' command)",
    )

    _secret: str | None = PrivateAttr(None)

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        if not _NODE_ID.match(value):
            raise ValueError(
                f"{value!r}: use 1-63 letters, digits, '_', '.', '-', starting with a letter or digit"
            )
        return value

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        parse_host_port(value)
        return value.strip()

    @field_validator("advertise")
    @classmethod
    def _check_advertise(cls, value: str | None) -> str | None:
        if value is not None and names_no_host(parse_host_port(value)[0]):
            raise ValueError(f"{value!r} names no host; advertise an address the masters can reach")
        return value

    @field_validator("masters", mode="before")
    @classmethod
    def _split_masters(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("masters")
    @classmethod
    def _check_masters(cls, value: list[str]) -> list[str]:
        # Bare host:port entries get their scheme once TLS is known (_check_invariants).
        entries: list[str] = []
        for entry in value:
            scheme = ""
            rest = entry
            if "://" in entry:
                scheme, rest = entry.split("://", 1)
                if scheme not in ("http", "https"):
                    raise ValueError(f"{entry!r}: only http:// and https:// are supported")
                scheme += "://"
            host, port = parse_host_port(rest.rstrip("/"))
            host = f"[{host}]" if ":" in host else host
            normalised = f"{scheme}{host}:{port}"
            if normalised not in entries:
                entries.append(normalised)
        return entries

    @field_validator("labels", "container_labels", mode="before")
    @classmethod
    def _split_labels(cls, value: Any) -> Any:
        if isinstance(value, str):
            pairs: dict[str, str] = {}
            for part in _split_list(value):
                key, sep, val = part.partition("=")
                if not sep:
                    raise ValueError(f"{part!r} is not key=value")
                pairs[key.strip()] = val.strip()
            return pairs
        return value

    @field_validator("labels")
    @classmethod
    def _check_labels(cls, value: dict[str, str]) -> dict[str, str]:
        # The heartbeat carries them: held to the wire's rules here, or every heartbeat would be refused.
        return check_labels(value)

    @field_validator("container_labels")
    @classmethod
    def _check_label_keys(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not LABEL_KEY.match(key):
                raise ValueError(f"invalid label key {key!r}")
        return value

    @field_validator("ports_host", "check_host")
    @classmethod
    def _check_host_name(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9_.:-]{1,253}", value):
            raise ValueError(f"{value[:80]!r} is not a host name or IP address")
        return value

    @field_validator("port_range")
    @classmethod
    def _check_port_range(cls, value: str) -> str:
        parse_port_range(value)
        return value

    @field_validator("allow_host_volumes", mode="before")
    @classmethod
    def _split_host_volumes(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("allow_host_volumes")
    @classmethod
    def _check_host_volumes(cls, value: list[str]) -> list[str]:
        for path in value:
            check_absolute_path(path)
        return value

    @field_validator("job_cap_drop", mode="before")
    @classmethod
    def _split_caps(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("job_cap_drop")
    @classmethod
    def _check_caps(cls, value: list[str]) -> list[str]:
        caps: list[str] = []
        for name in value:
            cap = parse_capability(name)
            if cap not in caps:
                caps.append(cap)
        return caps

    @field_validator("job_log_max_size")
    @classmethod
    def _check_log_size(cls, value: str) -> str:
        return parse_log_size(value)
    @field_validator("docker_host")
    @classmethod
    def _check_docker_host(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"(unix|tcp|ssh|http|https)://\S+", value):
            raise ValueError(f"{value!r}: use unix:///path, tcp://host:port or ssh://host")
        return value

    @field_validator("job_pid_namespace")
    @classmethod
    def _check_pid_namespace(cls, value: str | None) -> str | None:
        if value is not None and value != "host" and not re.fullmatch(r"container:[A-Za-z0-9][A-Za-z0-9_.-]*", value):
            raise ValueError(f"{value!r}: use container:<name|id> or host")
        return value

    @model_validator(mode="after")
    def _check_invariants(self) -> SlaveSettings:
        if not self.masters and self.no_discovery:
            raise ValueError("--masters is needed when discovery is off (--no-discovery)")
        reserved = {"claud.job", "claud.alloc", "claud.slave"} & set(self.container_labels)
        if reserved:
            raise ValueError(f"container_labels may not set {', '.join(sorted(reserved))}")
        address = self.advertise_address
        if not ADDRESS.fullmatch(address) or names_no_host(parse_host_port(address)[0]):
            # Derived from --listen and the hostname: the masters would refuse every heartbeat.
            raise ValueError(
                f"this slave would advertise {address[:80]!r}, which the masters cannot reach it at: "
                "give --advertise host:port"
            )
        if self.retry_min > self.retry_max:
            raise ValueError("retry_min must not exceed retry_max")
        # The fencing lease only protects anything if heartbeats renew it several
        # times per lease; with fewer, one lost packet stops every job.
        if self.default_lease < 2 * self.heartbeat_interval:
            raise ValueError(
                f"default_lease ({self.default_lease}s) must be at least twice "
                f"heartbeat_interval ({self.heartbeat_interval}s)"
            )
        # A heartbeat that may hang for the whole lease cannot renew it in time.
        if self.request_timeout >= self.default_lease:
            raise ValueError(
                f"request_timeout ({self.request_timeout}s) must be shorter than default_lease "
                f"({self.default_lease}s)"
            )
        if self.fence_round_trip >= self.default_lease:
            raise ValueError(
                f"fence_round_trip ({self.fence_round_trip}s) must not exceed default_lease "
                f"({self.default_lease}s): the slave would be fenced all the time"
            )
        if self.cluster_secret_file is None:
            # Its log route and its heartbeats are authenticated in every configuration.
            raise ValueError(
                "--cluster-secret-file is required: give the masters' secret (a lone master "
                "without one generates <data-dir>/cluster-secret)"
            )
        try:
            secret = self.cluster_secret_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ValueError(
                f"cannot read cluster secret file {str(self.cluster_secret_file)!r}: "
                f"{exc.strerror or exc}"
            ) from None
        if not secret:
            raise ValueError(f"cluster secret file {str(self.cluster_secret_file)!r} is empty")
        self._secret = secret
        self._load_tls()
        urls: list[str] = []
        for entry in self.masters:
            if "://" not in entry:
                entry = f"{self.scheme}://{entry}"
            elif self.tls is not None and entry.startswith("http://"):
                raise ValueError(f"--masters {entry!r} is plain HTTP but TLS is on: give host:port or https://")
            if entry not in urls:
                urls.append(entry)
        self.masters = urls
        return self

    def master_url(self, host: str, port: int) -> str:
        return f"{self.scheme}://[{host}]:{port}" if ":" in host else f"{self.scheme}://{host}:{port}"

    @property
    def ports(self) -> PortRange:
        low, high = parse_port_range(self.port_range)
        return PortRange(low=low, high=high)

    @property
    def hardening(self) -> Hardening:
        return Hardening(
            pids_limit=self.job_pids_limit,
            log_max_size=self.job_log_max_size,
            log_max_files=self.job_log_max_files,
            cap_drop=tuple(self.job_cap_drop),
            no_new_privileges=not self.job_allow_new_privileges,
            pid_mode=self.job_pid_namespace,
        )

    @property
    def state_path(self) -> Path:
        """Where the persisted lease and fenced set live (see ``state_dir``)."""
        if self.state_dir is not None:
            return self.state_dir
        if os.geteuid() == 0:
            return Path("/var/lib/claud") / f"slave-{self.id}"
        base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
        return Path(base) / "claud" / f"slave-{self.id}"

    @property
    def cluster_secret(self) -> str:
        assert self._secret is not None  # the validator refuses settings without one
        return self._secret

    @property
    def listen_host_port(self) -> tuple[str, int]:
        return parse_host_port(self.listen)

    @property
    def advertise_address(self) -> str:
        """Where the masters fetch logs from: a wildcard bind address is no address."""
        if self.advertise:
            return self.advertise
        host, port = self.listen_host_port
        if names_no_host(host):
            host = socket.gethostname()
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def docker_stop_seconds(grace: float) -> int:
    """Docker takes whole seconds; round up so a job never gets less than it asked."""
    return max(0, math.ceil(grace))


class OrphanReaperSettings(BaseSettings):
    """Configuration of ``claud-orphan-reaper`` (claud.slave.orphans), the compose cluster's
    stand-in for a machine's power: jobs die with their slave's container."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", validate_default=True)

    compose_project: str = Field(
        ...,
        description="value of the claud.compose label of the job and slave containers to watch "
        "(the compose project)",
    )
    reap_interval: float = Field(
        2.0,
        gt=0,
        le=60,
        description="seconds between passes when no Docker event triggers one; bounds how long a "
        "job outlives its slave when an event is missed",
    )
    docker_timeout: float = Field(10.0, gt=0, description="seconds one Docker API call may take")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="log level")

    @field_validator("compose_project")
    @classmethod
    def _check_project(cls, value: str) -> str:
        # Compose's own rule for project names, so the label filter matches what compose wrote.
        if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,62}", value):
            raise ValueError(f"{value!r}: a compose project name (lowercase letters, digits, '_', '-')")
        return value


def docker_fence_seconds(grace: float) -> int:
    """Rounded *down*: a fence's kill must land by its deadline, never a second late."""
    return max(0, math.floor(grace))
