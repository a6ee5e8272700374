"""Calls: sync and async invocation, call records, and function logs.

A sync call is queued for the nodes and waits for its result on this
gateway's reply stream; an async call answers 202 at once and its result is
kept in the call record (and POSTed to ``X-Callback-Url`` by the node).

A call sent with ``Idempotency-Key`` runs once however often it is sent in the
next hour, through any gateway: a retry answers with the first call's id and
result (``Idempotent-Replayed: true``), waiting for it if it is still running.
The key is per function; reusing it for a different request is a 422.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import TypeVar

import redis.asyncio as aioredis
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from gateway.auth import authorized, carries_token
from gateway.http import ApiError, cannot_reach_redis, query, read_body
from gateway.state import Gateway, gateway_of
from pool.contract import keys, outbound
from pool.contract.client import Deployed, Idempotency
from pool.contract.errors import IdempotencyConflict, QueueFull, StaleSpec, TooManyKeys
from pool.contract.keys import new_call_id
from pool.contract.messages import CallRequest, CallResult
from pool.contract.specs import FunctionSpec

# Not passed to the function: they describe this hop, or belong to the gateway.
_DROPPED = {"host", "content-length", "connection", "keep-alive", "transfer-encoding", "te",
            "upgrade", "x-callback-url", "idempotency-key", "proxy-authorization"}  # fmt: skip


def forwarded(spec: FunctionSpec, name: str, value: str, token: str) -> bool:
    """Whether a request header goes on to the function. Never the API token, wherever
    the client put it; never ``Authorization`` to a function deployed with auth (there
    it is the gateway's); another ``Authorization`` to one without (it may do its own
    auth, as OpenFaaS forwards it)."""
    if name in _DROPPED or carries_token(value, token):
        return False
    return not (spec.auth and name == "authorization")
MAX_IDEMPOTENCY_KEY = 255


T = TypeVar("T")
SPEC_TRIES = 3  # a function redeployed while its call was judged: judged again


async def _function(gw: Gateway, request: Request) -> Deployed:
    """The function called and may this request call it. The spec may be the gateway's
    kept copy: the submit checks it is still the stored one, atomically, and a call on
    a changed spec is judged again (``_submitted``), so a function that now needs the
    token never runs a call made without it."""
    name = request.path_params["name"]
    allowed = authorized(request.scope, gw.token)
    try:
        deployed = await gw.pool.deployed(name)
        if deployed is not None and deployed.spec.auth and not allowed:
            gw.pool.forget(name)  # a refusal is said on the stored spec, not a kept one
            deployed = await gw.pool.deployed(name)
    except (aioredis.ConnectionError, aioredis.TimeoutError) as exc:
        raise ApiError(503, "redis_unavailable", cannot_reach_redis(exc)) from None
    if deployed is None:
        raise ApiError(404, "not_found", f"no function {name!r}")
    if deployed.spec.auth and not allowed:
        raise ApiError(401, "unauthorized", f"function {name!r} needs Authorization: Bearer")
    return deployed


async def _submitted(
    gw: Gateway, request: Request, submit: Callable[[Deployed, bytes], Awaitable[T]],
) -> T:  # fmt: skip
    """``submit(deployed, body)`` for the function called, judged again on a fresh spec
    each time the stored one changed under it."""
    deployed = await _function(gw, request)
    body = await read_body(request, gw.config.body_limit)
    for _ in range(SPEC_TRIES - 1):
        try:
            return await submit(deployed, body)
        except StaleSpec:
            deployed = await _function(gw, request)
    return await submit(deployed, body)  # StaleSpec again: a 503 that says so


def _request(
    gw: Gateway, request: Request, spec: FunctionSpec, body: bytes, reply_to: str,
    keep_result: bool = False,
) -> CallRequest:  # fmt: skip
    token = gw.token
    headers = tuple((k, v) for k, v in request.headers.items() if forwarded(spec, k, v, token))
    now = time.time()
    return CallRequest(
        id=new_call_id(spec.name), function=spec.name, deadline=now + spec.timeout,
        method=request.method, path="/" + request.path_params.get("path", ""),
        query=request.url.query, headers=headers, body=body, enqueued=now, reply_to=reply_to,
        callback=_callback_url(request), keep_result=keep_result,
    )  # fmt: skip


def _idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    if not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY or not key.isprintable() or not key.isascii():
        raise ApiError(400, "bad_request", f"invalid Idempotency-Key {key[:300]!r}: "
                       f"1 to {MAX_IDEMPOTENCY_KEY} printable ASCII characters")  # fmt: skip
    return key


def _idempotency(key: str | None, call: CallRequest) -> Idempotency | None:
    """The key with a fingerprint of what the call asks (method, path, query, body)."""
    if key is None:
        return None
    digest = hashlib.sha256()
    for part in (call.method, call.path, call.query):
        digest.update(part.encode() + b"\0")
    digest.update(call.body)
    return Idempotency(key, digest.hexdigest()[:32])


def _conflict(exc: IdempotencyConflict) -> ApiError:
    return ApiError(422, "idempotency_conflict", str(exc))


def _callback_url(request: Request) -> str:
    """The X-Callback-Url, checked as far as the URL itself tells (the node checks where
    its name leads when it connects)."""
    url = request.headers.get("x-callback-url", "")
    if url:
        gw = gateway_of(request)
        try:
            outbound.check_url(url, gw.callback_allow)
        except outbound.OutboundRefused as exc:
            raise ApiError(400, "bad_request", f"invalid X-Callback-Url: {exc}") from None
    return url


def _changing(exc: StaleSpec) -> ApiError:
    return ApiError(503, "function_changing", f"{exc}, {SPEC_TRIES} times: try again",
                    {"Retry-After": "1"})  # fmt: skip


def _queue_full(gw: Gateway, exc: QueueFull | TooManyKeys) -> ApiError:
    error = "queue_full" if isinstance(exc, QueueFull) else "too_many_idempotency_keys"
    gw.metrics.rejected.labels(exc.function, error).inc()
    return ApiError(429, error, str(exc), {"Retry-After": "1"})


async def invoke(request: Request) -> Response:
    gw = gateway_of(request)
    key = _idempotency_key(request)
    started = time.perf_counter()

    async def submit(deployed: Deployed, body: bytes) -> tuple[CallRequest, CallResult]:
        nonlocal started
        call = _request(gw, request, deployed.spec, body, gw.pool.reply_stream,
                        keep_result=key is not None)  # fmt: skip
        started = time.perf_counter()
        return call, await gw.pool.call(call, max_queue=gw.config.max_queue,
                                        idempotency=_idempotency(key, call), spec=deployed)

    try:
        call, result = await _submitted(gw, request, submit)
    except StaleSpec as exc:
        raise _changing(exc) from None
    except (QueueFull, TooManyKeys) as exc:
        raise _queue_full(gw, exc) from None
    except IdempotencyConflict as exc:
        raise _conflict(exc) from None
    except (aioredis.ConnectionError, aioredis.TimeoutError) as exc:
        raise ApiError(503, "redis_unavailable", cannot_reach_redis(exc)) from None
    elapsed = time.perf_counter() - started
    gw.metrics.observe(call.function, result, elapsed)
    headers = [(k, v) for k, v in result.headers if k.lower() not in ("content-length",)]
    response = Response(result.body, result.status)
    for k, v in headers:
        response.headers.append(k, v)
    response.headers["x-call-id"] = result.id
    response.headers["x-duration-seconds"] = f"{elapsed:.6f}"
    response.headers["x-scow-cold"] = "1" if result.cold else "0"
    if result.node:
        response.headers["x-scow-node"] = result.node  # which node ran it
    if result.id != call.id:
        response.headers["idempotent-replayed"] = "true"
    return response


async def invoke_async(request: Request) -> Response:
    gw = gateway_of(request)
    key = _idempotency_key(request)

    async def submit(deployed: Deployed, body: bytes) -> tuple[CallRequest, str | None]:
        call = _request(gw, request, deployed.spec, body, reply_to="")
        return call, await gw.pool.submit(call, gw.config.max_queue, _idempotency(key, call),
                                          deployed)  # fmt: skip

    try:
        call, earlier = await _submitted(gw, request, submit)
    except StaleSpec as exc:
        raise _changing(exc) from None
    except (QueueFull, TooManyKeys) as exc:
        raise _queue_full(gw, exc) from None
    except IdempotencyConflict as exc:
        raise _conflict(exc) from None
    except (aioredis.ConnectionError, aioredis.TimeoutError) as exc:
        raise ApiError(503, "redis_unavailable", cannot_reach_redis(exc)) from None
    call_id = earlier or call.id
    headers = {"x-call-id": call_id, **({"idempotent-replayed": "true"} if earlier else {})}
    return JSONResponse({"call_id": call_id}, 202, headers=headers)


async def list_calls(request: Request) -> JSONResponse:
    """``?function=NAME&limit=N``: the function's latest calls, newest first."""
    gw = gateway_of(request)
    name = query(request, "function", "names the function")
    limit_text = request.query_params.get("limit", "20")
    if not limit_text.isdigit() or not 1 <= int(limit_text) <= keys.CALLS_INDEXED:
        raise ApiError(400, "bad_request",
                       f"invalid limit {limit_text!r}: 1 to {keys.CALLS_INDEXED}")  # fmt: skip
    records = await gw.pool.recent_calls(name, int(limit_text))
    return JSONResponse([r.to_json() for r in records])


