"""``claud-master``: one master process, one uvicorn worker."""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Sequence

import uvicorn

from claud.daemon.addresses import parse_host_port
from claud.daemon.logfmt import configure_logging, log_event
from claud.daemon.settings_cli import ConfigError, parse_settings
from claud.master import collector
from claud.master.connection_guard import connection_budget, guarded_protocol, raise_file_limit
from claud.master.settings import MasterSettings

PROG = "claud-master"


def main(argv: Sequence[str] | None = None) -> None:
    settings = parse_settings(
        MasterSettings, argv, PROG, "A CLAUD master: API, replicated tables, scheduler.",
        "Every flag has an environment twin (shown), e.g. --node-dead-after is CLAUD_NODE_DEAD_AFTER. "
        "Durations are seconds (floats allowed).",
    )
    # Whatever this process creates (the log, its WAL, snapshots, generated
    # credentials) is for its own user only.
    os.umask(0o077)
    configure_logging("master", str(settings.id), settings.log_level)
    collector.watch_pauses()
    # Imported late so that --help and bad flags answer without loading FastAPI.
    from claud.master.api import create_app

    try:
        app = create_app(settings)
    except ConfigError as exc:
        print(f"{PROG}: invalid configuration: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except Exception as exc:  # noqa: BLE001 - the data directory cannot be read back: stop, say why
        print(f"{PROG}: cannot recover from {settings.data_dir}: {exc!r}", file=sys.stderr)
        raise SystemExit(1) from None
    credentials = app.state.master.credentials
    host, port = parse_host_port(settings.listen)
    log_event(logging.getLogger("claud.master"), "master.starting", listen=settings.listen, scheme=settings.scheme,
              data_dir=str(settings.data_dir), token_file=str(credentials.token_path),
              cluster_secret_file=str(credentials.cluster_secret_path))
    file_limit = raise_file_limit()
    budget = connection_budget(settings.max_connections, file_limit)
    log_event(logging.getLogger("claud.master"), "master.connections", max_connections=budget, file_limit=file_limit)
    # TLS wraps the transport below the protocol, so the guarded protocol sees plain HTTP either way.
    tls_options = settings.tls.uvicorn_options(require_client_cert=settings.tls_verify_clients) if settings.tls else {}
    # uvicorn re-raises the signal that stopped it once it has shut down (exit 143 for
    # SIGTERM); these handlers are what it restores first, so a clean stop exits 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    uvicorn.run(
        app, host=host, port=port, log_config=None, workers=1, timeout_graceful_shutdown=3,
        http=guarded_protocol(budget, settings.request_header_timeout), **tls_options,
    )


if __name__ == "__main__":
    main()
