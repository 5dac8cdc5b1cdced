"""Ctrl-C always ends the `claud` process, even when unwinding would hang.

The suite once saw `claud events` ignore SIGINT for good: the interrupt landed
where closing the stream waits on a lock that is never released. This plants
that hang on purpose and checks the watchdog ends the process with 130.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from claud.client.cli import INTERRUPT_GRACE, ExitCode

# After the interrupt, unwinding blocks on a lock this thread already holds: a deadlock.
HANGS_ON_INTERRUPT = """
import signal, sys, threading
from claud.client import cli
signal.signal(signal.SIGINT, cli._interrupted)
lock = threading.Lock()
try:
    print("ready", flush=True)
    threading.Event().wait()
except KeyboardInterrupt:
    print("unwinding", flush=True)
    lock.acquire()
    lock.acquire()
"""


def test_an_interrupt_whose_unwinding_hangs_still_ends_the_process_with_130() -> None:
    proc = subprocess.Popen([sys.executable, "-c", HANGS_ON_INTERRUPT], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGINT)
        started = time.monotonic()
        stdout, stderr = proc.communicate(timeout=INTERRUPT_GRACE + 30)
        took = time.monotonic() - started
    finally:
        proc.kill()
    assert proc.returncode == ExitCode.INTERRUPTED, stderr
    assert "unwinding" in stdout  # the graceful path ran first: notes still get printed
    assert took >= INTERRUPT_GRACE * 0.9
