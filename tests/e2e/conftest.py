"""End-to-end tests on the compose cluster: a failing test's report carries the
last lines of every CLAUD container's log."""

from __future__ import annotations

import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        cluster = getattr(item, "funcargs", {}).get("compose_cluster")
        if cluster is not None:
            try:
                report.sections.append(("compose cluster logs", cluster.logs()))
            except Exception as exc:  # noqa: BLE001 - never hide the failure itself
                report.sections.append(("compose cluster logs", f"could not collect logs: {exc!r}"))
