"""`scow up`: the whole host in the foreground, stopped cleanly by Ctrl-C or SIGTERM.

It starts redis-server (unless REDIS_URL names one), one pool manager (a node)
and the gateway as child processes, watches them, and on a signal or a child's
death stops the rest in reverse order and removes its pid file and sockets.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import httpx

from gateway.auth import load_or_create_token
from gateway.config import HostConfig
from gateway.redisd import RedisServer


class HostError(Exception):
    pass


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim_pid_file(path: Path) -> None:
    """Write our pid to ``path``, refusing when a live scow up already holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        other = int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        other = 0
    if other and other != os.getpid() and _pid_alive(other):
        raise HostError(f"scow up is already running as pid {other} (pid file {path})")
    path.write_text(f"{os.getpid()}\n")


def accepts_connections(path: Path) -> bool:
    """Whether a server listens on the Unix socket ``path``."""
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect(str(path))
        except OSError:
            return False
    return True


class Host:
    def __init__(self, config: HostConfig, out: Callable[[str], None] = print) -> None:
        self.config = config
        self.out = out
        self.redis: RedisServer | None = None
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []
        self._stopping = False

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stopping = True

    def run(self) -> int:
        cfg = self.config
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        cfg.run_dir.mkdir(parents=True, exist_ok=True)
        claim_pid_file(cfg.pid_file)
        old_int = signal.signal(signal.SIGINT, self._on_signal)
        old_term = signal.signal(signal.SIGTERM, self._on_signal)
        try:
            return self._run()
        finally:
            self.stop()
            signal.signal(signal.SIGINT, old_int)
            signal.signal(signal.SIGTERM, old_term)
            cfg.pid_file.unlink(missing_ok=True)

    def _run(self) -> int:
        cfg = self.config
        redis_url = cfg.redis_url
        if redis_url is None:
            self.redis = RedisServer(cfg.redis_socket, cfg.redis_dir)
            self.redis.start()
            redis_url = self.redis.url
            self.out(f"redis     {redis_url} (data in {cfg.redis_dir})")
        else:
            self.out(f"redis     {redis_url} (external)")
        # The node first, so that it is up when the first call arrives; the gateway
        # talks to it through Redis only.
        node_args = ["--state-dir", str(cfg.state_dir), "--run-dir", str(cfg.run_dir),
                     "--bridge", cfg.bridge, "--subnet", cfg.subnet,
                     "--metrics-port", str(cfg.node_metrics_port)]  # fmt: skip
        self._spawn("pool manager", ["pool", "--redis-url", redis_url, *node_args])
        where = (
            "any free port" if cfg.node_metrics_port == 0 else f"127.0.0.1:{cfg.node_metrics_port}"
        )
        self.out(f"node      pool manager, state in {cfg.state_dir}, metrics on {where}")
        gateway_args = ["--host", cfg.http_host, "--port", str(cfg.http_port)]
        token = "SCOW_TOKEN" if os.environ.get("SCOW_TOKEN") else str(cfg.token_file)
        if not os.environ.get("SCOW_TOKEN"):
            load_or_create_token(cfg.token_file)
        self._spawn(
            "gateway",
            ["gateway.cli", "gateway", "--redis-url", redis_url, *gateway_args,
             "--socket", str(cfg.socket_path), "--token-file", str(cfg.token_file)],
        )  # fmt: skip
        path = cfg.socket_path
        if not self._wait_for(
            lambda: accepts_connections(path), f"gateway did not open {path}", 20
        ):
            return 1
        # "scow is up" once the node has registered too: then calls can be served.
        transport = httpx.HTTPTransport(uds=str(path))
        with httpx.Client(transport=transport, base_url="http://scow", timeout=5) as api:
            if not self._wait_for(lambda: self._node_registered(api), "no node registered", 60):
                return 1
        self.out(f"api       http://{cfg.http_host}:{cfg.http_port} and unix://{cfg.socket_path}")
        self.out(f"token     {token} (needed on TCP: Authorization: Bearer <token>)")
        self.out("scow is up; Ctrl-C stops it")
        while not self._stopping:
            for name, proc in self.children:
                if proc.poll() is not None:
                    self.out(f"{name} exited with code {proc.returncode}; stopping")
                    return 1
            redis_proc = self.redis.process if self.redis is not None else None
            if redis_proc is not None and redis_proc.poll() is not None:
                self.out(f"redis-server exited with code {redis_proc.returncode}")
                return 1
            time.sleep(0.2)
        self.out("stopping")
        return 0

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        # Children ignore the terminal's Ctrl-C (own process group): we stop them in order.
        proc = subprocess.Popen(
            [sys.executable, "-m", *args],
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.children.append((name, proc))
        return proc

    def _wait_for(self, ready: Callable[[], bool], what: str, timeout: float) -> bool:
        """Until ``ready()``; False when a child died or time ran out (said why), True
        also when a stop was asked for meanwhile (that is not a failure)."""
        deadline = time.monotonic() + timeout
        while not self._stopping:
            for name, proc in self.children:
                if proc.poll() is not None:
                    self.out(f"{name} exited with code {proc.returncode} on start")
                    return False
            if ready():
                return True
            if time.monotonic() > deadline:
                self.out(f"{what} within {timeout:.0f}s")
                return False
            time.sleep(0.05)
        return True

    def _node_registered(self, api: httpx.Client) -> bool:
        try:
            nodes = api.get("/system/info").json().get("nodes", [])
        except (httpx.HTTPError, ValueError):
            return False
        return any(n.get("live") for n in nodes)

    def stop(self) -> None:
        for _name, proc in reversed(self.children):
            if proc.poll() is None:
                proc.terminate()
        for _name, proc in reversed(self.children):
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.children.clear()
        if self.redis is not None:
            self.redis.stop()
            self.redis = None
        self.config.socket_path.unlink(missing_ok=True)
