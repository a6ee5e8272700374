"""What every route shares: JSON errors, bounded bodies, request ids.

Handlers raise ``ApiError``; one exception handler turns it (and starlette's
own HTTP errors) into ``{"error": code, "message": text}`` with its status.
"""

from __future__ import annotations

import contextvars
import json
import logging
import secrets
import time
from typing import Any

import redis.asyncio as aioredis
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("scow.gateway")
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


class ApiError(Exception):
    def __init__(
        self, status: int, error: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        self.status, self.error, self.message = status, error, message
        self.headers = headers or {}
        super().__init__(f"{status} {error}: {message}")


def error_response(
    status: int, error: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": error, "message": message}, status, headers=headers)


# What each way a node command fails (pool.contract.messages.FAILURES) answers.
_COMMAND_STATUS = {
    "invalid": 400, "unsafe_archive": 400, "not_found": 404, "conflict": 409,
    "too_many": 429, "not_implemented": 501, "not_ready": 502, "not_ready_in_time": 504,
    "unauthorized": 401, "registry": 502, "node_gone": 503,
    "timeout": 504, "cancelled": 499, "unknown_command": 404, "internal": 500,
}  # fmt: skip


def command_status(error: str) -> int:
    """The HTTP status of a node command that failed with ``error``.

    >>> command_status("not_found"), command_status("something new")
    (404, 500)
    """
    return _COMMAND_STATUS.get(error, 500)


async def api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.error, exc.message, exc.headers)


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 400: "bad_request"}


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "error")
    return error_response(exc.status_code, code, str(exc.detail), dict(exc.headers or {}))


def cannot_reach_redis(exc: BaseException) -> str:
    """What a 503 says of a Redis error (some, as a pool's last connection taken, have no
    text of their own).

    >>> cannot_reach_redis(ConnectionError()), cannot_reach_redis(OSError("refused"))
    ('cannot reach Redis: ConnectionError', 'cannot reach Redis: refused')
    """
    return f"cannot reach Redis: {str(exc) or type(exc).__name__}"


async def redis_unavailable(request: Request, exc: Exception) -> Response:
    return error_response(503, "redis_unavailable", cannot_reach_redis(exc))


async def redis_refused(request: Request, exc: Exception) -> Response:
    """Redis at its maxmemory refuses writes (noeviction: it drops nothing to make room):
    the client may try again later; anything else Redis refused is a bug here."""
    if isinstance(exc, aioredis.OutOfMemoryError) or "maxmemory" in str(exc):
        return error_response(503, "redis_full", f"Redis is full (its maxmemory): {exc}",
                              {"Retry-After": "5"})  # fmt: skip
    return await internal_error(request, exc)


async def internal_error(request: Request, exc: Exception) -> Response:
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal", f"the gateway failed: {exc!r}")


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, or 413 as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(400, "bad_request", f"invalid Content-Length {declared!r}")
        if int(declared) > limit:
            raise ApiError(413, "too_large", f"the body has {declared} bytes; the limit is {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "too_large", f"the body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: Request, limit: int = 1 << 20) -> Any:
    body = await read_body(request, limit)
    if not body:
        raise ApiError(400, "bad_request", "a JSON body is required")
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, "bad_json", f"the body is not valid JSON: {exc}") from None


async def read_optional_json(request: Request, limit: int = 1 << 20) -> dict[str, Any]:
    """A JSON object body that may be left out (Docker's clients send none for defaults)."""
    body = await read_body(request, limit)
    if not body.strip():
        return {}
    try:
        return json_object(json.loads(body))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, "bad_json", f"the body is not valid JSON: {exc}") from None


def docker_filters(raw: str, known: set[str] | None = None) -> dict[str, list[str]]:
    """Docker's ``filters`` query: ``{"label": ["a=b"]}``, or older clients'
    ``{"label": {"a=b": true}}``; a key outside ``known`` (when given) is a 400."""
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        raise ApiError(400, "bad_request", f"invalid filters {raw!r}: expected JSON") from None
    if not isinstance(value, dict):
        raise ApiError(400, "bad_request", f"invalid filters {raw!r}: expected a JSON object")
    out = {}
    for key, wanted in value.items():
        if known is not None and key not in known:
            raise ApiError(400, "bad_request", f"invalid filter {key!r}: known are "
                           f"{', '.join(sorted(known))}")  # fmt: skip
        if isinstance(wanted, dict):
            wanted = [k for k, on in wanted.items() if on]
        out[str(key)] = [str(w) for w in wanted] if isinstance(wanted, list) else [str(wanted)]
    return out


def query(request: Request, key: str, what: str) -> str:
    """A query parameter that must be given; 400 saying what it is for when it is not."""
    value = request.query_params.get(key, "")
    if not value:
        raise ApiError(400, "bad_request", f"?{key}= {what}")
    return value


def json_object(value: Any, what: str = "body") -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ApiError(400, "bad_request", f"the {what} must be a JSON object, not {value!r:.80}")
    return value


_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F)}


def printable(text: str) -> str:
    r"""``text`` with control characters escaped: what a client sent (a path with %0A in
    it) cannot forge a log line.

    >>> printable("/a\nfake 200")
    '/a\\x0afake 200'
    """
    return text.translate(_CONTROL)


class RequestIdFilter(logging.Filter):
    """Puts the current request's id on every log record as ``request_id``."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


class RequestLog:
    """ASGI middleware: a request id for each request (``X-Request-Id``) and an access log."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        ok = given.isprintable() and given.isascii() and 0 < len(given) <= 64
        rid = given if ok else secrets.token_hex(8)
        token = request_id.set(rid)
        started = time.perf_counter()
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            log.info(
                "%s %s %s %.1fms", printable(scope["method"]), printable(scope["path"]), status,
                (time.perf_counter() - started) * 1000,
            )  # fmt: skip
            request_id.reset(token)
