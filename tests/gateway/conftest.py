"""A real gateway for route tests: uvicorn on a TCP port and a Unix socket, in this loop.

The node beside it is the ``manager`` fixture (a PoolManager on real runc), so
a call goes gateway -> Redis -> node -> container and back for real.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import httpx
import pytest
import uvicorn
from starlette.types import ASGIApp

from gateway.app import create_app
from gateway.docker.hijack import HijackingProtocol
from gateway.serve import bind_tcp, bind_unix
from pool.contract.config import HostConfig
from tests.utils import free_port

TOKEN = "test-token-0123456789"


@dataclass
class RunningGateway:
    url: str
    socket: Path
    settings: HostConfig

    def tcp(self, token: str | None = TOKEN, **kw: object) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=60, **kw)  # type: ignore[arg-type]

    def unix(self) -> httpx.AsyncClient:
        transport = httpx.AsyncHTTPTransport(uds=str(self.socket))
        return httpx.AsyncClient(base_url="http://scow", transport=transport, timeout=60)


@contextlib.asynccontextmanager
async def run_server(app: ASGIApp, sockets: list[socket.socket]) -> AsyncIterator[None]:
    """uvicorn serving ``app`` on ``sockets`` in this event loop, until the block ends."""
    config = uvicorn.Config(app, http=HijackingProtocol, lifespan="auto", log_level="warning",
                            access_log=False, log_config=None)  # fmt: skip
    server = uvicorn.Server(config)
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]  # pytest's
    task = asyncio.create_task(server.serve(sockets=sockets))
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        yield
    finally:
        server.should_exit = True
        await task
        for s in sockets:
            s.close()


@contextlib.asynccontextmanager
async def serve(settings: HostConfig, run_dir: Path) -> AsyncIterator[RunningGateway]:
    port = free_port()
    socket_path = run_dir / "api.sock"
    sockets = [bind_tcp("127.0.0.1", port), bind_unix(socket_path)]
    try:
        async with run_server(create_app(settings, TOKEN), sockets):
            yield RunningGateway(f"http://127.0.0.1:{port}", socket_path, settings)
    finally:
        socket_path.unlink(missing_ok=True)


@pytest.fixture
def settings(redis_url: str) -> HostConfig:
    return HostConfig(redis_url=redis_url)


@pytest.fixture
async def gateway(settings: HostConfig, run_dir: Path) -> AsyncIterator[RunningGateway]:
    """A gateway with no node behind it (routes that need none, or tests that add one)."""
    async with serve(settings, run_dir) as gw:
        yield gw


@pytest.fixture
async def api(gateway: RunningGateway) -> AsyncIterator[httpx.AsyncClient]:
    """A client on TCP with the token."""
    async with gateway.tcp() as client:
        yield client


def with_limits(settings: HostConfig, **limits: int) -> HostConfig:
    return replace(settings, **limits)  # type: ignore[arg-type]
