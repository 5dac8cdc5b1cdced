"""The ``claud`` command line, a thin shell over :class:`claud.client.Client`.

Humans get rich tables (coloured only on a terminal); ``--output json`` puts
pure JSON on stdout, and every message or progress line goes to stderr, so
``claud -o json jobs | jq`` always works. Exit codes are part of the contract:
see :class:`ExitCode`.

Tests drive the CLI without a network by passing a :class:`CliConfig` with an
``httpx.MockTransport`` as click's ``obj``::

    CliRunner().invoke(cli, ["jobs"], obj=CliConfig(transport=MockTransport(handler)))
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum
from pathlib import Path
from typing import Any, NoReturn, TypeVar, cast

import click
import httpx
from click.shell_completion import CompletionItem
from pydantic import ValidationError
from rich.console import Console, RenderableType

from claud.api.chaos import MAX_FAULT_SECONDS, ChaosAction
from claud.api.jobs import (
    DEFAULT_EXEC_TIMEOUT,
    MAX_EXEC_OUTPUT,
    MAX_EXEC_TIMEOUT,
    JobSpec,
    JobState,
    JobType,
    JobView,
    RestartPolicyName,
)
from claud.api.jobs import ID as JOB_ID
from claud.api.nodes import MAX_DRAIN_DEADLINE
from claud.api.protocol import EVENT_ID, TRACE_CURSOR
from claud.client import _render as render
from claud.client import _wire as wire
from claud.client import verify as verify_model
from claud.client._client import DEFAULT_POLL_INTERVAL, Client
from claud.client._events import Event
from claud.client._masters import log as sdk_log
from claud.client._masters import parse_masters
from claud.client.errors import (
    ClaudError,
    InvalidSpec,
    NoLeader,
    NotFound,
    Unauthorized,
    Unreachable,
    Untrusted,
    WaitTimeout,
)
from claud.client.tls_cli import tls

__all__ = ["CliConfig", "ExitCode", "cli", "main"]

#: How long one command keeps trying other masters. Shorter than the SDK's
#: default: a person at a prompt wants "unreachable" within seconds, and an
#: election takes about one. --failover-timeout / CLAUD_FAILOVER_TIMEOUT.
CLI_FAILOVER_TIMEOUT = 5.0


class ExitCode(IntEnum):
    OK = 0
    #: The job failed (``run --wait`` exits with the job's own code when it has
    #: one), or an error with no code of its own (a 409, a 500).
    FAILED = 1
    #: Bad arguments, or a spec refused locally or by the masters (422).
    USAGE = 2
    #: No master reachable, or masters without a leader: retry later.
    UNAVAILABLE = 3
    NOT_FOUND = 4
    UNAUTHORIZED = 5
    #: ``claud verify`` found something: an overlap, a missing, stuck or unplaceable job.
    VIOLATIONS = 6
    #: ``run --wait --timeout``: the job had not ended in time (it goes on).
    TIMED_OUT = 7
    #: Interrupted by Ctrl-C (128 + SIGINT, as shells report it).
    INTERRUPTED = 130


@dataclass
class CliConfig:
    """Everything one invocation needs to reach the cluster.

    The global options fill it in; a test passes its own as click's ``obj``
    to inject a ``transport`` and a short ``poll_interval``.
    """

    masters: str | None = None
    token: str | None = None
    output: str = "table"
    transport: httpx.BaseTransport | None = None
    poll_interval: float = DEFAULT_POLL_INTERVAL
    failover_timeout: float = CLI_FAILOVER_TIMEOUT
    ca_cert: str | None = None
    client_cert: str | None = None
    client_key: str | None = None

    @property
    def json(self) -> bool:
        return self.output == "json"

    def client(self) -> Client:
        return Client(
            self.masters,
            self.token,
            failover_timeout=self.failover_timeout,
            transport=self.transport,
            ca_cert=self.ca_cert,
            client_cert=self.client_cert,
            client_key=self.client_key,
        )


class CommandFailed(Exception):
    """An error worth one line on stderr and a specific exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def exit_code_for(error: ClaudError) -> ExitCode:
    if isinstance(error, InvalidSpec):
        return ExitCode.USAGE
    if isinstance(error, Unreachable | NoLeader):
        return ExitCode.UNAVAILABLE
    if isinstance(error, NotFound):
        return ExitCode.NOT_FOUND
    if isinstance(error, Unauthorized | Untrusted):
        return ExitCode.UNAUTHORIZED
    return ExitCode.FAILED


def describe_error(error: ClaudError) -> str:
    if isinstance(error, InvalidSpec):
        return f"invalid spec: {error}"
    if isinstance(error, Unauthorized):
        return f"unauthorized: {error} (check --token-file or CLAUD_TOKEN_FILE, --token or CLAUD_TOKEN)"
    if isinstance(error, Unreachable):
        return f"{error} (check --masters or CLAUD_MASTERS)"
    if isinstance(error, Untrusted):
        return f"untrusted master: {error}"
    return str(error)


