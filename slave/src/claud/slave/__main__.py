"""``claud-slave``: parse flags (each with its CLAUD_* twin), then serve one slave.

The flags are generated from ``SlaveSettings`` so that the CLI, the environment
and ``--help`` cannot disagree. A bad configuration ends the process with one
line on stderr and a non-zero status, never a traceback: an operator reading a
unit's journal should see what to fix, not where Python was.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
from collections.abc import Sequence
from typing import NoReturn

from claud.daemon import settings_cli
from claud.daemon.logfmt import configure_logging, log_event
from claud.daemon.settings_cli import ConfigError
from claud.slave.settings import SlaveSettings

PROG = "claud-slave"
EXIT_CONFIG = settings_cli.EXIT_CONFIG
EXIT_RUNTIME = 1
DESCRIPTION = "CLAUD slave agent: runs the jobs the masters place here as containers."
EPILOG = (
    "Every flag has an environment twin (shown), e.g. --heartbeat-interval is "
    "CLAUD_HEARTBEAT_INTERVAL. Durations are seconds (floats allowed). The lease after "
    "which jobs are stopped without a leader comes from the masters."
)

__all__ = ["ConfigError", "build_parser", "load_settings", "main"]


def build_parser() -> argparse.ArgumentParser:
    return settings_cli.build_parser(SlaveSettings, PROG, DESCRIPTION, EPILOG)


def load_settings(argv: Sequence[str] | None = None) -> SlaveSettings:
    return settings_cli.load_settings(SlaveSettings, argv, PROG, DESCRIPTION, EPILOG)


def _fail(message: str, status: int) -> NoReturn:
    settings_cli.fail(PROG, message, status)


def main(argv: Sequence[str] | None = None) -> None:
    try:
        settings = load_settings(argv)
    except ConfigError as exc:
        _fail(str(exc), EXIT_CONFIG)

    # Imported after parsing so that --help and config errors stay instant.
    import uvicorn

    from claud.slave.api import create_app
    from claud.slave.runtime import RuntimeUnavailable, make_runtime

    os.umask(0o077)  # nothing this process writes is for other users
    configure_logging("slave", settings.id, settings.log_level)
    runtime = make_runtime(settings)
    ping = getattr(runtime, "ping", None)
    if ping is not None:
        try:
            ping()
        except RuntimeUnavailable as exc:
            # Not a reason to stay away: heartbeats then say the runtime is unhealthy (the
            # masters place nothing here, and lose its jobs if it stays away past
            # node-dead-after), and the agent takes its containers over once the engine answers.
            log_event(
                logging.getLogger("claud.slave"),
                "runtime.unavailable_at_start",
                logging.WARNING,
                error=str(exc),
                action="starting anyway; reporting the runtime unhealthy until the engine answers",
            )

    host, port = settings.listen_host_port
    # Only masters call a slave (for its containers' logs): with TLS each must
    # present a certificate from the cluster's CA.
    tls_options = settings.tls.uvicorn_options(require_client_cert=True) if settings.tls else {}
    config = uvicorn.Config(
        create_app(settings, runtime=runtime),
        host=host,
        port=port,
        log_config=None,  # keep the logfmt handler configure_logging installed
        access_log=False,
        lifespan="on",
        # A followed log stream would otherwise hold a SIGTERM'd slave forever.
        timeout_graceful_shutdown=3,
        **tls_options,
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
