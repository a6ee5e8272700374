"""The gateway's starlette application (the composition root for its routes)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway import __version__


def error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status)


async def healthz(request: Request) -> JSONResponse:
    redis: aioredis.Redis = request.app.state.redis
    try:
        await redis.ping()
    except (aioredis.ConnectionError, aioredis.TimeoutError, OSError) as exc:
        return error(503, "redis_unavailable", f"cannot reach Redis: {exc}")
    return JSONResponse({"status": "ok"})


async def version(request: Request) -> JSONResponse:
    return JSONResponse({"version": __version__})


def create_app(redis_url: str) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.redis = aioredis.Redis.from_url(
            redis_url, socket_timeout=5, socket_connect_timeout=2
        )
        try:
            yield
        finally:
            await app.state.redis.aclose()

    routes = [
        Route("/healthz", healthz, methods=["GET", "HEAD"]),
        Route("/system/version", version, methods=["GET"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)