class ClaudGroup(click.Group):
    """Turns failures into one line on stderr and the matching exit code, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ClaudError as error:
            fail(ctx, describe_error(error), exit_code_for(error))
        except CommandFailed as failure:
            fail(ctx, failure.message, failure.exit_code)
        except KeyboardInterrupt:
            ctx.exit(ExitCode.INTERRUPTED)


def fail(ctx: click.Context, message: str, exit_code: int) -> NoReturn:
    # Worded like click's own usage errors, so every failure reads the same.
    click.echo(click.style(f"Error: {message}", fg="red"), err=True)
    ctx.exit(exit_code)


_F = TypeVar("_F", bound=Callable[..., Any])


def pass_client(command: _F) -> _F:
    """Call the command with ``(config, client, ...)``; the client closes when the command ends."""

    @functools.wraps(command)
    def with_client(*args: Any, **kwargs: Any) -> Any:
        return command(*open_client(click.get_current_context()), *args, **kwargs)

    # Not quite _F: the wrapper supplies the first two arguments itself, and the
    # click decorators above it pass the rest, as they would to the command.
    return cast(_F, with_client)


def open_client(ctx: click.Context) -> tuple[CliConfig, Client]:
    config = ctx.ensure_object(CliConfig)
    try:
        client = config.client()
    except ValueError as exc:  # a CA bundle or client certificate that does not load
        raise CommandFailed(str(exc), ExitCode.USAGE) from None
    return config, ctx.with_resource(client)


# --- output --------------------------------------------------------------------


#: Off a terminal, lines are as long as their content: never wrapped or cut (an id cut
#: short in a pipe is a wrong id), up to this many columns.
PIPE_WIDTH = 10_000


def console(*, stderr: bool = False) -> Console:
    # On a terminal rich sizes tables to its width; off one it would assume 80 columns.
    probe = Console(stderr=stderr)
    width = None if probe.is_terminal else PIPE_WIDTH
    return Console(stderr=stderr, width=width, highlight=False, soft_wrap=False)


def print_human(renderable: RenderableType) -> None:
    """On a terminal, as rich lays it out; in a pipe, one line per row with no padding
    after the last column, so ``grep``, ``awk`` and ``wc -l`` see the rows as they are."""
    out = console()
    if out.is_terminal:
        out.print(renderable)
        return
    with out.capture() as captured:
        out.print(renderable)
    click.echo("\n".join(line.rstrip() for line in captured.get().splitlines()))


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2))


def show(config: CliConfig, data: Any, human: Callable[[], RenderableType]) -> None:
    """JSON on stdout for scripts, or the human rendering, built only if needed."""
    if config.json:
        print_json(data)
    else:
        print_human(human())


def dump(model: Any) -> Any:
    return model.model_dump(mode="json")


def note(message: str, *, style: str | None = None) -> None:
    """A message for the human: always stderr, never mixed into data on stdout."""
    click.echo(click.style(message, fg=style) if style else message, err=True)


class SdkNotes(logging.Handler):
    """Shows the SDK's notes (retrying on another master, following a job's
    next attempt) on stderr, so a slow answer is never a silent one."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            note(record.getMessage(), style="yellow")
        except Exception:  # noqa: BLE001 - a note must never break a command
            self.handleError(record)


_SDK_NOTES = SdkNotes(logging.INFO)


def show_sdk_notes() -> None:
    if _SDK_NOTES not in sdk_log.handlers:
        sdk_log.addHandler(_SDK_NOTES)
    if sdk_log.getEffectiveLevel() > logging.INFO:
        sdk_log.setLevel(logging.INFO)


# --- shell completion ----------------------------------------------------------------


def _completion_client(ctx: click.Context) -> Client:
    """A client for completing ids: the options typed so far, else the environment.

    Completion runs without the group's callback, so the options are read
    from the root context; it must answer at once, so no failover wait.
    """
    params = ctx.find_root().params
    token = params.get("token") or os.environ.get("CLAUD_TOKEN")
    token_file = params.get("token_file") or os.environ.get("CLAUD_TOKEN_FILE")
    if token is None and token_file:
        try:
            token = read_token_file(token_file)
        except click.BadParameter:
            token = None
    return Client(
        params.get("masters") or os.environ.get("CLAUD_MASTERS"),
        token,
        timeout=httpx.Timeout(2.0, connect=0.5),
        failover_timeout=0,
        ca_cert=params.get("ca_cert"),
        client_cert=params.get("client_cert"),
        client_key=params.get("client_key"),
    )


def _complete_ids(ctx: click.Context, incomplete: str, what: str) -> list[str]:
    try:
        with _completion_client(ctx) as client:
            if what == "job":
                ids = [job.id for job in client.jobs()]
            else:
                ids = [node.id for node in client.nodes() if node.role.value == "slave"]
    except Exception:  # noqa: BLE001 - no cluster, no token: simply no suggestions
        return []
    return [i for i in ids if i.startswith(incomplete)]


def complete_job_ids(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    return _complete_ids(ctx, incomplete, "job")


def complete_slave_ids(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    return _complete_ids(ctx, incomplete, "node")


# --- the commands ------------------------------------------------------------------


def read_token_file(path: str) -> str:
    """The token in ``path``, stripped; BadParameter naming the file when there is none."""
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeError) as exc:
        raise click.BadParameter(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}",
                                 param_hint="'--token-file' / CLAUD_TOKEN_FILE") from None
    if not token:
        raise click.BadParameter(f"{path} is empty", param_hint="'--token-file' / CLAUD_TOKEN_FILE")
    return token


def choose_token(ctx: click.Context, token: str | None, token_file: str | None) -> str | None:
    """One token from --token, --token-file and their environment twins.

    What the command line says beats the environment; given both ways at the
    same level, the caller must choose (the two could name different clusters)."""
    if token_file is None:
        return token
    if token is None:
        return read_token_file(token_file)
    from_env = click.core.ParameterSource.ENVIRONMENT
    token_from_env = ctx.get_parameter_source("token") == from_env
    file_from_env = ctx.get_parameter_source("token_file") == from_env
    if token_from_env and not file_from_env:
        return read_token_file(token_file)
    if file_from_env and not token_from_env:
        return token
    raise click.UsageError("give the token once: --token (CLAUD_TOKEN) or --token-file (CLAUD_TOKEN_FILE)")


def _check_masters(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None:
        try:
            parse_masters(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc), ctx=ctx, param=param) from None
    return value


