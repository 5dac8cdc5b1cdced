"""The SDK installed without the ``cli`` extra: ``claud.client`` and ``claud.api``
import and work with neither click nor rich, and the ``claud`` script says in one
line what to install. Each case runs in a fresh interpreter where importing click
or rich fails, as it would where they are not installed."""

from __future__ import annotations

import subprocess
import sys
import textwrap

BLOCK = textwrap.dedent("""
    import importlib.abc, sys
    class Absent(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("click", "rich"):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name.split(".")[0])
            return None
    sys.meta_path.insert(0, Absent())
""")


def run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", BLOCK + textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=60, check=False)


def test_the_sdk_imports_and_builds_requests_without_click_or_rich() -> None:
    done = run("""
        import claud.api, claud.client
        from claud.client import Client, JobSpec
        spec = JobSpec(name="x", image="claud/busybox:latest", command=["true"])
        with Client("127.0.0.1:1", "t") as c:
            pass
        assert not any(m.split(".")[0] in ("click", "rich") for m in sys.modules)
        print("ok")
    """)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_the_claud_script_names_the_extra_to_install() -> None:
    done = run("""
        from claud.client.console_script import main
        main()
    """)
    assert done.returncode == 1
    assert done.stderr.strip() == "claud: the command line needs click: pip install 'claud-client[cli]'"
    assert "Traceback" not in done.stderr


def test_the_wire_models_are_typed_for_their_users() -> None:
    from importlib.resources import files

    assert files("claud.api").joinpath("py.typed").is_file()
    assert files("claud.client").joinpath("py.typed").is_file()