async def get_call(request: Request) -> JSONResponse:
    gw = gateway_of(request)
    call_id = request.path_params["id"]
    record = await gw.pool.record(call_id)
    if record is None:
        raise ApiError(404, "not_found", f"no call {call_id!r} (records are kept for an hour)")
    return JSONResponse(record.to_json())


def _since(value: str | None) -> str:
    """A stream id from ``since``: epoch seconds, RFC 3339, or a duration ago (``5m``)."""
    if not value:
        return "-"
    try:
        when = float(value)
        if not math.isfinite(when):
            raise ValueError(value)
    except ValueError:
        units = {"s": 1, "m": 60, "h": 3600}
        if value[-1:] in units and value[:-1].replace(".", "", 1).isdigit():
            when = time.time() - float(value[:-1]) * units[value[-1]]
        else:
            try:
                when = datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
            except ValueError:
                raise ApiError(
                    400, "bad_request",
                    f"invalid since {value!r}: epoch seconds, RFC 3339, or a duration like 5m",
                ) from None  # fmt: skip
    return str(int(min(max(when, 0.0), 1e13) * 1000))  # a stream id is 0 to 2**64 ms


def _line(function: str, entry_id: bytes, fields: dict[bytes, bytes]) -> bytes:
    ms = int(entry_id.split(b"-")[0])
    line = {
        "time": datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds"),
        "function": function, "call_id": fields[b"call"].decode(),
        "container": fields[b"container"].decode(), "stream": fields[b"stream"].decode(),
        "text": fields[b"text"].decode(errors="replace"),
    }  # fmt: skip
    return json.dumps(line).encode() + b"\n"