@click.group(cls=ClaudGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--masters",
    envvar="CLAUD_MASTERS",
    show_envvar=True,
    metavar="URL,URL",
    callback=_check_masters,
    help="Master addresses, comma-separated (host:port or http[s]://host:port). "
    "[default: http://127.0.0.1:8700]",
)
@click.option(
    "--token",
    envvar="CLAUD_TOKEN",
    show_envvar=True,
    help="API token, sent as 'Authorization: Bearer <token>' (a command line is seen by "
    "every user of the machine: prefer --token-file).",
)
@click.option(
    "--token-file",
    envvar="CLAUD_TOKEN_FILE",
    show_envvar=True,
    metavar="FILE",
    help="File holding the API token (e.g. a master's <data-dir>/token).",
)
@click.option(
    "--output",
    "-o",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="'json' prints pure JSON on stdout, for scripts.",
)
@click.option(
    "--failover-timeout",
    envvar="CLAUD_FAILOVER_TIMEOUT",
    show_envvar=True,
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    help="How long a command keeps retrying other masters before giving up "
    f"(exit code 3). [default: {CLI_FAILOVER_TIMEOUT:g}]",
)
@click.option(
    "--ca-cert",
    envvar="CLAUD_CACERT",
    show_envvar=True,
    type=click.Path(exists=True, dir_okay=False),
    help="CA bundle (PEM) that https:// masters' certificates must chain to "
    "(claud-agent-ca.pem). [default: the system's CAs]",
)
@click.option(
    "--client-cert",
    envvar="CLAUD_CLIENT_CERT",
    show_envvar=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Client certificate (PEM) for masters that require one (claud tls cert create --cli).",
)
@click.option(
    "--client-key",
    envvar="CLAUD_CLIENT_KEY",
    show_envvar=True,
    type=click.Path(exists=True, dir_okay=False),
    help="The key of --client-cert (PEM).",
)
@click.version_option(package_name="claud-client", prog_name="claud")
@click.pass_context
def cli(
    ctx: click.Context,
    masters: str | None,
    token: str | None,
    token_file: str | None,
    output: str,
    failover_timeout: float | None,
    ca_cert: str | None,
    client_cert: str | None,
    client_key: str | None,
) -> None:
    """Run and watch containerised jobs on a CLAUD cluster.

    \b
    Exit codes: 0 ok, 1 job failed (run --wait: the job's exit code),
    2 usage or invalid spec, 3 no master reachable or no leader,
    4 not found, 5 unauthorized (or an untrusted TLS certificate),
    6 verify found something, 7 run --wait --timeout ran out (the job goes on).

    \b
    Shell completion (bash, zsh, fish), e.g. in ~/.bashrc:
      eval "$(_CLAUD_COMPLETE=bash_source claud)"
    """
    config = ctx.ensure_object(CliConfig)
    if masters is not None:
        config.masters = masters
    token = choose_token(ctx, token, token_file)
    if token is not None:
        config.token = token
    if failover_timeout is not None:
        config.failover_timeout = failover_timeout
    for name, value in (("ca_cert", ca_cert), ("client_cert", client_cert), ("client_key", client_key)):
        if value is not None:
            setattr(config, name, value)
    config.output = output
    show_sdk_notes()


_SPEC_FLAGS = (
    "name",
    "cpu",
    "memory_mb",
    "restart",
    "max_retries",
    "job_type",
    "env",
    "constraint",
    "stop_timeout",
    "idempotency_key",
    "count",
)


@cli.command()
@click.argument("args", nargs=-1, metavar="[SPEC.json | -- CMD...]")
@click.option("--image", help="Image to run; the job is then built from these flags.")
@click.option("--name", help="Job name. [default: derived from the image]")
@click.option("--cpu", type=float, help="CPU cores to reserve (fractions allowed).")
@click.option("--memory-mb", type=int, help="Memory limit in MiB.")
@click.option(
    "--restart", type=click.Choice([p.value for p in RestartPolicyName]), help="Restart policy."
)
@click.option(
    "--max-retries", type=int, help="Restarts allowed after the first attempt (on-failure)."
)
@click.option(
    "--type",
    "job_type",
    type=click.Choice([t.value for t in JobType]),
    help="batch runs to completion; service is kept running.",
)
@click.option(
    "--env", "-e", multiple=True, metavar="K=V", help="Environment variable (repeatable)."
)
@click.option(
    "--constraint", multiple=True, metavar="k=v", help="Slave label the job needs (repeatable)."
)
@click.option(
    "--stop-timeout", type=float, metavar="SECONDS",
    help="Grace between the stop signal and the kill when the job is stopped or fenced.",
)
@click.option(
    "--idempotency-key", metavar="KEY",
    help="Submitting again with the same key returns the first job instead of a second one.",
)
@click.option("--count", type=int, metavar="N", help="Allocations (copies) of the job, spread over the slaves.")
@click.option(
    "--wait", is_flag=True, help="Show progress until the job ends; exit with its exit code."
)
@click.option(
    "--timeout", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
    help=f"With --wait: give up waiting after SECONDS (exit code {int(ExitCode.TIMED_OUT)}); the job goes on.",
)
@pass_client
def run(
    config: CliConfig,
    client: Client,
    args: tuple[str, ...],
    image: str | None,
    wait: bool,
    timeout: float | None,
    **flags: Any,
) -> None:
    """Submit a job, from SPEC.json ('-' for stdin) or from flags.

    \b
      claud run job.json
      claud run --image claud/busybox:latest --cpu 0.5 --wait -- sh -c 'echo hi'

    Prints the job id (or, with -o json, the job) on stdout.
    """
    if image is None:
        given = [
            f"--{flag.replace('_', '-')}" for flag in _SPEC_FLAGS if flags[flag] not in (None, ())
        ]
        if len(args) != 1 or given:
            detail = (
                f"{', '.join(given)} only apply with --image" if given else "give one SPEC.json"
            )
            raise click.UsageError(
                f"{detail}: claud run SPEC.json | claud run --image IMG [options] -- CMD..."
            )
        spec = load_spec(args[0])
    else:
        spec = spec_from_flags(image, list(args), **flags)
    if timeout is not None and not wait:
        raise click.UsageError("--timeout only applies with --wait")

    job = client.submit(spec)
    if config.json and not wait:
        print_json(dump(job))
    if not config.json:
        click.echo(job.id)  # on stdout alone, for JOB=$(claud run ...)
    if not wait:
        return
    try:
        final = follow_progress(config, client, job, timeout)
    except KeyboardInterrupt:
        note(f"stopped waiting; job {job.id} keeps running (claud stop {job.id})")
        raise
    except WaitTimeout as exc:
        last = exc.job if isinstance(exc.job, JobView) else job
        if config.json:
            print_json(dump(last))
        note(f"gave up waiting after {timeout:g}s: job {job.id} is still {last.state.value}"
             f"{f' ({last.pending_reason})' if last.pending_reason else ''}; it goes on (claud stop {job.id})",
             style="red")
        click.get_current_context().exit(ExitCode.TIMED_OUT)
    if config.json:
        print_json(dump(final))
    note(
        render.job_outcome_line(final),
        style="green" if final.state is JobState.COMPLETED else "red",
    )
    code = job_exit_code(final)
    if code:
        click.get_current_context().exit(code)


