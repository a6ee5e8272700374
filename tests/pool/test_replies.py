"""The gateway's reply reader (PoolClient) against a real Redis, the test acting as the node.

One task reads every reply of a gateway: if it ended, every call of that gateway
would wait for its deadline from then on. A fault is injected exactly where the
Redis outage test once caught it (between reading replies and deleting them).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from pool.contract.client import PoolClient
from pool.contract.keys import GROUP, calls_key
from pool.contract.messages import CallRequest, CallResult
from tests.pool.test_calls import request


@pytest.fixture
async def unstarted(redis_client: aioredis.Redis) -> AsyncIterator[PoolClient]:
    """A gateway's client whose reader the test starts (``close`` stops it)."""
    c = PoolClient(redis_client)
    yield c
    await c.close()


async def take_call(redis: aioredis.Redis, fn: str) -> CallRequest:
    """What a node does first: read the next call of ``fn`` (the group made as deploy does)."""
    key = calls_key(fn)
    for _ in range(200):
        batches = await redis.xreadgroup(GROUP, "test-node", {key: ">"}, count=1, block=50)
        for _, entries in batches or []:
            _, fields = entries[0]
            return CallRequest.from_fields(fields)
    raise AssertionError(f"no call of {fn} was queued")


async def answer(redis: aioredis.Redis, req: CallRequest, body: bytes) -> None:
    result = CallResult(req.id, 200, (), body, node="test-node")
    await redis.xadd(req.reply_to, result.to_fields())


def queued_call(client: PoolClient, fn: str, body: bytes) -> asyncio.Task[CallResult]:
    req = request(fn, body, 5.0, reply_to=client.reply_stream)
    return asyncio.create_task(client.call(req, grace=0.0))


async def test_the_reader_outlives_a_redis_error_after_reading(
    unstarted: PoolClient, redis_client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = unstarted
    await redis_client.xgroup_create(calls_key("f"), GROUP, id="0", mkstream=True)
    real_xdel = client.redis.xdel
    failed: list[int] = []

    async def xdel_fails_once(*args: object) -> int:
        if not failed:  # Redis goes away right after the reply was read
            failed.append(1)
            raise aioredis.ConnectionError("Redis went away")
        return await real_xdel(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(client.redis, "xdel", xdel_fails_once)
    await client.start()
    first = queued_call(client, "f", b"one")
    await answer(redis_client, await take_call(redis_client, "f"), b"one")
    assert (await first).body == b"one"
    assert failed, "the fault was not injected: the test proves nothing"
    # The reader survived it: the next reply reaches its call too.
    second = queued_call(client, "f", b"two")
    await answer(redis_client, await take_call(redis_client, "f"), b"two")
    result = await second
    assert (result.status, result.body) == (200, b"two"), result
    # The entry whose delete failed was read again and deleted then.
    for _ in range(100):
        if await redis_client.xlen(client.reply_stream) == 0:
            break
        await asyncio.sleep(0.02)
    assert await redis_client.xlen(client.reply_stream) == 0


async def test_a_reply_that_comes_before_the_reader_reads_is_not_missed(
    unstarted: PoolClient, redis_client: aioredis.Redis
) -> None:
    client = unstarted
    await redis_client.xgroup_create(calls_key("f"), GROUP, id="0", mkstream=True)
    pending = queued_call(client, "f", b"early")
    await answer(redis_client, await take_call(redis_client, "f"), b"early")
    await client.start()  # the reader's first read comes after the reply
    result = await pending
    assert (result.status, result.body) == (200, b"early"), result


def test_an_outage_is_said_once_and_its_end_once(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from pool.contract.outage import Outage

    logger = logging.getLogger("scow.test-outage")
    outage = Outage(logger, "reading replies")
    with caplog.at_level(logging.WARNING, logger.name):
        outage.succeeded()  # nothing failed: nothing to say
        for _ in range(3):
            outage.failed(OSError("gone"))
        assert outage.ongoing
        outage.succeeded()
        outage.succeeded()
    assert [r.getMessage() for r in caplog.records] == [
        "reading replies: OSError('gone') (retrying)",
        "reading replies: working again",
    ]
