"""The one settings object of a master process.

Every flag of ``claud-master`` has an environment twin with the ``CLAUD_``
prefix (``--node-dead-after`` <=> ``CLAUD_NODE_DEAD_AFTER``); flags win.
Durations are seconds. The defaults suit a laptop and meet the targets:
a dead slave's jobs run elsewhere within ``node_dead_after`` + 2 s
(in a cluster past ``max_heartbeats_per_second`` slaves per heartbeat
interval, dead-after grows with it: :mod:`claud.master.heartbeat_terms`).
"""

from __future__ import annotations

import math
import socket
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from claud.api.slave_protocol import DEFAULT_FENCE_STOP_GRACE
from claud.daemon.addresses import names_no_host, parse_host_port
from claud.daemon.tls_settings import TlsSettings
from claud.master.heartbeat_terms import DEPOSED_LEADER_ELECTION_TIMEOUTS, FENCE_FANOUT_MARGIN, fencing_bound
from claud.master.scheduler import Strategy

#: A master's consensus clock ticks this share of an election timeout, and
#: masters heartbeat each other this share apart (claud.master.replication:
#: 1 and HEARTBEAT_TICKS of ELECTION_TICKS).
MASTER_TICK_SHARE = 0.1
MASTER_HEARTBEAT_SHARE = 0.2
#: The default --peer-gone-delay, as a share of the election timeout: a
#: quarter, rounded up to ticks, is the shortest wait above a heartbeat.
DEFAULT_PEER_GONE_SHARE = 0.25

__all__ = ["DEPOSED_LEADER_ELECTION_TIMEOUTS", "FENCE_FANOUT_MARGIN", "MasterSettings", "split_addresses"]