def load_spec(path: str) -> JobSpec:
    """Read and validate SPEC.json locally: a typo costs no round trip and names its field."""
    name = "stdin" if path == "-" else path
    try:
        raw = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise CommandFailed(f"cannot read {name}: {exc.strerror or exc}", ExitCode.USAGE) from None
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CommandFailed(
            f"{name} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})",
            ExitCode.USAGE,
        ) from None
    if not isinstance(data, dict):
        raise CommandFailed(f"{name}: a job spec is a JSON object", ExitCode.USAGE)
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        raise CommandFailed(f"{name}: {wire.invalid_spec_from(exc)}", ExitCode.USAGE) from None


def spec_from_flags(
    image: str,
    command: list[str],
    *,
    name: str | None,
    cpu: float | None,
    memory_mb: int | None,
    restart: str | None,
    max_retries: int | None,
    job_type: str | None,
    env: Sequence[str],
    constraint: Sequence[str],
    stop_timeout: float | None = None,
    idempotency_key: str | None = None,
    count: int | None = None,
) -> JobSpec:
    data: dict[str, Any] = {
        "name": name or name_from_image(image),
        "image": image,
        "command": command,
    }
    resources = {k: v for k, v in (("cpu", cpu), ("memory_mb", memory_mb)) if v is not None}
    if resources:
        data["resources"] = resources
    restart_policy = {
        k: v for k, v in (("policy", restart), ("max_retries", max_retries)) if v is not None
    }
    if restart_policy:
        data["restart"] = restart_policy
    if job_type:
        data["type"] = job_type
    if env:
        data["env"] = key_values(env, "--env")
    if constraint:
        data["constraints"] = {"labels": key_values(constraint, "--constraint")}
    if stop_timeout is not None:
        data["stop_timeout"] = stop_timeout
    if idempotency_key is not None:
        data["idempotency_key"] = idempotency_key
    if count is not None:
        data["count"] = count
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        raise wire.invalid_spec_from(exc) from None


def name_from_image(image: str) -> str:
    """``registry:5000/team/web:1.2@sha256:...`` → ``web``: a name users recognise."""
    last = image.split("@", 1)[0].rsplit("/", 1)[-1].split(":", 1)[0]
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", last).lstrip("_.-")[:63]
    return name or "job"


def key_values(items: Sequence[str], option: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint=option)
        pairs[key] = value
    return pairs


def follow_progress(config: CliConfig, client: Client, job: JobView, timeout: float | None = None) -> JobView:
    """Print each transition on stderr as it is seen, and why a pending job waits as
    soon as the masters say; return the job once it has ended (WaitTimeout after
    ``timeout`` seconds)."""
    printed_events = 0
    final = job
    told: str | None = None
    for view in client.watch(job.id, timeout=timeout, poll_interval=config.poll_interval):
        final = view
        if view.pending_reason and view.pending_reason != told:
            note(f"job {view.id} cannot be placed yet: {view.pending_reason}", style="yellow")
        told = view.pending_reason
        if view.events is None:
            note(render.job_state_line(view))
            continue
        for event in view.events[printed_events:]:
            note(render.job_event_line(view.id, event))
        printed_events = len(view.events)
    return final


def job_exit_code(job: JobView) -> int:
    """The job's own exit code for the shell; 1 for a failure that has none."""
    code = job.exit_code
    if job.state is JobState.COMPLETED:
        return code if code and 0 < code < 256 else 0
    return code if code and 0 < code < 256 else ExitCode.FAILED


@cli.command()
@click.option(
    "--state", type=click.Choice([s.value for s in JobState]), help="Only jobs in this state."
)
@pass_client
def jobs(config: CliConfig, client: Client, state: str | None) -> None:
    """List jobs."""
    found = client.jobs(state)
    show(config, [dump(job) for job in found], lambda: render.jobs_table(found))


class _JobIdContext(click.Context):
    """``claud job ID`` has no word of its own between ``job`` and the id: its usage
    line and hints name ``claud job``, as they did before ``job`` had subcommands."""

    @property
    def command_path(self) -> str:
        return super().command_path.rstrip()


class JobIdCommand(click.Command):
    context_class = _JobIdContext


@click.command("show", cls=JobIdCommand)
@click.argument("job_id", metavar="ID", shell_complete=complete_job_ids)
@pass_client
def show_job(config: CliConfig, client: Client, job_id: str) -> None:
    """Show one job and every transition it went through."""
    found = client.job(job_id)
    show(config, dump(found), lambda: render.job_details(found))


