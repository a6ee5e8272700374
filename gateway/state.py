"""What the gateway's handlers share: the host's configuration, the API token, the pool
client (the gateway's only way to Redis) and the metrics."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from starlette.requests import HTTPConnection

from gateway.http import ApiError, command_status
from gateway.metrics import GatewayMetrics
from pool.contract import outbound
from pool.contract.client import PoolClient
from pool.contract.config import HostConfig
from pool.contract.errors import CommandFailed, NoNode


@dataclass
class Gateway:
    config: HostConfig
    token: str
    pool: PoolClient
    metrics: GatewayMetrics

    @functools.cached_property
    def callback_allow(self) -> outbound.Allow:
        return outbound.Allow.parse(self.config.callback_allow)

    async def nodes(self) -> dict[str, dict[str, Any]]:
        return await self.pool.nodes()

    async def output(self, name: str, args: dict[str, Any], **kw: Any) -> AsyncIterator[bytes]:
        """A node command's bulk output (an archive), chunk by chunk as the client reads it.

        A failure after the first chunk can only cut the stream short: it raises here.
        """
        chunks: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=4)  # the node waits for us
        failed: list[ApiError] = []

        async def put(chunk: bytes, stream: str) -> None:
            await chunks.put(chunk)

        async def run() -> None:
            try:
                await self.command(name, args, output=put, **kw)
            except ApiError as exc:
                failed.append(exc)
            finally:
                await chunks.put(None)

        task = asyncio.create_task(run())
        try:
            while (chunk := await chunks.get()) is not None:
                yield chunk
            if failed:
                raise RuntimeError(f"{name} failed: {failed[0].message}")
        finally:
            if not task.done():  # the client went away: the node stops
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def pick_node(self, pinned: str = "") -> str:
        """Where a new container or environment goes (see PoolClient.least_loaded)."""
        try:
            return await self.pool.least_loaded(pinned)
        except NoNode as exc:
            raise ApiError(503, "no_node", str(exc)) from None

    async def command(self, name: str, args: dict[str, Any] | None = None, **kw: Any) -> Any:
        """A node command, with its failure as the API error a client should see."""
        if not kw.get("node") and not any(n["live"] for n in (await self.nodes()).values()):
            raise ApiError(503, "no_node", f"{name}: no node is up to do it")
        try:
            return await self.pool.command(name, args, **kw)
        except CommandFailed as exc:
            raise ApiError(command_status(exc.error), exc.error, exc.message) from None


def gateway_of(request: HTTPConnection) -> Gateway:
    """The Gateway a request's app was made with."""
    gw: Gateway = request.app.state.gw
    return gw
