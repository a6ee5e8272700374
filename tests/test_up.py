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

from gateway.up import MAX_BACKOFF, Restarts, accepts_connections
from tests.hosts import scratch_host
from tests.utils import free_port, wait_until


@pytest.fixture
def host(scow_dirs: tuple[Path, Path]) -> Iterator[tuple[subprocess.Popen[str], Path, int]]:
    state, run = scow_dirs
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    log = (run / "up.log").open("w")
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
        stdout=log,  # a file, not a pipe: nothing blocks on a log no one reads yet
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        wait_until(
            lambda: accepts_connections(run / "scow.sock") or proc.poll() is not None, 30, "scow up"
        )
        assert proc.poll() is None, output(run)
        yield proc, run, port
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.wait(30)
        log.close()


def output(run: Path) -> str:
    """What the host (and its children) printed so far."""
    return (run / "up.log").read_text(errors="replace")


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
    assert "stopping" in output(run)
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


def roles(pid: int) -> dict[str, int]:
    """The host's children by role: their pids."""
    out = {}
    for child in psutil.Process(pid).children():
        try:
            cmd = " ".join(child.cmdline())
        except psutil.Error:  # a zombie: dead, not yet reaped by the host
            continue
        for role, marker in (("redis", "redis-server"), ("node", "-m pool"),
                             ("gateway", "gateway.cli gateway")):  # fmt: skip
            if marker in cmd:
                out[role] = child.pid
    return out


def live_node_pids(run: Path) -> set[int]:
    transport = httpx.HTTPTransport(uds=str(run / "scow.sock"))
    try:
        with httpx.Client(transport=transport, base_url="http://scow", timeout=2) as api:
            response = api.get("/system/info")
    except httpx.HTTPError:
        return set()
    if response.status_code != 200:  # 503: Redis is not back yet
        return set()
    return {n["pid"] for n in response.json()["nodes"] if n["live"]}


def started_again(proc: subprocess.Popen[str], run: Path, role: str, old: int) -> int:
    """Kill -9 the host's ``role`` child (pid ``old``) and wait for its next life."""
    os.kill(old, signal.SIGKILL)
    try:
        wait_until(lambda: roles(proc.pid).get(role, old) != old, 30, f"{role} started again")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the host said:\n{output(run)}") from None
    return roles(proc.pid)[role]


@pytest.mark.slow
def test_a_dead_child_is_started_again_and_serves(
    host: tuple[subprocess.Popen[str], Path, int],
) -> None:
    proc, run, port = host
    # Up, as the host tells it: a child that dies before that is a failed start.
    wait_until(lambda: "scow is up" in output(run), 60, "scow is up")
    first = roles(proc.pid)
    assert first["node"] in live_node_pids(run)

    node = started_again(proc, run, "node", first["node"])
    wait_until(lambda: node in live_node_pids(run), 60, "the new node registered")

    gateway = started_again(proc, run, "gateway", first["gateway"])

    def healthy() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(healthy, 30, "the new gateway on the same port")

    started_again(proc, run, "redis", first["redis"])
    # The node and the gateway found the new Redis by themselves: a live node again.
    wait_until(lambda: node in live_node_pids(run), 30, "the node seen through the new Redis")
    assert roles(proc.pid)["node"] == node and roles(proc.pid)["gateway"] == gateway

    assert proc.poll() is None, "the host stopped"
    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 0
    out = output(run)
    for name in ("pool manager", "gateway", "redis-server"):
        assert f"{name} exited with code -9; starting it again in 1s" in out, out
    assert "started again" in out


def test_restarts_back_off_and_a_crash_loop_ends_them() -> None:
    restarts = Restarts(limit=5, window=60.0)
    assert [restarts.after_death(t) for t in (0, 1, 3, 7, 15)] == [1, 2, 4, 8, 16]
    assert restarts.after_death(31) is None  # a sixth death within a minute: not again


def test_restarts_forget_deaths_older_than_the_window() -> None:
    restarts = Restarts(limit=2, window=10.0)
    assert restarts.after_death(0) == 1
    assert restarts.after_death(5) == 2
    assert restarts.after_death(20) == 1  # both earlier deaths are past the window
    assert restarts.after_death(21) == 2
    assert restarts.after_death(22) is None
    big = Restarts(limit=100, window=1e9)
    assert [big.after_death(t) for t in range(7)][-2:] == [MAX_BACKOFF, MAX_BACKOFF]


@pytest.mark.slow
def test_gateway_workers_share_the_port_and_each_answers_calls(test_bridge: str) -> None:
    """`scow up --gateway-workers 2`: two processes accept on the one port, each answers
    function calls through its own reply stream, and Ctrl-C stops both."""
    with scratch_host("scow-workers-", "--gateway-workers", "2") as host:
        assert host.scow("image", "bootstrap", "busybox").returncode == 0
        deployed = host.scow("fn", "deploy", "cat", "--image", "busybox", "--protocol", "stdio",
                             "--command", "cat", "--pool-min", "2")  # fmt: skip
        assert deployed.returncode == 0, deployed.stderr
        gateway = psutil.Process(roles(host.process.pid)["gateway"])
        workers = {w.pid for w in gateway.children()}
        assert len(workers) == 2, workers
        token = (host.state / "token").read_text().strip()
        clients = [httpx.Client(base_url=f"http://127.0.0.1:{host.port}", timeout=30,
                                headers={"Authorization": f"Bearer {token}"})
                   for _ in range(24)]  # fmt: skip
        try:
            for i, api in enumerate(clients):  # one connection each, kept open
                answer = api.post("/function/cat", content=f"call {i}".encode())
                assert (answer.status_code, answer.text) == (200, f"call {i}"), answer.text
            served = {pid: sum(1 for c in psutil.Process(pid).net_connections("tcp")
                               if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == host.port)
                      for pid in workers}  # fmt: skip
        finally:
            for api in clients:
                api.close()
        assert sum(served.values()) == len(clients), served
        assert all(n > 0 for n in served.values()), served  # both accepted and answered
    for pid in (gateway.pid, *workers):
        assert not psutil.pid_exists(pid), pid