class JobGroup(click.Group):
    """``claud job ID`` shows the job, ``claud job scale|update|history|revert ID ...`` change it.

    A first word that names no subcommand is the id of the job to show, as
    ``claud job ID`` always was: a job id is never one of those words (the
    masters make ids of 12 hex digits). The show command is no subcommand of its
    own, so ``claud job --help`` lists only the others.
    """

    def __init__(self, *args: Any, default: click.Command, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.default = default

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args and not ctx.resilient_parsing:  # as before: ``claud job`` is missing its ID
            raise click.MissingParameter(ctx=ctx, param=self.default.params[0])
        return super().parse_args(ctx, args)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        if args and self.get_command(ctx, args[0]) is None and not args[0].startswith("-"):
            return None, self.default, args
        return super().resolve_command(ctx, args)

    def format_usage(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        formatter.write_usage(ctx.command_path, "[OPTIONS] ID | COMMAND [ARGS]...")

    def shell_complete(self, ctx: click.Context, incomplete: str) -> list[CompletionItem]:
        ids = [CompletionItem(job_id) for job_id in _complete_ids(ctx, incomplete, "job")]
        return [*super().shell_complete(ctx, incomplete), *ids]


@cli.group(cls=JobGroup, default=show_job)
def job() -> None:
    """Show a job (claud job ID); scale, update, revert it, or list its versions.

    \b
      claud job JOB
      claud job scale JOB 3
      claud job update JOB web.json
      claud job history JOB
      claud job revert JOB 2
    """


@job.command("scale")
@click.argument("job_id", metavar="ID", shell_complete=complete_job_ids)
@click.argument("count", metavar="N", type=int)
@pass_client
def job_scale(config: CliConfig, client: Client, job_id: str, count: int) -> None:
    """Run N allocations of the job (a new version); nothing running is replaced."""
    scaled = client.scale(job_id, count)
    show(config, dump(scaled), lambda: render.text(render.job_version_line(scaled, f"scaled to {count}")))


@job.command("update")
@click.argument("job_id", metavar="ID", shell_complete=complete_job_ids)
@click.argument("spec_file", metavar="SPEC.json")
@pass_client
def job_update(config: CliConfig, client: Client, job_id: str, spec_file: str) -> None:
    """Give the job the spec in SPEC.json ('-' for stdin), as its next version.

    A change of count alone scales; any other change is rolled out, as the
    spec's "update" policy says (claud job ID shows the rollout).
    """
    updated = client.update(job_id, load_spec(spec_file))
    show(config, dump(updated), lambda: render.text(render.job_version_line(updated, "updated")))


@job.command("history")
@click.argument("job_id", metavar="ID", shell_complete=complete_job_ids)
@pass_client
def job_history(config: CliConfig, client: Client, job_id: str) -> None:
    """List the job's versions the masters keep (the last 10), newest first."""
    versions = client.versions(job_id)
    show(config, [dump(version) for version in versions], lambda: render.versions_table(versions))


@job.command("revert")
@click.argument("job_id", metavar="ID", shell_complete=complete_job_ids)
@click.argument("version", metavar="VERSION", type=click.IntRange(min=0))
@pass_client
def job_revert(config: CliConfig, client: Client, job_id: str, version: int) -> None:
    """Roll the job back to VERSION's spec (claud job history ID lists them), as a new version."""
    reverted = client.revert(job_id, version)
    show(config, dump(reverted), lambda: render.text(
        render.job_version_line(reverted, f"reverted to version {version}'s spec")))


@cli.command()
@click.argument("job_id", metavar="ID", shell_complete=complete_job_ids)
@click.option(
    "-f",
    "--follow",
    is_flag=True,
    help="Keep printing until the job has ended, following each restart's new container.",
)
@click.option("--tail", type=click.IntRange(min=0), help="Only the last N lines.")
@click.option("--attempt", type=click.IntRange(min=1), metavar="N",
              help="An earlier attempt's output (1 is the first), while its slave keeps the exited container.")
@pass_client
def logs(config: CliConfig, client: Client, job_id: str, follow: bool, tail: int | None, attempt: int | None) -> None:
    """Print a job's output (text, whatever --output says).

    With -f, wait for the job's container to start and keep printing until
    the job has ended, following each restart's new container. With
    --attempt N, the output of that attempt (claud job ID lists them).
    """
    if attempt is not None and follow:
        raise click.UsageError("--attempt shows an attempt that has ended: it cannot be followed (-f)")
    for line in client.logs(job_id, follow=follow, tail=tail, attempt=attempt):
        click.echo(line, nl=False)


@cli.command("exec")
@click.argument("job_id", metavar="ID", shell_complete=complete_job_ids)
@click.argument("command", nargs=-1, required=True, metavar="-- CMD...")
@click.option("--alloc", metavar="ALLOC", help="Run only in this allocation (refused unless it is the running one).")
@click.option(
    "--timeout", type=click.FloatRange(min=0, min_open=True, max=MAX_EXEC_TIMEOUT), default=DEFAULT_EXEC_TIMEOUT,
    show_default=True, callback=lambda ctx, param, value: _finite(param, value),
    help="Seconds the command may take.",
)
@pass_client
def exec_command(
    config: CliConfig, client: Client, job_id: str, command: tuple[str, ...], alloc: str | None, timeout: float
) -> None:
    """Run a command in a job's running container and exit with its exit code (not interactive).

    \b
      claud exec JOB -- cat /etc/hostname
      claud exec JOB --alloc JOB-2 -- sh -c 'ls /data'
    """
    result = client.exec(job_id, list(command), alloc=alloc, timeout=timeout)
    if config.json:
        print_json(dump(result))
    else:
        click.echo(result.stdout, nl=False)
        click.echo(result.stderr, nl=False, err=True)
    if result.truncated:
        note(f"output cut at {MAX_EXEC_OUTPUT} bytes per stream", style="yellow")
    # A shell's way: the command's own code; one the engine did not report (-1) is a failure.
    click.get_current_context().exit(result.exit_code if 0 <= result.exit_code <= 255 else ExitCode.FAILED)


@cli.command()
@click.argument("job_id", metavar="ID", shell_complete=complete_job_ids)
@pass_client
def stop(config: CliConfig, client: Client, job_id: str) -> None:
    """Stop a job; its state becomes 'stopped' once its container is."""
    stopped = client.stop(job_id)
    show(config, dump(stopped), lambda: render.text(f"job {stopped.id} {stopped.state.value}"))


@cli.group(invoke_without_command=True)
@click.pass_context
def nodes(ctx: click.Context) -> None:
    """List masters and slaves; drain or undrain a slave.

    \b
      claud nodes
      claud nodes drain s1
      claud nodes drain s1 --deadline 60
      claud nodes undrain s1
    """
    if ctx.invoked_subcommand is None:
        config, client = open_client(ctx)
        found = client.nodes()
        show(config, [dump(node) for node in found], lambda: render.nodes_table(found))


def _finite(param: click.Parameter, value: float | None) -> float | None:
    # FloatRange lets NaN through (every comparison with it is false).
    if value is not None and value != value:
        raise click.BadParameter("must be a number", param=param)
    return value


@nodes.command()
@click.argument("node_id", metavar="ID", shell_complete=complete_slave_ids)
@click.option(
    "--deadline",
    type=click.FloatRange(min=0, max=MAX_DRAIN_DEADLINE),
    envvar="CLAUD_DRAIN_DEADLINE",
    show_envvar=True,
    callback=lambda ctx, param, value: _finite(param, value),
    help="Seconds batch jobs may run on to finish; then they are killed and placed elsewhere. "
    "Without it every job moves at once.",
)
@pass_client
def drain(config: CliConfig, client: Client, node_id: str, deadline: float | None) -> None:
    """Move a slave's jobs elsewhere and place no new ones on it."""
    node = client.drain(node_id, deadline)
    show(config, dump(node), lambda: render.text(f"node {node.id} {node.state.value}"))


@nodes.command()
@click.argument("node_id", metavar="ID", shell_complete=complete_slave_ids)
@pass_client
def undrain(config: CliConfig, client: Client, node_id: str) -> None:
    """Let the scheduler place jobs on a drained slave again."""
    node = client.undrain(node_id)
    show(config, dump(node), lambda: render.text(f"node {node.id} {node.state.value}"))


@cli.group("operator")
def operator_group() -> None:
    """Operate the masters themselves: the cluster configuration and backups.

    \b
    Examples:
      claud operator members
      claud operator members add 4 10.0.0.4:8700
      claud operator members remove 3
      claud operator snapshot save backup.snap
      claud operator snapshot restore backup.snap
    """


@operator_group.group(invoke_without_command=True)
@click.pass_context
def members(ctx: click.Context) -> None:
    """List the cluster configuration; add or remove a master.

    A master is added as a learner (it gets the log, does not vote) and made a
    voter by the leader once it has caught up. To replace a dead master, add
    its successor (a new id, an empty data directory), then remove it.
    """
    if ctx.invoked_subcommand is None:
        config, client = open_client(ctx)
        found = client.members()
        show(config, dump(found), lambda: render.member_list(found))


@members.command("add")
@click.argument("member_id", metavar="ID", type=click.IntRange(min=1))
@click.argument("address", metavar="ADDRESS")
@pass_client
def members_add(config: CliConfig, client: Client, member_id: int, address: str) -> None:
    """Add master ID, reached at ADDRESS (host:port), as a learner."""
    found = client.add_member(member_id, address)
    show(config, dump(found), lambda: render.member_list(found))


@members.command("remove")
@click.argument("member_id", metavar="ID", type=click.IntRange(min=1))
@pass_client
def members_remove(config: CliConfig, client: Client, member_id: int) -> None:
    """Remove master ID from the configuration."""
    found = client.remove_member(member_id)
    show(config, dump(found), lambda: render.member_list(found))


@cli.command()
@pass_client
def cluster(config: CliConfig, client: Client) -> None:
    """Show the leader, term, commit index and masters."""
    view = client.cluster()
    show(config, dump(view), lambda: render.cluster_view(view))


@cli.command()
@click.option("--job", "jobs", multiple=True, metavar="ID", shell_complete=complete_job_ids,
              help="Only this job's transitions (repeatable).")
@click.option("--node", "nodes", multiple=True, metavar="ID", shell_complete=complete_slave_ids,
              help="Only this slave's transitions and those of the jobs on it (repeatable).")
@click.option("--type", "types", multiple=True, metavar="KIND",
              help="Only events of this kind (repeatable): job, node; with --trace a trace kind "
              "(role, vote, append, heartbeat, job, ...).")
@click.option("--trace", is_flag=True,
              help="The answering master's consensus trace instead: elections, votes, appends, heartbeats.")
@click.option("--all-masters", is_flag=True,
              help="With --trace: every master's trace, relayed by the answering one, with each one's status.")
@click.option("--after", metavar="ID",
              help="Resume after this event's id (INDEX.K; with --trace a trace id, with --all-masters a cursor "
              "MASTER:ID,...), as -o json prints them.")
@pass_client
def events(
    config: CliConfig, client: Client, jobs: tuple[str, ...], nodes: tuple[str, ...], types: tuple[str, ...],
    trace: bool, all_masters: bool, after: str | None,
) -> None:
    """Stream job and node transitions until Ctrl-C.

    With -o json, one JSON object per line. Filters of different kinds all
    apply (--job a --type job); repeating one widens it (--job a --job b).
    With --trace, what one master saw and did, as the live view draws it;
    --all-masters, every master's, merged by the one that answers;
    --after ID resumes where an earlier reader stopped.
    """
    if all_masters and not trace:
        raise click.UsageError("--all-masters goes with --trace")
    if after is not None:
        if all_masters:
            valid, wanted = bool(TRACE_CURSOR.fullmatch(after)), "a merged trace cursor (MASTER:ID,...)"
        elif trace:
            valid, wanted = after.isascii() and after.isdigit(), "a trace id (digits)"
        else:
            valid, wanted = bool(EVENT_ID.fullmatch(after)), "an event id (INDEX.K)"
        if not valid:
            raise click.BadParameter(f"{after[:40]!r} is not {wanted}", param_hint="'--after'")
    if trace:
        resume: int | str | None = after if all_masters or after is None else int(after)
        for event in client.trace(resume, all_masters=all_masters):
            if not event_matches(event, jobs=set(jobs), nodes=set(nodes), types=set(types), trace=True):
                continue
            data = event.data if isinstance(event.data, dict) else {"data": event.data}
            if config.json:
                # Merged, an event's own id is its master's; the stream's id (what --after takes) is the cursor.
                where = {"cursor": event.id} if all_masters else {"id": event.id}
                click.echo(json.dumps({**where, "type": event.type, **data}))
            else:
                click.echo(render.trace_event_line(event))
        return
    for event in client.events(after):
        if not event_matches(event, jobs=set(jobs), nodes=set(nodes), types=set(types)):
            continue
        if config.json:
            payload = event.data if isinstance(event.data, dict) else {"data": event.data}
            click.echo(json.dumps({"type": event.type, **payload}))
        else:
            click.echo(render.cluster_event_line(event))


def event_matches(event: Event, *, jobs: set[str], nodes: set[str], types: set[str], trace: bool = False) -> bool:
    """Whether ``claud events`` shows ``event`` under its filters (an empty set: no filter).

    The two streams name things differently: a job stream event names its job
    (``job``) or slave (``node``) by ``id``, and a job its slave by ``node_id``;
    a trace event names them ``job`` and ``slave``, and a kind there stands for
    its family too (``vote`` for ``vote.granted``)."""
    data = event.data if isinstance(event.data, dict) else {}
    if types and not any(event.type == t or (trace and event.type.startswith(t + ".")) for t in types):
        return False
    if trace:
        job, slave = data.get("job"), data.get("slave")
    else:
        job = data.get("id") if event.type == "job" else None
        slave = data.get("id") if event.type == "node" else data.get("node_id")
    if jobs and job not in jobs:
        return False
    return not (nodes and slave not in nodes)


@cli.group()
def system() -> None:
    """Cluster-wide maintenance.

    \b
    Examples:
      claud system gc
    """


@system.command()
@pass_client
def gc(config: CliConfig, client: Client) -> None:
    """Remove old terminal jobs and dead slaves now, by the masters' GC settings.

    Terminal jobs finished more than --job-gc-after ago go, except the
    --job-gc-keep most recently finished; dead slaves silent for
    --node-gc-after go, except those with jobs placed on them. A removed
    job answers 404 from then on.
    """
    result = client.system_gc()
    show(config, dump(result), lambda: render.text(
        f"collected {len(result.jobs)} jobs and {len(result.slaves)} slaves (index {result.index})"
    ))


@operator_group.group()
def snapshot() -> None:
    """Save the cluster's tables to a file, or restore them from one."""


@snapshot.command("save")
@click.argument("file", type=click.Path(dir_okay=False, writable=True, path_type=Path))
@pass_client
def snapshot_save(config: CliConfig, client: Client, file: Path) -> None:
    """Write a consistent backup from the leader to FILE (replaced atomically, 0600)."""
    header = client.save_snapshot(file)
    show(config, dump(header), lambda: render.text(
        f"saved {file}: index {header.index}, term {header.term}, {header.size} bytes, "
        f"{header.jobs} jobs, {header.slaves} slaves, sha256 {header.sha256}"
    ))


@snapshot.command("restore")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, readable=True, path_type=Path))
@pass_client
def snapshot_restore(config: CliConfig, client: Client, file: Path) -> None:
    """Replace the cluster's jobs and slaves tables with the backup in FILE.

    Jobs the backup does not know are stopped by their slaves; jobs it
    places on a slave that runs them keep running. The file is checked
    (size, SHA-256, every record) first: a damaged one changes nothing.
    """
    result = client.restore_snapshot(file)
    show(config, dump(result), lambda: render.text(
        f"restored {file}: {result.jobs} jobs, {result.slaves} slaves "
        f"(taken at index {result.source_index}, term {result.source_term}; restored at index {result.index})"
    ))


