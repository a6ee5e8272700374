"""The README's first-function commands work as written, on a fresh host (slow: the
first build makes debian:bookworm with debootstrap and installs python3)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.hosts import REPO, scow_up

MARKER = "<!-- first-function:"


def first_function_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    block = text[text.index(MARKER) :]
    body = re.search(r"```sh\n(.*?)```", block, re.S)
    assert body is not None, "the README lost its first-function block"
    return [line for line in body.group(1).splitlines() if line.strip()]


def test_the_block_is_short_enough() -> None:
    commands = first_function_commands()
    assert 1 <= len(commands) <= 5, commands  # at most five after `./dev up`
    assert commands[-1].startswith("curl ")


@pytest.mark.slow
def test_a_newcomer_gets_an_answer(scow_dirs: tuple[Path, Path], test_bridge: str) -> None:
    state, run = scow_dirs
    with scow_up(state, run) as host:
        outputs = []
        for command in first_function_commands():
            # The README's host listens on 8080; this one on a free port.
            command = command.replace("127.0.0.1:8080", f"127.0.0.1:{host.port}")
            done = subprocess.run(
                command, shell=True, cwd=REPO, env=host.env, capture_output=True, text=True,
                timeout=600,
            )  # fmt: skip
            assert done.returncode == 0, (command, done.stdout[-2000:], done.stderr[-2000:])
            outputs.append(done.stdout)
    answer = json.loads(outputs[-1])
    assert answer["hello"] == "scow" and answer["path"] == "/"