async def logs(request: Request) -> Response:
    """``?name=F&tail=N&since=T&follow=1``: the function's log lines as NDJSON."""
    gw = gateway_of(request)
    q = request.query_params
    name = query(request, "name", "names the function")
    tail_text = q.get("tail", "")
    if tail_text and not tail_text.isdigit():
        raise ApiError(400, "bad_request", f"invalid tail {tail_text!r}: expected a number")
    follow = q.get("follow", "") in ("1", "true", "yes")
    start = _since(q.get("since"))
    if tail_text == "0":
        entries = []
    else:  # no more lines than a function keeps, whatever the number asked
        count = min(int(tail_text), keys.LOGS_MAXLEN) if tail_text else None
        entries = await gw.pool.log_entries(name, start, count)
    if not follow:
        return Response(b"".join(_line(name, i, f) for i, f in entries),
                        media_type="application/x-ndjson")  # fmt: skip
    if entries:
        last: bytes | str = entries[-1][0]
    else:
        last = await gw.pool.logs_end(name) if start == "-" else f"{int(start) - 1}"

    async def stream() -> AsyncIterator[bytes]:
        for entry_id, fields in entries:
            yield _line(name, entry_id, fields)
        async for batch in gw.pool.follow_logs(name, last):  # until the client goes away
            for entry_id, fields in batch:
                yield _line(name, entry_id, fields)
            await asyncio.sleep(0)

    return StreamingResponse(stream(), media_type="application/x-ndjson")


METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
routes = [
    Route("/function/{name}", invoke, methods=METHODS),
    Route("/function/{name}/{path:path}", invoke, methods=METHODS),
    Route("/async-function/{name}", invoke_async, methods=["POST"]),
    Route("/async-function/{name}/{path:path}", invoke_async, methods=["POST"]),
    Route("/system/calls", list_calls, methods=["GET"]),
    Route("/system/calls/{id}", get_call, methods=["GET"]),
    Route("/system/logs", logs, methods=["GET"]),
]