#: The engine addresses the Docker SDK takes (as DOCKER_HOST does).
DOCKER_HOST = re.compile(r"(?:unix|tcp|http|https|ssh|npipe)://[\x21-\x7e]{1,1000}")


def _check_docker_hosts(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...]:
    for host in value:
        if not DOCKER_HOST.fullmatch(host):
            raise click.BadParameter(
                f"{host[:80]!r} is not an engine URL (unix:///var/run/docker.sock, tcp://HOST:2375, ssh://HOST)",
                ctx=ctx, param=param)
    return value


def _check_job_ids(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...]:
    for job_id in value:
        if not JOB_ID.fullmatch(job_id):
            raise click.BadParameter(f"{job_id[:80]!r} is not a job id", ctx=ctx, param=param)
    return value


@cli.command()
@click.option("--since", metavar="TIME", help="Start of the window: RFC 3339 (2026-12-02T14:00:00Z) or a "
              "duration ago (90s, 10m, 2h, 1d). [default: everything the engines still hold]")
@click.option("--until", metavar="TIME", help="End of the window, as --since; never later than now. [default: now]")
@click.option("--docker-events", "docker_events", type=click.Path(dir_okay=False, path_type=Path),
              metavar="FILE", help="A saved log (docker events --format '{{json .}}') instead of the live engines.")
