"""What the gateway's handlers share: its settings, Redis, the pool client, metrics."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from gateway.http import ApiError
from gateway.metrics import GatewayMetrics
from pool import contract, outbound
from pool.contract import CommandFailed, PoolClient

DEFAULT_BODY_LIMIT = 6 << 20
DEFAULT_MAX_QUEUE = 1024
BUILD_CONTEXT_LIMIT = 256 << 20


@dataclass(frozen=True)
class GatewaySettings:
    redis_url: str
    token: str
    body_limit: int = DEFAULT_BODY_LIMIT  # a call's request body
    max_queue: int = DEFAULT_MAX_QUEUE  # calls waiting or running per function; 0: no cap
    build_limit: int = BUILD_CONTEXT_LIMIT
    # Host names the TCP listener answers besides IP addresses and localhost.
    allowed_hosts: tuple[str, ...] = ()
    # Where X-Callback-Url may point beyond the public internet (SCOW_CALLBACK_ALLOW).
    callback_allow: str = ""


@dataclass
class Gateway:
    settings: GatewaySettings
    redis: aioredis.Redis
    pool: PoolClient
    metrics: GatewayMetrics

    @functools.cached_property
    def callback_allow(self) -> outbound.Allow:
        return outbound.Allow.parse(self.settings.callback_allow)

    async def nodes(self) -> dict[str, dict[str, Any]]:
        """Every registered node with its heartbeat age and whether it counts as live."""
        now = time.time()
        out = {}
        for node, raw in (await self.redis.hgetall(contract.NODES)).items():
            info = json.loads(raw)
            age = now - float(info.get("heartbeat", 0))
            out[node.decode()] = {**info, "heartbeat_age": age,
                                  "live": age < contract.HEARTBEAT_STALE}  # fmt: skip
        return out

    async def output(self, name: str, args: dict[str, Any], **kw: Any) -> AsyncIterator[bytes]:
        """A node command's bulk output (an archive), chunk by chunk as the client reads it.

        A failure after the first chunk can only cut the stream short: it raises here.
        """
        chunks: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=4)  # the node waits for us
        failed: list[ApiError] = []

        async def run() -> None:
            try:
                await self.command(name, args, output=chunks.put, **kw)
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

    async def command(self, name: str, args: dict[str, Any] | None = None, **kw: Any) -> Any:
        """A node command, with its failure as the API error a client should see."""
        if not kw.get("node") and not any(n["live"] for n in (await self.nodes()).values()):
            raise ApiError(503, "no_node", f"{name}: no node is up to do it")
        try:
            return await self.pool.command(name, args, **kw)
        except CommandFailed as exc:
            raise ApiError(exc.status, exc.error, exc.message) from None
