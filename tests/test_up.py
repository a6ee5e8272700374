"""`scow up` brings Redis and the gateway up in the foreground and leaves nothing behind."""

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from gateway.up import accepts_connections
from tests.utils import free_port, wait_until


@pytest.fixture
def host(scow_dirs: tuple[Path, Path]) -> Iterator[tuple[subprocess.Popen[str], Path, int]]:
    state, run = scow_dirs
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "up",
            "--state-dir",
            str(state),
            "--run-dir",
            str(run),
            "--port",
            str(port),
            "--node-metrics-port",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        wait_until(
            lambda: accepts_connections(run / "scow.sock") or proc.poll() is not None, 30, "scow up"
        )
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        yield proc, run, port
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.wait(30)
        if proc.stdout is not None:
            proc.stdout.close()


def test_up_serves_on_tcp_and_root_only_socket(
    host: tuple[subprocess.Popen[str], Path, int],
) -> None:
    proc, run, port = host
    assert httpx.get(f"http://127.0.0.1:{port}/healthz").json() == {"status": "ok"}
    transport = httpx.HTTPTransport(uds=str(run / "scow.sock"))
    with httpx.Client(transport=transport, base_url="http://scow") as client:
        assert client.get("/healthz").status_code == 200
    assert (run / "scow.sock").stat().st_mode & 0o777 == 0o600
    assert int((run / "scow.pid").read_text()) == proc.pid


def test_ctrl_c_leaves_no_process_socket_or_pid_file(
    host: tuple[subprocess.Popen[str], Path, int],
) -> None:
    proc, run, port = host
    children = psutil.Process(proc.pid).children(recursive=True)
    names = {" ".join(c.cmdline()) for c in children}
    assert any("redis-server" in n for n in names), names
    assert any("-m pool" in n for n in names), names
    assert any("gateway" in n for n in names), names

    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 0
    out = proc.stdout.read() if proc.stdout else ""
    assert "stopping" in out
    for child in children:
        assert not psutil.pid_exists(child.pid) or child.status() == psutil.STATUS_ZOMBIE
    left = [p for p in run.rglob("*") if p.is_socket() or p.name.endswith(".pid")]
    assert left == []
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/healthz")


def test_second_up_on_same_run_dir_refuses(
    host: tuple[subprocess.Popen[str], Path, int], state_dir: Path
) -> None:
    proc, run, _ = host
    second = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "up",
            "--state-dir",
            str(state_dir),
            "--run-dir",
            str(run),
            "--port",
            str(free_port()),
            "--node-metrics-port",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert second.returncode == 1
    assert f"already running as pid {proc.pid}" in second.stderr
    assert (run / "scow.sock").exists()


def test_sigterm_stops_the_host(host: tuple[subprocess.Popen[str], Path, int]) -> None:
    proc, run, _ = host
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    assert not (run / "scow.pid").exists()
    assert not (run / "redis.sock").exists()
