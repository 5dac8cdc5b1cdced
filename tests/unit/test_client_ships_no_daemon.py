"""claud-client ships no server plumbing: nothing in it imports claud.daemon, and its
wheel holds no claud.daemon package (as Nomad's api/ module holds none of the agent)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

CLIENT_SRC = Path(__file__).resolve().parents[2] / "client" / "src"
DAEMON_MODULES = ("addresses", "discovery", "logfmt", "settings_cli", "refusal_log", "tls_settings")


def imported_modules(path: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)
    return modules


def test_no_client_source_imports_claud_daemon() -> None:
    sources = sorted(CLIENT_SRC.rglob("*.py"))
    assert sources, f"no sources under {CLIENT_SRC}"
    offenders = {
        str(path.relative_to(CLIENT_SRC)): sorted(m for m in imported_modules(path) if m.startswith("claud.daemon"))
        for path in sources
    }
    assert {path: found for path, found in offenders.items() if found} == {}


def test_the_client_distribution_holds_no_daemon_module() -> None:
    # The wheel holds every package under client/src (client/pyproject.toml: find, namespaces).
    packages = {".".join(path.parent.relative_to(CLIENT_SRC).parts) for path in CLIENT_SRC.rglob("*.py")}
    assert {"claud.client", "claud.api"} <= packages
    assert not [p for p in packages if p == "claud.daemon" or p.startswith("claud.daemon.")]
    api = {path.stem for path in (CLIENT_SRC / "claud" / "api").glob("*.py")}
    assert api.isdisjoint(DAEMON_MODULES)


def test_importing_every_client_module_loads_no_daemon_module() -> None:
    modules = sorted(
        ".".join(path.relative_to(CLIENT_SRC).with_suffix("").parts).removesuffix(".__init__")
        for path in CLIENT_SRC.rglob("*.py")
        if path.name != "__main__.py"
    )
    probe = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except ImportError as exc:\n"
        "        if (exc.name or '').startswith('claud.'):\n"
        "            raise\n"  # an optional extra missing (cryptography) is not our concern here
        "print(','.join(sorted(m for m in sys.modules if m.startswith('claud.daemon'))))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == ""