@click.option("--docker-host", "docker_hosts", multiple=True, metavar="URL", callback=_check_docker_hosts,
              help="A slave's Docker engine (repeatable). [default: the local one, DOCKER_HOST]")
@click.option("--acknowledged", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Job ids a client was told exist, one a line: each one the masters do not know is missing.")
@click.option("--stuck-after", type=click.FloatRange(min=0), default=verify_model.DEFAULT_STUCK_AFTER,
              show_default=True, metavar="SECONDS", callback=lambda ctx, param, value: _finite(param, value),
              help="A job in a passing state (not running, not ended) without a transition for longer "
              "is stuck (unplaceable when pending with the scheduler's reason).")
@click.option("--job", "job_ids", multiple=True, metavar="ID", shell_complete=complete_job_ids,
              callback=_check_job_ids, help="Judge only this job (repeatable).")
@pass_client
def verify(
    config: CliConfig,
    client: Client,
    since: str | None,
    until: str | None,
    docker_events: Path | None,
    docker_hosts: tuple[str, ...],
    acknowledged: Path | None,
    stuck_after: float,
    job_ids: tuple[str, ...],
) -> None:
    """Judge a run's history: exit 0 only when nothing is wrong.

    \b
    Reads the containers' start and die events from the slaves' Docker
    engines (or a saved log) and the jobs from the masters, and reports,
    job by job:
      overlap      two containers of one job running at once
      missing      an --acknowledged id the masters do not know
      stuck        pending, scheduled, starting, stopping or lost with no
                   transition for --stuck-after seconds (running never is)
      unplaceable  pending that long with the scheduler's reason
    Intervals are [start, die): one container dying at the instant the next
    starts is no overlap; one with no die runs until --until.

    \b
      claud verify --since 10m
      claud verify --docker-events run.jsonl --acknowledged acked.txt -o json
    """
    from claud.client import _verify_sources as sources

    now = datetime.now(UTC)
    # Not later than now: asked for a future end, an engine would wait for it.
    window_end = min(_instant(until, now, "--until"), now) if until else now
    window_start = _instant(since, now, "--since") if since else datetime.fromtimestamp(1, UTC)
    if window_start > window_end:
        raise click.BadParameter("--since is after --until", param_hint="'--since'")
    only = frozenset(job_ids) if job_ids else None
    acked = read_acknowledged(acknowledged) if acknowledged is not None else []
    try:
        if docker_events is not None:
            if docker_hosts:
                raise click.UsageError("give --docker-events or --docker-host, not both")
            container_events = sources.saved_events(docker_events)
        else:
            container_events = sources.engine_events(
                docker_hosts, window_start.timestamp(), window_end.timestamp())
    except verify_model.EventLogError as exc:
        raise CommandFailed(str(exc), ExitCode.USAGE) from None
    except sources.SourceUnavailable as exc:
        raise CommandFailed(str(exc), ExitCode.UNAVAILABLE) from None
    histories, known = sources.job_histories(client, window_start, only)
    # Without --since the record begins with its first event: a container seen
    # dying first was running from then (at least), not from 1970.
    record_start = window_start.timestamp() if since else min(
        (e.at for e in container_events), default=window_end.timestamp())
    verdict = verify_model.judge(
        container_events,
        histories,
        known=known,
        since=min(record_start, window_end.timestamp()),
        until=window_end.timestamp(),
        now=now,
        acknowledged=acked,
        stuck_after=stuck_after,
        only=only,
    )
    show(config, verdict.as_json(), lambda: render.verdict(verdict))
    if not verdict.ok:
        click.get_current_context().exit(ExitCode.VIOLATIONS)


def _instant(value: str, now: datetime, option: str) -> datetime:
    try:
        return verify_model.parse_instant(value, now)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=f"'{option}'") from None


