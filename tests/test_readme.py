"""The README's first-function commands work as written on a fresh host, and so does a
throwaway Redis (slow: the first build makes debian:bookworm and installs python3)."""

from __future__ import annotations

import json
import re
import socket
import subprocess
from pathlib import Path

import pytest
import redis

from tests.hosts import REPO, scow_up
from tests.utils import wait_until

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
        # The throwaway database: built on the same debian, it takes seconds more.
        built = host.scow("build", "-q", "-t", "examples/redis", "images/examples/redis")
        assert built.returncode == 0, built.stderr
        created = host.scow("env", "create", "-p", "6379", "--ttl", "5s", "examples/redis")
        assert created.returncode == 0, created.stderr
        port = int(re.search(r"6379 -> 127\.0\.0\.1:(\d+)", created.stdout).group(1))  # type: ignore[union-attr]
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)
        try:
            assert client.set("k", "v") and client.get("k") == b"v"
        finally:
            client.close()
        wait_until(lambda: "examples/redis" not in host.scow("env", "ls").stdout, 20, "expiry")
        wait_until(lambda: not _port_open(port), 5, "the port to close")
        roles = [json.loads(record.read_text()).get("labels", {}).get("scow.role")
                 for record in (host.state / "containers").glob("*/container.json")]  # fmt: skip
        assert "environment" not in roles, roles  # only hello's warm pool is left
        assert set(roles) <= {"function"}, roles


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0
