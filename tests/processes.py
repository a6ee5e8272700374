"""scow's daemons as real processes for fault tests: a pool manager (node) and a gateway
that a test can kill -9, stop and start again, and the host resources they hold."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from ipaddress import IPv4Network
from pathlib import Path

import httpx
import psutil

from images.store import ImageStore
from runtime.engine import Runtime, RuntimeConfig
from tests import leakcheck
from tests.conftest import REPO, TEST_BRIDGE, TEST_SUBNET
from tests.utils import free_port, wait_until


class Daemon:
    """One of scow's processes, logging to ``base/<log>``: killed, stopped, its log read."""

    base: Path
    log: str
    proc: subprocess.Popen[bytes] | None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> int:
        """SIGTERM and its exit code; one that does not exit within 60 s is killed and
        the test fails (and its leftovers can still be cleaned)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.log}: no exit within 60 s of SIGTERM:\n"
                                 f"{self.log_tail()}") from None  # fmt: skip

    def stop_if_running(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.stop()

    def log_tail(self, chars: int = 8000) -> str:
        return (self.base / self.log).read_text(errors="replace")[-chars:]


class Node(Daemon):
    """``python -m pool`` on its own dirs and cgroup parent; the same dirs on every start.
    On the test bridge and a shared image store unless given its own (``images=None``:
    its state dir's)."""

    log = "node.log"

    def __init__(
        self, redis_url: str, base: Path, images: ImageStore | None,
        bridge: str = TEST_BRIDGE, subnet: IPv4Network = TEST_SUBNET,
    ) -> None:  # fmt: skip
        self.redis_url, self.base, self.images = redis_url, base, images
        self.bridge, self.subnet = bridge, subnet
        self.cgroup_parent = f"scow-test-{secrets.token_hex(3)}"
        self.node_id = f"{base.name}-{secrets.token_hex(3)}"
        self.proc: subprocess.Popen[bytes] | None = None
        base.mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        log = open(self.base / self.log, "ab")  # noqa: SIM115 (the child holds it)
        images = ["--images", str(self.images.root)] if self.images is not None else []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pool", "--redis-url", self.redis_url,
             "--state-dir", str(self.base / "state"), "--run-dir", str(self.base / "run"),
             *images, "--cgroup-parent", self.cgroup_parent,
             "--bridge", self.bridge, "--subnet", str(self.subnet), "--node-id", self.node_id,
             "--metrics-port", "0"],
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()

    def runtime(self) -> Runtime:
        return Runtime(RuntimeConfig(
            state_dir=self.base / "state", run_dir=self.base / "run",
            cgroup_parent=self.cgroup_parent, bridge=self.bridge, subnet=self.subnet,
        ))  # fmt: skip

    async def clean(self) -> None:
        """Whatever a killed node left: removed by a runtime on its dirs."""
        rt = self.runtime()
        await rt.open()
        for record in rt.store.all():
            await rt.destroy(record.id)
        await rt.reap()
        left = leakcheck.scow_leftovers(self.base / "state", self.base / "run")
        assert not left, f"{self.base}: left behind: {left}"



class GatewayProcess(Daemon):
    """``scow gateway`` on a free TCP port and a Unix socket of its own."""

    log = "gateway.log"

    def __init__(self, redis_url: str, base: Path) -> None:
        self.redis_url, self.base = redis_url, base
        self.port = free_port()
        self.socket = base / "gateway.sock"
        self.proc: subprocess.Popen[bytes] | None = None
        base.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if k != "SCOW_TOKEN"}
        log = open(self.base / self.log, "ab")  # noqa: SIM115 (the child holds it)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "gateway", "--redis-url", self.redis_url,
             "--port", str(self.port), "--socket", str(self.socket),
             "--token-file", str(self.base / "token"), "--log-level", "warning"],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        wait_until(self._listening, 30, "the gateway to listen")

    def _listening(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"gateway exited: {self.log_tail()}")
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code in (200, 503)
        except httpx.HTTPError:
            return False

    def admin(self) -> httpx.AsyncClient:
        """A client on the Unix socket (root-only: no token needed)."""
        transport = httpx.AsyncHTTPTransport(uds=str(self.socket))
        return httpx.AsyncClient(transport=transport, base_url="http://scow", timeout=60)



def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_mib(pid: int) -> float:
    return round(psutil.Process(pid).memory_info().rss / (1 << 20), 1)
