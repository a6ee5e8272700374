"""A pytest plugin for the figures that tests measure (the reliability report's numbers).

A test asks for the ``figures`` fixture and records what it measured; the session
ends with a "figures" section listing them by test, and writes them as JSON to
``$SCOW_FIGURES`` when that is set. Assertions stay in the tests: a figure is
what a person reads, never what decides pass or fail.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import pytest

_recorded: list[tuple[str, str, object]] = []


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Callable[[str, object], None]:
    def record(name: str, value: object) -> None:
        _recorded.append((request.node.nodeid, name, value))

    return record


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _recorded:
        return
    terminalreporter.section("figures")
    for nodeid, name, value in _recorded:
        terminalreporter.write_line(f"{nodeid.split('::')[-1]}: {name} = {value}")
    path = os.environ.get("SCOW_FIGURES")
    if path:
        with open(path, "w") as f:
            json.dump([{"test": t, "name": n, "value": v} for t, n, v in _recorded], f,
                      indent=1, default=str)  # fmt: skip
