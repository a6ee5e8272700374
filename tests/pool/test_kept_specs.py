"""A gateway keeps the specs it reads for calls, and never queues a call on one that
changed: PoolClient.deployed and the submit script's check, against a real Redis."""

from __future__ import annotations

import time

import pytest
import redis.asyncio as aioredis

from pool.contract import keys
from pool.contract.client import PoolClient
from pool.contract.errors import StaleSpec
from pool.contract.messages import CallRequest
from pool.contract.specs import FunctionSpec


def _call(name: str) -> CallRequest:
    now = time.time()
    return CallRequest(keys.new_call_id(name), name, deadline=now + 10, enqueued=now)


async def test_a_kept_spec_is_read_once_and_a_changed_one_queues_nothing(
    client: PoolClient, redis_client: aioredis.Redis
) -> None:
    other = PoolClient(redis_client)  # another gateway, on the same Redis
    await other.deploy(FunctionSpec(name="kept", image="img"))
    first = await client.deployed("kept")
    assert first is not None and not first.spec.auth
    assert await client.deployed("kept") is first  # kept: no second read
    assert await client.submit(_call("kept"), spec=first) is None  # still the stored one
    await other.deploy(FunctionSpec(name="kept", image="img", auth=True))
    with pytest.raises(StaleSpec, match="'kept' changed"):
        await client.submit(_call("kept"), spec=first)
    assert await redis_client.xlen(keys.calls_key("kept")) == 1  # only the first call
    again = await client.deployed("kept")  # forgotten by the refusal: read anew
    assert again is not None and again.spec.auth and again.digest != first.digest
    await other.remove("kept")
    with pytest.raises(StaleSpec):
        await client.submit(_call("kept"), spec=again)
    assert await client.deployed("kept") is None  # gone, and a miss is not kept


async def test_a_submit_without_a_spec_is_not_checked(client: PoolClient) -> None:
    """Callers that judged nothing on a spec (a node's own retries) queue as before."""
    assert await client.submit(_call("unchecked")) is None
