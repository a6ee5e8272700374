"""A Redis Cluster of three masters on 127.0.0.1 (``redis-server --cluster-enabled yes``,
``redis-cli --cluster create``), its data in a temp dir, for tests that run on one."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import redis

from tests.utils import free_port, wait_until


class RedisClusterProcesses:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.ports = [free_port() for _ in range(3)]
        self.bus_ports = [free_port() for _ in range(3)]  # else port + 10000: maybe taken
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def start(self) -> None:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        for port, bus in zip(self.ports, self.bus_ports, strict=True):
            data = self.base / str(port)
            data.mkdir(parents=True)
            log = open(data / "redis.log", "wb")  # noqa: SIM115 (the child holds it)
            self.procs.append(subprocess.Popen(
                ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                 "--cluster-enabled", "yes", "--cluster-port", str(bus),
                 "--cluster-config-file", str(data / "nodes.conf"),
                 "--dir", str(data), "--save", "", "--appendonly", "no",
                 "--protected-mode", "no"],
                stdout=log, stderr=subprocess.STDOUT))  # fmt: skip
            log.close()
        for port in self.ports:
            wait_until(lambda port=port: _pong(port), 20, f"redis-server on {port}")
        subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
             "--cluster-replicas", "0", "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        wait_until(self._ok, 30, "the cluster's state ok")

    def _ok(self) -> bool:
        for port in self.ports:
            with redis.Redis(port=port) as r:
                if r.cluster("INFO").get("cluster_state") != "ok":
                    return False
        return True

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            proc.wait(20)
        shutil.rmtree(self.base, ignore_errors=True)


def _pong(port: int) -> bool:
    try:
        with redis.Redis(port=port, socket_connect_timeout=1) as r:
            return bool(r.ping())
    except redis.RedisError:
        return False


def flush(url: str) -> None:
    """Every master of the cluster at ``url`` emptied."""
    for entry in url.removeprefix("redis+cluster://").split(","):
        host, _, port = entry.rpartition(":")
        with redis.Redis(host=host, port=int(port)) as r:
            r.flushall()
