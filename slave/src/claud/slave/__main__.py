"""``claud-slave``: parse flags (each with its CLAUD_* twin), then serve one slave.

The flags are generated from ``SlaveSettings`` so that the CLI, the environment
and ``--help`` cannot disagree. A bad configuration ends the process with one
line on stderr and a non-zero status, never a traceback: an operator reading a
unit's journal should see what to fix, not where Python was.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from typing import Any, Literal, NoReturn, get_args, get_origin

import pydantic

from claud.api.logfmt import configure_logging, log_event
from claud.slave.settings import SlaveSettings, env_name, flag_name

PROG = "claud-slave"
EXIT_CONFIG = 2
EXIT_RUNTIME = 1


class ConfigError(Exception):
    """A configuration problem, phrased for the operator in one line."""


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{message} (see --help)")


def _format_default(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, list):
        return ",".join(map(str, value)) or "none"
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items()) or "none"
    return str(value)


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog=PROG,
        description="CLAUD slave agent: runs the jobs the masters place here as containers.",
        epilog="Every flag has an environment twin (shown), e.g. --heartbeat-interval is "
        "CLAUD_HEARTBEAT_INTERVAL. Durations are seconds (floats allowed). The lease after "
        "which jobs are stopped without a leader comes from the masters.",
        argument_default=argparse.SUPPRESS,  # absent flags must not hide the environment
    )
    for name, field in SlaveSettings.model_fields.items():
        description = field.description or ""
        if field.is_required():
            where = "required"
        else:
            default = field.get_default(call_default_factory=True)
            where = f"default: {_format_default(default)}"
        help_text = f"{description} [{where}; env {env_name(name)}]".replace("%", "%%")
        if field.annotation is bool:
            parser.add_argument(flag_name(name), dest=name, action="store_true", help=help_text)
        else:
            # Values stay strings here: pydantic converts and validates them with
            # the same rules (and messages) as the environment twins.
            choices = get_args(field.annotation) if get_origin(field.annotation) is Literal else ()
            metavar = "{" + "|".join(choices) + "}" if choices else name.upper()
            parser.add_argument(flag_name(name), dest=name, metavar=metavar, help=help_text)
    return parser


def describe_validation_error(exc: pydantic.ValidationError) -> str:
    problems: list[str] = []
    for error in exc.errors():
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        loc = error.get("loc") or ()
        name = str(loc[0]) if loc else ""
        if name in SlaveSettings.model_fields:
            if error.get("type") == "missing":
                message = "is required"
            elif isinstance(error.get("input"), str) and not str(error.get("type", "")).startswith(
                "value_error"
            ):
                message = f"{message} (got {error['input']!r})"
            problems.append(f"{flag_name(name)} (env {env_name(name)}) {message}")
        else:
            problems.append(message)
    return "invalid configuration: " + "; ".join(problems)


def load_settings(argv: Sequence[str] | None = None) -> SlaveSettings:
    values = vars(build_parser().parse_args(argv))
    try:
        return SlaveSettings(**values)
    except pydantic.ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None


def _fail(message: str, status: int) -> NoReturn:
    print(f"{PROG}: {message}", file=sys.stderr)
    raise SystemExit(status)


def main(argv: Sequence[str] | None = None) -> None:
    try:
        settings = load_settings(argv)
    except ConfigError as exc:
        _fail(str(exc), EXIT_CONFIG)

    # Imported after parsing so that --help and config errors stay instant.
    import logging

    import uvicorn

    from claud.slave.api import create_app
    from claud.slave.runtime import RuntimeUnavailable, make_runtime

    configure_logging("slave", settings.id, settings.log_level)
    logger = logging.getLogger("claud.slave")
    runtime = make_runtime(settings)
    ping = getattr(runtime, "ping", None)
    if ping is not None:
        try:
            ping()
        except RuntimeUnavailable as exc:
            _fail(str(exc), EXIT_RUNTIME)

    host, port = settings.listen_host_port
    config = uvicorn.Config(
        create_app(settings, runtime=runtime),
        host=host,
        port=port,
        log_config=None,  # keep the logfmt handler configure_logging installed
        access_log=False,
        lifespan="on",
        # A followed log stream would otherwise hold a SIGTERM'd slave forever.
        timeout_graceful_shutdown=3,
    )
    server = uvicorn.Server(config)
    # uvicorn re-raises the signal that stopped it once it has shut down, which
    # would make a clean SIGTERM look like a crash (status -15). These handlers
    # are what it restores before re-raising: they make the stop a clean exit 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    server.run()
    if not server.started:
        raise SystemExit(EXIT_RUNTIME)


if __name__ == "__main__":
    main()
