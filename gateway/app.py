"""The gateway's starlette application: the composition root for its routes.

Handlers validate, then call the pool's client contract; nothing here touches
runc, cgroups or disks. Docker's tools prefix paths with ``/v1.NN``: the same
routes answer with and without it.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncIterator

import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway import calls, environments, functions, secrets, system
from gateway.auth import HostCheck, TokenAuth
from gateway.docker import (
    archive,
    containers,
    events,
    execs,
    images,
    networks,
    registries,
    volumes,
)
from gateway.docker import system as docker_system
from gateway.docker.system import API_VERSION, MIN_API_VERSION
from gateway.http import (
    ApiError,
    RequestLog,
    api_error,
    http_error,
    internal_error,
    redis_refused,
    redis_unavailable,
)
from gateway.metrics import GatewayMetrics
from gateway.state import Gateway
from pool.contract.client import PoolClient
from pool.contract.config import HostConfig
from pool.contract.connect import connect

_VERSION_PREFIX = re.compile(r"^/v(\d+)\.(\d+)(?=/)")


class StripVersion:
    """ASGI middleware: ``/v1.43/images/json`` is ``/images/json``, for every API version
    from MIN_API_VERSION to API_VERSION (what ``/_ping`` offers; the docker CLI and
    docker-py take the lower of it and theirs); others are refused as Docker refuses them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (m := _VERSION_PREFIX.match(scope["path"])):
            asked = (int(m.group(1)), int(m.group(2)))
            version = f"{asked[0]}.{asked[1]}"
            if asked < _version(MIN_API_VERSION):
                await _refuse(send, f"client version {version} is too old. Minimum supported "
                              f"API version is {MIN_API_VERSION}, please upgrade your client "
                              "to a newer version")  # fmt: skip
                return
            if asked > _version(API_VERSION):
                await _refuse(send, f"client version {version} is too new. Maximum supported "
                              f"API version is {API_VERSION}")  # fmt: skip
                return
            scope = {**scope, "path": scope["path"][m.end() :], "scow.api_version": asked}
        await self.app(scope, receive, send)


def _version(text: str) -> tuple[int, int]:
    major, _, minor = text.partition(".")
    return int(major), int(minor)


async def _refuse(send: Send, message: str) -> None:
    body = json.dumps({"error": "bad_request", "message": message}).encode()
    await send({"type": "http.response.start", "status": 400,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})


def create_app(config: HostConfig, token: str) -> Starlette:
    """The API of ``config`` (its Redis, limits and names), with ``token`` for TCP."""
    assert config.redis_url, "a gateway needs a Redis (REDIS_URL)"
    redis_url = config.redis_url

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Blocking: a burst of calls waits for a connection instead of failing.
        redis = connect(redis_url, max_connections=256, blocking=True, socket_timeout=10,
                        socket_connect_timeout=2)  # fmt: skip
        pool = PoolClient(redis)
        await pool.start()
        app.state.gw = Gateway(config, token, pool, GatewayMetrics())
        try:
            yield
        finally:
            with contextlib.suppress(aioredis.RedisError):
                await pool.close()
            await redis.aclose()

    routes = [*system.routes, *docker_system.routes, *functions.routes, *calls.routes,
              *environments.routes, *images.routes, *secrets.routes, *containers.routes,
              *execs.routes, *archive.routes, *volumes.routes, *networks.routes,
              *registries.routes, *events.routes]  # fmt: skip
    middleware = [
        Middleware(RequestLog),
        Middleware(HostCheck, allowed=[h for h in config.allowed_hosts.split(",") if h.strip()]),
        Middleware(StripVersion),
        Middleware(TokenAuth, token=token),
    ]
    return Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={
            ApiError: api_error,
            HTTPException: http_error,
            aioredis.ConnectionError: redis_unavailable,
            aioredis.TimeoutError: redis_unavailable,
            aioredis.ResponseError: redis_refused,
            Exception: internal_error,
        },
    )