def read_acknowledged(path: Path) -> list[str]:
    """The job ids in ``path``, one a line (blank lines and ``#`` comments skipped), each a valid id."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeError) as exc:
        raise click.BadParameter(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}",
                                 param_hint="'--acknowledged'") from None
    ids: list[str] = []
    for number, line in enumerate(lines, 1):
        job_id = line.strip()
        if not job_id or job_id.startswith("#"):
            continue
        if not JOB_ID.fullmatch(job_id):
            raise click.BadParameter(f"{path} line {number}: {job_id[:80]!r} is not a job id",
                                     param_hint="'--acknowledged'")
        ids.append(job_id)
    return ids


@cli.group()
def chaos() -> None:
    """Break a demo cluster on purpose: kill, pause or partition a master or a slave.

    TARGET is a master's id (1) or a slave's id (demo-s2). Only a cluster whose
    masters and slaves were started with --demo-faults takes these (make demo's
    does); any other answers chaos_disabled.

    \b
    Examples:
      claud chaos kill 1                 the master crashes (exit 137); make demo restarts it
      claud chaos pause demo-s2          frozen for 15 s, as by SIGSTOP: it answers nothing
      claud chaos resume demo-s2
      claud chaos partition 2            cut off from the other masters and the slaves
      claud chaos partition 2 --seconds 10
      claud chaos heal 2
    """


_FAULT_SECONDS = click.option(
    "--seconds", type=click.FloatRange(min=0, min_open=True, max=MAX_FAULT_SECONDS),
    callback=lambda ctx, param, value: _finite(param, value),
    help="How long it lasts (pause: 15 by default; partition: until heal by default).",
)


def _chaos(config: CliConfig, client: Client, action: ChaosAction, target: str, seconds: float | None) -> None:
    result = client.chaos(action, target, seconds)
    show(config, dump(result), lambda: render.text(result.message))


@chaos.command("kill")
@click.argument("target", metavar="TARGET")
@pass_client
def chaos_kill(config: CliConfig, client: Client, target: str) -> None:
    """Crash TARGET: it exits at once with status 137, as after SIGKILL."""
    _chaos(config, client, ChaosAction.KILL, target, None)


@chaos.command("pause")
@click.argument("target", metavar="TARGET")
@_FAULT_SECONDS
@pass_client
def chaos_pause(config: CliConfig, client: Client, target: str, seconds: float | None) -> None:
    """Freeze TARGET for --seconds (default 15), as SIGSTOP would: it neither works nor answers."""
    _chaos(config, client, ChaosAction.PAUSE, target, seconds)


@chaos.command("resume")
@click.argument("target", metavar="TARGET")
@pass_client
def chaos_resume(config: CliConfig, client: Client, target: str) -> None:
    """End TARGET's pause now."""
    _chaos(config, client, ChaosAction.RESUME, target, None)


@chaos.command("partition")
@click.argument("target", metavar="TARGET")
@_FAULT_SECONDS
@pass_client
def chaos_partition(config: CliConfig, client: Client, target: str, seconds: float | None) -> None:
    """Cut TARGET off from the other masters and slaves until heal (or for --seconds).

    A partitioned master's public API still answers: ask it, and see it lose the leader."""
    _chaos(config, client, ChaosAction.PARTITION, target, seconds)


@chaos.command("heal")
@click.argument("target", metavar="TARGET")
@pass_client
def chaos_heal(config: CliConfig, client: Client, target: str) -> None:
    """End TARGET's partition now."""
    _chaos(config, client, ChaosAction.HEAL, target, None)


cli.add_command(tls)


def _set_output(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.ensure_object(CliConfig).output = value


def _accept_output_after(command: click.Command) -> None:
    """``-o/--output`` after the subcommand as well as before it: ``claud jobs -o json``
    is what kubectl and nomad users type. The later one wins."""
    if not any("--output" in getattr(param, "opts", ()) for param in command.params):
        command.params.append(click.Option(
            ["--output", "-o"], type=click.Choice(["table", "json"]), default=None, expose_value=False,
            callback=_set_output, help="As the global --output: 'json' prints pure JSON on stdout.",
        ))
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _accept_output_after(sub)


for _command in (*cli.commands.values(), show_job):
    _accept_output_after(_command)


#: How long Ctrl-C may take to unwind (notes printed, streams closed) before the process just ends.
INTERRUPT_GRACE = 3.0


def _interrupted(signum: int, frame: object) -> None:
    """Unwind as Python does on Ctrl-C, with a watchdog that ends the process if that hangs.

    The KeyboardInterrupt can land inside a library's critical section (the
    HTTP connection pool holds a lock while a stream is read, and once in a
    while the suite saw ``claud events`` ignore SIGINT for good): closing the
    stream then waits on a lock nobody will release. Nothing the command line
    holds needs more cleanup than the kernel gives a process that exits.
    """
    watchdog = threading.Timer(INTERRUPT_GRACE, _exit_interrupted)
    watchdog.daemon = True
    watchdog.start()
    signal.signal(signal.SIGINT, signal.default_int_handler)
    raise KeyboardInterrupt


def _exit_interrupted() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe or stream: nothing more to say
            stream.flush()
    os._exit(ExitCode.INTERRUPTED)


def main() -> NoReturn:
    """The ``claud`` console script."""
    signal.signal(signal.SIGINT, _interrupted)
    cli.main(prog_name="claud")
    raise AssertionError("click's standalone mode always exits")  # pragma: no cover


if __name__ == "__main__":
    main()
