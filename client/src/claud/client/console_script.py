"""The ``claud`` console script.

The SDK (``claud.client``, ``claud.api``) needs neither click nor rich; the
command line needs both, from the ``cli`` extra. Installed without it, ``claud``
says so in one line rather than with a traceback from an import.
"""

from __future__ import annotations

from typing import NoReturn

#: The distributions the ``cli`` extra brings.
CLI_MODULES = frozenset({"click", "rich"})


def main() -> NoReturn:
    try:
        from claud.client.cli import main as cli_main
    except ModuleNotFoundError as exc:
        if exc.name not in CLI_MODULES:
            raise
        raise SystemExit(f"claud: the command line needs {exc.name}: pip install 'claud-client[cli]'") from None
    cli_main()
