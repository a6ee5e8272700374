"""Calls through the gateway over real HTTP: gateway -> Redis -> node -> container and back,
on one Redis and on a Redis Cluster."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.serve import bind_tcp
from images.store import ImageStore
from pool.contract import keys, outbound
from pool.contract.client import PoolClient
from pool.contract.config import HostConfig
from pool.contract.specs import parse_spec
from pool.manager import PoolManager
from tests.gateway.conftest import RunningGateway, run_server, serve, with_limits
from tests.gateway.test_functions_api import eventually
from tests.utils import free_port


@pytest.fixture
def redis_url(single_or_cluster_redis_url: str) -> str:
    return single_or_cluster_redis_url


ECHO = {"name": "echo", "image": "tests/echo", "timeout": "20s"}
WC = {"name": "wc", "image": "examples/busybox-wc", "protocol": "stdio", "pool": {"max": 8}}


@pytest.fixture
async def echo(api: httpx.AsyncClient, echo_images: ImageStore, manager: PoolManager) -> str:
    assert (await api.post("/system/functions", json=ECHO)).status_code == 201
    return "echo"


async def test_request_reaches_the_function_and_its_reply_comes_back(
    gateway: RunningGateway, echo: str
) -> None:
    async with gateway.tcp(token=None) as anonymous:
        response = await anonymous.put(
            "/function/echo/some/path?a=1&b=two", content=b"payload",
            headers={"X-Custom": "value", "X-Status": "201"},
        )  # fmt: skip
    assert response.status_code == 201, response.text
    seen = response.json()
    assert seen["method"] == "PUT"
    assert seen["path"] == "/some/path" and seen["query"] == "a=1&b=two"
    assert seen["headers"]["x-custom"] == "value" and seen["body"] == "payload"
    assert response.headers["x-echo"] == "yes"  # the function's own header
    assert len(response.headers["x-call-id"]) == 24
    assert float(response.headers["x-duration-seconds"]) > 0
    assert response.headers["x-scow-cold"] in ("0", "1")
    assert seen["headers"]["x-call-id"] == response.headers["x-call-id"]


async def test_unknown_function_is_404_json(api: httpx.AsyncClient) -> None:
    response = await api.post("/function/nope", content=b"x")
    assert response.status_code == 404
    assert response.json() == {"error": "not_found", "message": "no function 'nope'"}


async def test_auth_function_needs_the_token_and_does_not_see_it(
    gateway: RunningGateway, api: httpx.AsyncClient, echo_images: ImageStore,
    manager: PoolManager,
) -> None:  # fmt: skip
    spec = {**ECHO, "name": "secret", "auth": True}
    assert (await api.post("/system/functions", json=spec)).status_code == 201
    async with gateway.tcp(token=None) as anonymous:
        refused = await anonymous.post("/function/secret", content=b"x")
    assert refused.status_code == 401
    allowed = await api.post("/function/secret", content=b"x")
    assert allowed.status_code == 200, allowed.text
    assert "authorization" not in allowed.json()["headers"]


async def test_a_gateway_keeps_a_spec_but_never_calls_on_a_changed_one(
    gateway: RunningGateway, settings: HostConfig, run_dir: Path, echo_images: ImageStore,
    manager: PoolManager, redis_client: aioredis.Redis,
) -> None:  # fmt: skip
    """The gateway keeps the spec it read (one round trip a call), and the submit checks
    it is still the stored one: a function redeployed with auth through another gateway
    refuses the next anonymous call here at once; one removed there is a 404 here."""
    spec = {**ECHO, "name": "changing"}
    async with (
        gateway.tcp(token=None) as anonymous, serve(settings, run_dir / "b") as other,
        other.tcp() as there,
    ):
        assert (await there.post("/system/functions", json=spec)).status_code == 201
        first = await anonymous.post("/function/changing", content=b"x")
        assert first.status_code == 200, first.text  # read and kept here
        redeployed = await there.put("/system/functions", json={**spec, "auth": True})
        assert redeployed.status_code == 200, redeployed.text
        refused = await anonymous.post("/function/changing", content=b"x")
        assert refused.status_code == 401, refused.text
        queued = await redis_client.xlen(keys.calls_key("changing"))
        assert queued == 0  # nothing was queued on the old spec
        assert (await there.delete("/system/functions", params={"name": "changing"})
                ).status_code == 200  # fmt: skip
        gone = await anonymous.post("/function/changing", content=b"x")
        assert gone.status_code == 404, gone.text


async def test_body_over_the_limit_is_413_and_nothing_is_queued(
    gateway: RunningGateway, redis_client: aioredis.Redis, manager: PoolManager,
    api: httpx.AsyncClient,
) -> None:  # fmt: skip
    assert (await api.post("/system/functions", json=WC)).status_code == 201
    keys_before = set(await redis_client.keys("scow:v1:*:call:*"))
    big = b"x" * (7 << 20)
    response = await api.post("/function/wc", content=big)
    assert response.status_code == 413 and response.json()["error"] == "too_large"

    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(7):
            yield b"x" * (1 << 20)

    chunked = await api.post("/function/wc", content=chunks())  # no Content-Length
    assert chunked.status_code == 413
    assert await redis_client.xlen(keys.calls_key("wc")) == 0
    assert set(await redis_client.keys("scow:v1:*:call:*")) == keys_before
    ok = await api.post("/function/wc", content=b"x" * (6 << 20))  # at the limit: fine
    assert ok.status_code == 200 and ok.content.split()[2] == str(6 << 20).encode()


async def test_full_queue_is_429_with_retry_after(
    settings: HostConfig, run_dir: Path, redis_client: aioredis.Redis
) -> None:
    # No node: calls stay queued, so the third one finds the queue at its cap of 2.
    async with serve(with_limits(settings, max_queue=2), run_dir) as gw, gw.tcp() as api:
        await PoolClient(redis_client).deploy(parse_spec(WC))
        for _ in range(2):
            assert (await api.post("/async-function/wc", content=b"x")).status_code == 202
        refused = await api.post("/async-function/wc", content=b"x")
        assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
        assert refused.json()["error"] == "queue_full"
        sync_refused = await api.post("/function/wc", content=b"x")
        assert sync_refused.status_code == 429
        assert await redis_client.xlen(keys.calls_key("wc")) == 2


async def test_async_call_record_and_callback(
    api: httpx.AsyncClient, echo: str, settings: HostConfig, run_dir: Path,
    manager: PoolManager,
) -> None:  # fmt: skip
    received: asyncio.Queue[tuple[dict[str, str], bytes]] = asyncio.Queue()

    async def callback(request: Request) -> Response:
        await received.put((dict(request.headers), await request.body()))
        return Response(status_code=204)

    port = free_port()
    app = Starlette(routes=[Route("/done", callback, methods=["POST"])])
    url = f"http://127.0.0.1:{port}/done"
    refused = await api.post("/async-function/echo", headers={"X-Callback-Url": url})
    assert refused.status_code == 400 and "loopback" in refused.json()["message"]
    # The operator may allow it (SCOW_CALLBACK_ALLOW), on the gateway and on the node.
    manager.callback_allow = outbound.Allow.parse("127.0.0.1")
    allowing = replace(settings, callback_allow="127.0.0.1")
    async with run_server(app, [bind_tcp("127.0.0.1", port)]), serve(
        allowing, run_dir / "allowing"
    ) as allowed, allowed.tcp() as allowed_api:
        response = await allowed_api.post(
            "/async-function/echo", content=b"later", headers={"X-Callback-Url": url},
        )  # fmt: skip
        assert response.status_code == 202
        call_id = response.headers["x-call-id"]
        headers, body = await asyncio.wait_for(received.get(), 30)
        assert headers["x-call-id"] == call_id and headers["x-function-status"] == "200"
        assert json.loads(body)["body"] == "later"
        record = await eventually(lambda: _done(api, call_id))
        assert record["status"] == 200 and record["function"] == "echo"
        assert json.loads(record["body"])["body"] == "later"
        assert record["callback"] == "204" and record["queue_seconds"] >= 0
    unknown = await api.post("/async-function/nope")
    assert unknown.status_code == 404
    bad = await api.post("/async-function/echo", headers={"X-Callback-Url": "file:///etc"})
    assert bad.status_code == 400 and "X-Callback-Url" in bad.json()["message"]
    assert (await api.get("/system/calls/nope")).status_code == 404


async def _done(
    api: httpx.AsyncClient, call_id: str, callback: bool = True
) -> dict[str, object] | None:
    record = (await api.get(f"/system/calls/{call_id}")).json()
    return record if record["state"] == "done" and ("callback" in record or not callback) else None


async def test_logs_carry_the_call_id_and_follow(
    gateway: RunningGateway, api: httpx.AsyncClient, echo: str
) -> None:
    first = await api.post("/function/echo", headers={"X-Log": "line one"})
    call_id = first.headers["x-call-id"]
    lines = [json.loads(x) for x in (await api.get("/system/logs", params={"name": "echo"}))
             .text.splitlines()]  # fmt: skip
    mine = [x for x in lines if x["call_id"] == call_id]
    assert [x["text"] for x in mine] == ["line one"], lines
    assert mine[0]["function"] == "echo" and mine[0]["time"].endswith("+00:00")
    tail = (await api.get("/system/logs", params={"name": "echo", "tail": 1})).text
    assert len(tail.splitlines()) == 1

    async with api.stream("GET", "/system/logs",
                          params={"name": "echo", "follow": 1, "tail": 0}) as stream:  # fmt: skip
        second = await api.post("/function/echo", headers={"X-Log": "line two"})
        async for raw in stream.aiter_lines():
            entry = json.loads(raw)
            if entry["text"] == "line two":
                assert entry["call_id"] == second.headers["x-call-id"]
                break
    bad = await api.get("/system/logs", params={"name": "echo", "tail": "many"})
    assert bad.status_code == 400


async def test_300_concurrent_calls_are_all_answered(
    api: httpx.AsyncClient, manager: PoolManager
) -> None:
    assert (await api.post("/system/functions", json=WC)).status_code == 201
    limits = httpx.Limits(max_connections=300)
    async with httpx.AsyncClient(base_url=str(api.base_url), headers=api.headers, limits=limits,
                                 timeout=60) as many:  # fmt: skip
        responses = await asyncio.gather(
            *(many.post("/function/wc", content=f"call {i}\n".encode()) for i in range(300))
        )
    statuses = [r.status_code for r in responses]
    assert statuses == [200] * 300, {r.text for r in responses if r.status_code != 200}
    assert len({r.headers["x-call-id"] for r in responses}) == 300
    # busybox wc: lines, words, bytes of each call's own body
    assert all(r.content.split()[:2] == [b"1", b"2"] for r in responses)
    metrics = (await api.get("/metrics")).text
    assert 'gateway_function_invocation_total{code="200",function_name="wc"} 300.0' in metrics
    assert 'scow_calls_total{code="200",function="wc"} 300.0' in metrics


async def test_idempotency_key_runs_a_call_once(
    api: httpx.AsyncClient, manager: PoolManager
) -> None:
    once = {"name": "once", "image": "busybox", "protocol": "stdio",
            "command": "echo ran >&2; sleep 0.3; cat"}  # fmt: skip
    assert (await api.post("/system/functions", json=once)).status_code == 201
    first = await api.post("/function/once", content=b"a", headers={"Idempotency-Key": "k1"})
    assert first.status_code == 200 and first.content == b"a"
    assert "idempotent-replayed" not in first.headers
    again = await api.post("/function/once", content=b"a", headers={"Idempotency-Key": "k1"})
    assert (again.status_code, again.content) == (200, b"a")
    assert again.headers["x-call-id"] == first.headers["x-call-id"]
    assert again.headers["idempotent-replayed"] == "true"
    # Sent twice at once: one runs, the other waits for its result.
    both = await asyncio.gather(*(
        api.post("/function/once", content=b"b", headers={"Idempotency-Key": "k2"})
        for _ in range(2)
    ))  # fmt: skip
    assert [r.content for r in both] == [b"b", b"b"]
    assert both[0].headers["x-call-id"] == both[1].headers["x-call-id"]
    queued = [
        await api.post("/async-function/once", content=b"c", headers={"Idempotency-Key": "k3"})
        for _ in range(2)
    ]
    assert [r.status_code for r in queued] == [202, 202]
    assert queued[0].json() == queued[1].json()

    other = await api.post("/function/once", content=b"not a", headers={"Idempotency-Key": "k1"})
    assert other.status_code == 422
    assert "'k1'" in other.json()["message"] and first.headers["x-call-id"] in other.text
    long_key = await api.post("/function/once", headers={"Idempotency-Key": "x" * 256})
    assert long_key.status_code == 400 and "Idempotency-Key" in long_key.json()["message"]

    ids = {first.headers["x-call-id"], both[0].headers["x-call-id"], queued[0].json()["call_id"]}
    await eventually(lambda: _done(api, queued[0].json()["call_id"], callback=False))
    logs = (await api.get("/system/logs", params={"name": "once"})).text.splitlines()
    runs = [json.loads(line)["call_id"] for line in logs if json.loads(line)["text"] == "ran"]
    assert sorted(runs) == sorted(ids), "each key's call ran exactly once"
