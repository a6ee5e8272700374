"""`scow up`: the whole host in the foreground, stopped cleanly by Ctrl-C or SIGTERM.

It starts redis-server (unless REDIS_URL names one), one pool manager (a node)
and the gateway as child processes and watches them. A child that dies once the
host is up is started again after a back-off (1 s, then 2, 4, 8, 16), as a
supervisor would; the others ride out its absence. A child that dies on start,
or dies ``CRASH_LOOP`` times within ``CRASH_WINDOW`` seconds, stops the host. On
a signal it stops the children in reverse order and removes its pid file and
sockets.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import httpx

from gateway.auth import load_or_create_token
from gateway.redisd import RedisServer, RedisServerError
from pool.contract.config import HostConfig


class HostError(Exception):
    pass


CRASH_LOOP = 5  # deaths of one child within CRASH_WINDOW that stop the host
CRASH_WINDOW = 60.0
MAX_BACKOFF = 30.0


class Restarts:
    """When to start a child again after it died: a back-off, and the end of a crash loop."""

    def __init__(self, limit: int = CRASH_LOOP, window: float = CRASH_WINDOW) -> None:
        self.limit, self.window = limit, window
        self.deaths: deque[float] = deque()

    def after_death(self, now: float) -> float | None:
        """Seconds to wait before starting it again; None: it died ``limit`` times
        within ``window`` seconds, and starting it again will not help."""
        while self.deaths and now - self.deaths[0] > self.window:
            self.deaths.popleft()
        self.deaths.append(now)
        if len(self.deaths) >= self.limit + 1:
            return None
        return min(2.0 ** (len(self.deaths) - 1), MAX_BACKOFF)


@dataclass
class Child:
    """A daemon of the host: how to start it, its process (None while it waits to be
    started again) and its restarts."""

    name: str
    args: list[str]
    proc: subprocess.Popen[bytes] | None = None
    due: float = 0.0  # when to start it again
    restarts: Restarts = field(default_factory=Restarts)

    def start(self) -> None:
        # Children ignore the terminal's Ctrl-C (own process group): we stop them in order.
        self.proc = subprocess.Popen(
            [sys.executable, "-m", *self.args], stdin=subprocess.DEVNULL, start_new_session=True
        )


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
        self.children: list[Child] = []
        self._stopping = False
        self._redis_restarts = Restarts()
        self._redis_due = 0.0

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stopping = True

    def run(self) -> int:
        cfg = self.config
        for d in (cfg.state_dir, cfg.run_dir):  # root's alone: images, upperdirs, the token
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
            d.chmod(0o700)
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
            self.redis = RedisServer(cfg.redis_socket, cfg.redis_dir,
                                     maxmemory=cfg.redis_maxmemory)  # fmt: skip
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
        if cfg.insecure_registries:
            node_args += ["--insecure-registry", cfg.insecure_registries]
        self._spawn("pool manager", ["pool", "--redis-url", redis_url, *node_args])
        where = (
            "any free port" if cfg.node_metrics_port == 0 else f"127.0.0.1:{cfg.node_metrics_port}"
        )
        self.out(f"node      pool manager, state in {cfg.state_dir}, metrics on {where}")
        gateway_args = ["--host", cfg.http_host, "--port", str(cfg.http_port),
                        "--workers", str(cfg.gateway_workers), "--subnet", cfg.subnet,
                        "--network-pool", cfg.network_pool]  # fmt: skip
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
            if not self._watch(time.monotonic()):
                return 1
            time.sleep(0.2)
        self.out("stopping")
        return 0

    def _watch(self, now: float) -> bool:
        """Start again each child that died, once its back-off is over; False when one
        is in a crash loop (the host then stops)."""
        for child in self.children:
            if child.proc is None:
                if now >= child.due:
                    child.start()
                    assert child.proc is not None
                    self.out(f"{child.name} started again (pid {child.proc.pid})")
            elif (code := child.proc.poll()) is not None:
                delay = self._died(f"{child.name} exited with code {code}", child.restarts, now)
                if delay is None:
                    return False
                child.proc, child.due = None, now + delay
        if self.redis is not None:
            return self._watch_redis(now)
        return True

    def _watch_redis(self, now: float) -> bool:
        assert self.redis is not None
        proc = self.redis.process
        if proc is not None and proc.poll() is None:
            return True
        if proc is not None:  # it died: the node and the gateway answer 503 meanwhile
            how = f"redis-server exited with code {proc.returncode}"
            delay = self._died(how, self._redis_restarts, now)
            if delay is None:
                return False
            self.redis.stop()  # forgets the process, removes its socket
            self._redis_due = now + delay
        elif now >= self._redis_due:
            try:
                self.redis.start()  # on the same data: nothing acknowledged is lost
            except RedisServerError as exc:
                self.redis.stop()
                now = time.monotonic()
                delay = self._died(f"redis-server did not start again ({exc})",
                                   self._redis_restarts, now)  # fmt: skip
                if delay is None:
                    return False
                self._redis_due = now + delay
                return True
            self.out("redis-server started again")
        return True

    def _died(self, how: str, restarts: Restarts, now: float) -> float | None:
        """Say how a child died; seconds until it is started again (None: not again)."""
        delay = restarts.after_death(now)
        if delay is None:
            self.out(f"{how}, {len(restarts.deaths)} times within {restarts.window:.0f}s; "
                     "stopping")  # fmt: skip
        else:
            self.out(f"{how}; starting it again in {delay:.0f}s")
        return delay

    def _spawn(self, name: str, args: list[str]) -> None:
        child = Child(name, args)
        child.start()
        self.children.append(child)

    def _wait_for(self, ready: Callable[[], bool], what: str, timeout: float) -> bool:
        """Until ``ready()``; False when a child died or time ran out (said why), True
        also when a stop was asked for meanwhile (that is not a failure)."""
        deadline = time.monotonic() + timeout
        while not self._stopping:
            for child in self.children:
                if child.proc is not None and child.proc.poll() is not None:
                    self.out(f"{child.name} exited with code {child.proc.returncode} on start")
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
        procs = [c.proc for c in reversed(self.children) if c.proc is not None]
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
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
