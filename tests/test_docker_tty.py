"""Terminals and stdin, with the real docker CLI under a real pseudo-terminal (pexpect)
and docker-py's hijacked sockets, against a real `scow up`.

Typed into ``sh``, the prompt and the answers are read back; the window is resized
and ``stty size`` inside sees it; the detach keys leave the container running; exit
codes come through.
"""

from __future__ import annotations

import shutil
import socket
import time
from collections.abc import Iterator

import pexpect
import pytest

from tests.hosts import Host, docker, docker_env, docker_host, ok
from tests.utils import wait_until

pytestmark = [pytest.mark.skipif(shutil.which("docker") is None, reason="no docker CLI"),
              pytest.mark.slow]  # fmt: skip

PROMPT = "/ # "


@pytest.fixture(scope="module")
def host(test_bridge: str) -> Iterator[Host]:
    with docker_host("scow-tty-") as running:
        yield running


def terminal(host: Host, *args: str, rows: int = 24, columns: int = 80) -> pexpect.spawn:
    """The docker CLI in a pseudo-terminal of ``rows`` x ``columns``."""
    child = pexpect.spawn("docker", list(args), env=docker_env(host), timeout=30,
                          dimensions=(rows, columns), encoding="utf-8")  # fmt: skip
    return child


def ended(child: pexpect.spawn) -> int:
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus is not None, child.signalstatus
    return int(child.exitstatus)


def test_run_it_is_an_interactive_shell_that_sees_resizes_and_exits_with_its_code(
    host: Host,
) -> None:
    child = terminal(host, "run", "-it", "--name", "it-sh", "busybox", "sh", rows=30, columns=90)
    child.expect_exact(PROMPT)
    child.sendline("echo answer-$((6*7)); stty size")
    child.expect_exact("answer-42")
    child.expect_exact("30 90")  # the size it was started with
    child.setwinsize(40, 120)  # the CLI sends the new size (POST /containers/{id}/resize)
    wait_until(lambda: _stty(child) == "40 120", 10, "the new size inside")
    child.sendline("exit 7")
    assert ended(child) == 7
    state = ok(docker(host, "inspect", "-f", "{{.State.Status}} {{.State.ExitCode}} "
                      "{{.Config.Tty}} {{.Config.OpenStdin}}", "it-sh"))  # fmt: skip
    assert state.split() == ["exited", "7", "true", "true"]
    logs = ok(docker(host, "logs", "it-sh"))  # a terminal's log is what it showed
    assert "answer-42" in logs and "40 120" in logs
    ok(docker(host, "rm", "it-sh"))


def _stty(child: pexpect.spawn) -> str:
    child.sendline("stty size")
    child.expect(r"(\d+ \d+)\r\n")
    return str(child.match.group(1))


def test_attach_and_the_detach_keys_leave_it_running_then_start_ai(host: Host) -> None:
    ok(docker(host, "run", "-dit", "--name", "it-bg", "busybox", "sh"))
    try:
        child = terminal(host, "attach", "it-bg")
        child.sendline("echo attached-$((1+1))")
        child.expect_exact("attached-2")
        child.sendcontrol("p")
        child.sendcontrol("q")
        child.expect_exact("read escape sequence")
        ended(child)  # the docker CLI's own exit code after a detach
        running = ok(docker(host, "inspect", "-f", "{{.State.Running}}", "it-bg"))
        assert running == "true\n"  # detached, not stopped
        child = terminal(host, "attach", "--detach-keys", "ctrl-x", "it-bg")
        child.sendline("echo again")
        child.expect_exact("again")
        child.sendline("exit 3")
        assert ended(child) == 3
        child = terminal(host, "start", "-ai", "it-bg")  # the same shell, started again
        child.expect_exact(PROMPT)
        child.sendline("exit 4")
        assert ended(child) == 4
    finally:
        ok(docker(host, "rm", "-f", "it-bg"))


def test_exec_it_gets_a_terminal_of_its_own(host: Host) -> None:
    ok(docker(host, "run", "-d", "--name", "it-exec", "busybox", "sleep", "300"))
    try:
        child = terminal(host, "exec", "-it", "it-exec", "sh", rows=25, columns=70)
        child.expect_exact(PROMPT)
        child.sendline("tty; stty size")
        child.expect(r"/dev/pts/\d+")
        child.expect_exact("25 70")
        child.setwinsize(33, 99)  # POST /exec/{id}/resize
        wait_until(lambda: _stty(child) == "33 99", 10, "the exec's new size")
        child.sendline("exit 5")
        assert ended(child) == 5
        piped = docker(host, "exec", "-i", "it-exec", "sh", "-c", "wc -c",
                       input=b"x" * 200_000)  # fmt: skip
        assert piped.stdout.split() == [b"200000"]  # stdin streamed, not held to its end
    finally:
        ok(docker(host, "rm", "-f", "it-exec"))


def test_run_i_pipes_stdin_to_the_container(host: Host) -> None:
    piped = docker(host, "run", "-i", "--rm", "busybox", "sh", "-c", "cat; echo done",
                   input=b"line one\nline two\n")  # fmt: skip
    assert (piped.returncode, piped.stdout) == (0, b"line one\nline two\ndone\n")


def test_docker_py_stdin_open_tty_and_attach_socket(host: Host) -> None:
    import docker as docker_py

    client = docker_py.DockerClient(base_url=f"unix://{host.run / 'scow.sock'}")
    container = client.containers.run("busybox", "sh", detach=True, stdin_open=True, tty=True,
                                      name="py-tty")  # fmt: skip
    try:
        assert container.attrs["Config"]["Tty"] is True
        sock = client.api.attach_socket(container.id,
                                        params={"stdin": 1, "stdout": 1, "stream": 1})  # fmt: skip
        raw: socket.socket = sock._sock
        raw.settimeout(10)
        raw.sendall(b"echo via-socket-$((3*3))\n")
        seen = b""
        deadline = time.monotonic() + 10
        while b"via-socket-9" not in seen and time.monotonic() < deadline:
            seen += raw.recv(4096)
        assert b"via-socket-9" in seen  # a terminal's bytes, not frames
        raw.sendall(b"exit 6\n")
        assert container.wait(timeout=10)["StatusCode"] == 6
        sock.close()
        raw.close()
    finally:
        container.remove(force=True)
        client.close()