def split_addresses(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class MasterSettings(TlsSettings):
    model_config = SettingsConfigDict(env_prefix="CLAUD_", extra="forbid")

    id: int = Field(..., ge=0, description="this master's id, unique in the cluster; the lowest id leads")
    listen: str = Field("127.0.0.1:8700", description="host:port of the HTTP API")
    advertise: str | None = Field(
        None, description="host:port others use to reach this master (default: --listen)"
    )
    data_dir: Path = Field(Path("./data"), description="log, snapshots and the generated API token live here")
    peers: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="other masters' HTTP addresses, comma separated"
    )
    cluster_size: int | None = Field(None, ge=1, description="masters in the cluster (default: 1 + number of peers)")
    recover_from_data_dir: bool = Field(
        False,
        description="disaster recovery, for one start: make this master's data the only member of a new "
        "cluster (a new cluster id) with everything its log holds; then add others with empty data dirs "
        "(claud operator members add) and start without this flag",
    )
    discovery_port: int = Field(8702, ge=1, le=65535, description="UDP broadcast discovery port")
    no_discovery: bool = Field(False, description="disable UDP broadcast discovery")
    token_file: Path | None = Field(
        None, description="file holding the API bearer token (default: generated in the data dir)"
    )
    cluster_secret_file: Path | None = Field(
        None,
        description="file holding the secret that masters and slaves present to each other (default: "
        "generated in the data dir as cluster-secret, for a lone master without discovery; give its "
        "slaves that file)",
    )
    tls_cert_file: Path | None = Field(
        None, description="this master's TLS certificate (PEM); with the key and CA files, every listener "
        "serves HTTPS and every call to another master or a slave verifies it against the CA",
    )
    tls_key_file: Path | None = Field(None, description="the key of --tls-cert-file (PEM)")
    tls_ca_file: Path | None = Field(
        None, description="the CA (PEM) that signed every master's and slave's certificate"
    )
    tls_verify_clients: bool = Field(
        False, description="with TLS, refuse any connection without a client certificate from the CA "
        "(CLI and SDK users then need one too: claud tls cert create --cli); "
        "without it, a certificate that is presented must still be from the CA",
    )
    election_timeout: float = Field(
        0.6, gt=0.05, description="base election timeout, seconds; masters rank theirs by id (lowest stands first)"
    )
    peer_gone_delay: float | None = Field(
        None, ge=0,
        description="when a follower finds its leader's port refusing connections (the process is gone, "
        "not paused or cut off), it stands after this many seconds per rank among the masters still there, "
        "instead of whole election timeouts; above the masters' heartbeat (election_timeout/5) and at most "
        "0.9*election_timeout; 0 waits the full timeout (default: election_timeout/4)",
    )
    peer_gone_probe_timeout: float = Field(
        0.5, gt=0, le=10,
        description="after a peer hangs up its connection, how long the one probe connection that asks "
        "whether its port still listens may take, seconds (only a refusal counts; a timeout never does)",
    )
    propose_timeout: float = Field(
        5.0, gt=0, description="a write not committed by a quorum within this answers 503 (retry it)"
    )
    heartbeat_interval: float = Field(1.0, gt=0, description="how often slaves heartbeat, seconds (sent to slaves)")
    max_heartbeats_per_second: float = Field(
        100.0, gt=0, le=1_000_000,
        description="heartbeats per second the leader aims to handle at most: with more than this many "
        "live slaves per --heartbeat-interval, the interval it hands out grows with their number (plus a "
        "random stagger of up to a quarter), and the lease, suspect-after and dead-after it applies to "
        "each slave grow by the same factor",
    )
    suspect_after: float = Field(3.0, gt=0, description="a slave silent this long is marked suspect")
    node_dead_after: float = Field(
        10.0, gt=0, description="a slave silent this long is dead and its jobs are rescheduled"
    )
    slave_lease: float = Field(
        4.0, gt=0, description="a slave that hears no leader this long stops its containers (fencing)"
    )
    fence_stop_grace: float = Field(
        DEFAULT_FENCE_STOP_GRACE, ge=0,
        description="the longest SIGTERM grace a fencing slave allows before SIGKILL "
        "(Docker rounds it up to whole seconds)",
    )
    strategy: Strategy = Field(Strategy.BINPACK, description="placement strategy: binpack or spread")
    snapshot_every: int = Field(10_000, ge=10, description="log entries between snapshots")
    snapshot_chunk_bytes: int = Field(
        1 << 20, ge=64 << 10, le=8 << 20,
        description="a snapshot streams to a lagging follower in chunks of this many bytes, each with its own "
        "timeout: smaller for slow links",
    )
    node_touch_interval: float = Field(5.0, gt=0, description="how often heartbeat times are replicated")
    watch_max_wait: float = Field(15.0, gt=0, description="longest a slave's watch long-poll is held")
    log_level: str = Field("info", description="debug, info, warning or error")
    demo_faults: bool = Field(
        False,
        description="accept fault injection from `claud chaos` (demo clusters only: anyone holding the API token "
        "can then stop this process)",
    )
    max_request_bytes: int = Field(
        1024 * 1024, ge=4096, description="largest public request body, bytes; a larger one answers 413"
    )
    max_internal_request_bytes: int = Field(
        256 * 1024 * 1024, ge=1024 * 1024,
        description="largest master<->master or slave request body, bytes (a snapshot travels in 1 MiB chunks)",
    )
    request_read_timeout: float = Field(
        30.0, gt=0, description="a request body not received within this answers 408"
    )
    request_header_timeout: float = Field(
        10.0, gt=0, description="a connection that sends no complete request headers within this is closed"
    )
    refused_log_every: float = Field(
        10.0, gt=0, description="at most one auth.refused line per client address this often (the next counts the rest)"
    )
    max_connections: int = Field(
        4096, ge=16,
        description="open client connections at most (also kept below the open-files limit); "
        "at the cap the longest-idle connection is closed to make room",
    )
    job_gc_after: float = Field(
        24 * 3600.0, gt=0,
        description="a terminal job (completed, failed, stopped) finished longer ago than this is removed "
        "by GC, unless it is among the --job-gc-keep most recently finished, seconds",
    )
    job_gc_keep: int = Field(
        10_000, ge=0, le=1_000_000,
        description="the most recently finished terminal jobs that GC always keeps, however old",
    )
    node_gc_after: float = Field(
        24 * 3600.0, gt=0,
        description="a dead slave last heard from longer ago than this is removed by GC "
        "(never one with jobs placed on it), seconds; at least --node-dead-after",
    )
    gc_interval: float = Field(300.0, gt=0, description="how often the leader runs a GC pass, seconds")
    max_restore_bytes: int = Field(
        64 * 1024 * 1024, ge=1024 * 1024,
        description="largest backup `claud operator snapshot restore` accepts, bytes (it travels as one log "
        "entry; at most --max-internal-request-bytes)",
    )

    @field_validator("peers", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        return split_addresses(value)

    @field_validator("listen", "advertise")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None:
            parse_host_port(value)
        return value

    @field_validator("advertise")
    @classmethod
    def _concrete(cls, value: str | None) -> str | None:
        if value is not None and names_no_host(parse_host_port(value)[0]):
            raise ValueError(f"{value!r} names no host; advertise an address others can reach")
        return value

    @field_validator("peers")
    @classmethod
    def _peer_addresses(cls, value: list[str]) -> list[str]:
        for peer in value:
            parse_host_port(peer)
        return value

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        if value.lower() not in {"debug", "info", "warning", "error"}:
            raise ValueError("must be debug, info, warning or error")
        return value.lower()

    @model_validator(mode="after")
    def _timeouts_are_safe(self) -> MasterSettings:
        needed, terms = self.fencing_bound()
        if self.node_dead_after < needed:
            raise ValueError(
                f"node_dead_after ({self.node_dead_after:g}s) must be at least {terms} = {needed:g}s: "
                "a cut-off slave may still run its jobs until then, so a job could run on two slaves"
            )
        if self.slave_lease <= 2 * self.heartbeat_interval:
            raise ValueError(
                f"slave_lease ({self.slave_lease:g}s) must exceed two heartbeat intervals "
                f"({2 * self.heartbeat_interval:g}s), or healthy slaves would fence themselves"
            )
        # A leader failover (detection, then an election) takes about three
        # election timeouts; slaves must not fence themselves during one.
        if self.slave_lease < 3 * self.election_timeout:
            raise ValueError(
                f"slave_lease ({self.slave_lease:g}s) must be at least 3 election timeouts "
                f"({3 * self.election_timeout:g}s), or slaves would stop their jobs during a leader failover"
            )
        gone, highest = self.peer_gone_seconds, (1 - MASTER_TICK_SHARE) * self.election_timeout
        if gone and not MASTER_HEARTBEAT_SHARE * self.election_timeout < gone <= highest:
            raise ValueError(
                f"peer_gone_delay ({gone:g}s) must be 0, or above the masters' heartbeat "
                f"({MASTER_HEARTBEAT_SHARE * self.election_timeout:g}s: a follower wrongly told its leader is "
                f"gone hears it again before standing) and at most {highest:g}s (a tick below election_timeout, "
                f"{self.election_timeout:g}s, or the hint saves nothing)"
            )
        if self.cluster_size is not None and len(self.peers) > self.cluster_size - 1:
            raise ValueError(
                f"--peers names {len(self.peers)} other masters but --cluster-size is {self.cluster_size}"
            )
        # A generated secret lives on one master only: others (and discovery's
        # signatures) cannot share it, and no configuration runs without one.
        if self.cluster_secret_file is None:
            if self.size > 1:
                raise ValueError(
                    f"a cluster of {self.size} masters needs a shared secret: add --cluster-secret-file F "
                    "(the same file on every master and slave)"
                )
            if not self.no_discovery:
                raise ValueError(
                    "discovery (on by default) needs a shared secret: add --cluster-secret-file F "
                    "(the same file on every master and slave), or --no-discovery"
                )
        if self.suspect_after >= self.node_dead_after:
            raise ValueError("suspect_after must be shorter than node_dead_after")
        if self.node_gc_after < self.node_dead_after:
            raise ValueError(
                f"node_gc_after ({self.node_gc_after:g}s) must be at least node_dead_after "
                f"({self.node_dead_after:g}s): only a slave declared dead is collected"
            )
        if self.max_restore_bytes > self.max_internal_request_bytes:
            raise ValueError(
                f"max_restore_bytes ({self.max_restore_bytes}) must not exceed max_internal_request_bytes "
                f"({self.max_internal_request_bytes}): a restore travels between masters as one entry"
            )
        self._load_tls()
        if self.tls_verify_clients and self.tls is None:
            raise ValueError("--tls-verify-clients needs TLS: --tls-cert-file, --tls-key-file and --tls-ca-file")
        return self

    def fencing_bound(self) -> tuple[float, str]:
        """The latest a cut-off slave's containers may still run, counted from its
        last heartbeat the leader received, and the terms that make it up.

        The slave's lease runs from when it sent that heartbeat; a deposed
        leader may renew it for up to two election timeouts more; the slave
        checks its lease once per heartbeat interval; ``docker stop -t`` takes
        whole seconds, so the grace is rounded up; and issuing every stop at
        once takes a moment (FENCE_FANOUT_MARGIN). These are the unscaled
        terms: :mod:`claud.master.heartbeat_terms` says why scaled ones keep it.
        """
        deposed = DEPOSED_LEADER_ELECTION_TIMEOUTS * self.election_timeout
        grace = math.ceil(self.fence_stop_grace)
        total = fencing_bound(
            lease=self.slave_lease, interval=self.heartbeat_interval,
            election_timeout=self.election_timeout, fence_stop_grace=self.fence_stop_grace,
        )
        terms = (
            f"slave_lease ({self.slave_lease:g}s) + {DEPOSED_LEADER_ELECTION_TIMEOUTS}*election_timeout ({deposed:g}s) "
            f"+ heartbeat_interval ({self.heartbeat_interval:g}s) + fence_stop_grace rounded up ({grace}s) "
            f"+ stop fan-out margin ({FENCE_FANOUT_MARGIN:g}s)"
        )
        return round(total, 6), terms

    @property
    def peer_gone_seconds(self) -> float:
        """``peer_gone_delay`` with its default filled in; 0 when disabled."""
        if self.peer_gone_delay is None:
            return self.election_timeout * DEFAULT_PEER_GONE_SHARE
        return self.peer_gone_delay

    @property
    def advertised_address(self) -> str:
        """Where others reach this master: a wildcard bind address is no address.

        Discovery announces it signed and receivers use it as is (never the
        datagram's unauthenticated source), so it must name a host."""
        if self.advertise:
            return self.advertise
        host, port = parse_host_port(self.listen)
        if names_no_host(host):
            host = socket.gethostname()
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    @property
    def size(self) -> int:
        return self.cluster_size or 1 + len(self.peers)

    @property
    def quorum(self) -> int:
        return self.size // 2 + 1
