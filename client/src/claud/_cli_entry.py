"""The ``claud`` console script: a Ctrl-C while the CLI is still loading exits 130 quietly.

Importing :mod:`claud.client.cli` (httpx, pydantic, rich) takes a third of a
second, several seconds on a loaded machine. Python raises KeyboardInterrupt
wherever SIGINT finds it, so a Ctrl-C in that time printed a traceback from
deep inside some import and the process died by the signal. Until the CLI is
loaded, a Ctrl-C here ends the process at once with the code the CLI itself
uses; nothing is open or buffered yet. This module sits outside
``claud.client`` because importing anything in that package loads it all.
"""

from __future__ import annotations

import os
import signal
from types import FrameType
from typing import NoReturn

#: ExitCode.INTERRUPTED, which cannot be imported before the guard is up.
_INTERRUPTED = 130


def _leave(signum: int, frame: FrameType | None) -> None:
    os._exit(_INTERRUPTED)


def main() -> NoReturn:
    # A shell starts background jobs with SIGINT ignored: they stay deaf to it.
    guarded = signal.getsignal(signal.SIGINT) is signal.default_int_handler
    if guarded:
        signal.signal(signal.SIGINT, _leave)
    from claud.client.cli import main as cli_main

    if guarded:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    cli_main()
