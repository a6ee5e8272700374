"""The warm pool's sizing and waiting: pure logic on fake instances (no containers).

An instance here is made by a coroutine the test controls, so each test decides when
a cold start finishes, and whether it fails.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from pool.contract.specs import FunctionSpec
from pool.instances import Instance, InstanceError
from pool.sizing import MakeTimes
from pool.warm import WarmPool
from runtime.records import ContainerRecord
from runtime.spec import ImageConfig, RunOptions

SPEC = FunctionSpec(name="f", image="img", pool_min=1, pool_max=3, idle_ttl=60.0)


class Factory:
    """Makes instances when told to: ``gate`` held shut keeps every cold start waiting."""

    def __init__(self, fail: bool = False) -> None:
        self.made: list[Instance] = []
        self.destroyed: list[Instance] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail = fail

    async def make(self) -> Instance:
        await self.gate.wait()
        if self.fail:
            raise RuntimeError("no such image")
        n = len(self.made)
        record = ContainerRecord(
            id=f"{n:064x}", name=f"c{n}", created=0.0, image="img", image_config=ImageConfig(),
            options=RunOptions(), layers=(), stdio="logs", status="running",
        )  # fmt: skip
        inst = Instance(SPEC, record)
        self.made.append(inst)
        return inst

    async def destroy(self, inst: Instance) -> None:
        self.destroyed.append(inst)


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def pool_of(spec: FunctionSpec, factory: Factory, slots: int = 8) -> WarmPool:
    return WarmPool(spec, factory.make, factory.destroy, asyncio.Semaphore(slots))


async def test_it_fills_to_its_minimum_and_a_call_takes_a_warm_one() -> None:
    factory = Factory()
    pool = pool_of(replace(SPEC, pool_min=2), factory)
    pool.refill()
    await settle()
    assert len(pool.ready) == 2 and pool.total == 2
    inst = await pool.acquire()
    assert inst.source == "pool" and inst.calls == 1
    await settle()
    assert len(pool.ready) == 2 and pool.busy == 1  # refilled behind the call
    await pool.close()


async def test_a_call_that_finds_none_ready_waits_for_the_next_made_a_cold_start() -> None:
    factory = Factory()
    factory.gate.clear()
    pool = pool_of(replace(SPEC, pool_min=0, max_invocations=0), factory)
    call = asyncio.create_task(pool.acquire())
    await settle()
    assert not call.done() and pool.creating == 1
    factory.gate.set()
    inst = await asyncio.wait_for(call, 5)
    assert inst.source == "cold" and pool.busy == 1
    await pool.close()


async def test_it_never_holds_more_than_its_maximum() -> None:
    factory = Factory()
    pool = pool_of(replace(SPEC, pool_min=0, pool_max=2, max_invocations=0), factory)
    first, second = await pool.acquire(), await pool.acquire()
    assert pool.total == 2 and not pool.can_serve()
    third = asyncio.create_task(pool.acquire())
    await settle()
    assert not third.done() and pool.creating == 0  # no third container: it waits
    pool.release(first, reusable=True)  # back to the pool, and at once to the waiting call
    assert (await asyncio.wait_for(third, 5)) is first
    assert len(factory.made) == 2
    pool.release(second, reusable=False)
    await settle()
    assert factory.destroyed == [second]
    await pool.close()


async def test_it_keeps_as_many_ready_as_calls_recently_needed_at_once() -> None:
    factory = Factory()
    pool = pool_of(replace(SPEC, pool_min=0, pool_max=8), factory)
    held = [await pool.acquire() for _ in range(3)]
    assert pool.recent_demand() == 3
    for inst in held:
        pool.release(inst, reusable=False)  # throwaway: each destroyed after its call
    await settle()
    assert len(pool.ready) == 3  # the peak of 3 stays ready for idle_ttl
    pool.spec = replace(pool.spec, idle_ttl=0.0)
    await asyncio.sleep(0.01)
    assert pool.recent_demand() == 0
    assert await pool.shrink() == 3 and not pool.ready  # pool.min 0: it scales to zero
    await pool.close()


async def test_shrink_keeps_the_minimum() -> None:
    factory = Factory()
    pool = pool_of(replace(SPEC, pool_min=1, idle_ttl=0.0), factory)
    pool.refill()
    await settle()
    assert await pool.shrink() == 0 and len(pool.ready) == 1
    await pool.close()


async def test_a_reusable_instance_serves_max_invocations_then_goes() -> None:
    factory = Factory()
    pool = pool_of(replace(SPEC, pool_min=0, max_invocations=2), factory)
    inst = await pool.acquire()
    pool.release(inst, reusable=True)
    assert await pool.acquire() is inst and inst.calls == 2
    pool.release(inst, reusable=True)
    await settle()
    assert factory.destroyed == [inst]
    await pool.close()


async def test_concurrency_shares_one_instance_up_to_its_limit() -> None:
    factory = Factory()
    pool = pool_of(replace(SPEC, pool_min=0, concurrency=2, max_invocations=0), factory)
    a = await pool.acquire()
    b = await pool.acquire()
    assert a is b and a.inflight == 2 and len(factory.made) == 1
    c = await pool.acquire()  # the first is full: another is made
    assert c is not a
    for inst in (a, b, c):
        pool.release(inst, reusable=True)
    await settle()
    assert a.inflight == 0 and sorted(i.id for i in pool.ready) == sorted([a.id, c.id])
    await pool.close()


async def test_a_cold_start_that_fails_fails_the_waiting_call_with_its_reason() -> None:
    factory = Factory(fail=True)
    pool = pool_of(replace(SPEC, pool_min=0, max_invocations=0), factory)
    with pytest.raises(InstanceError, match="no such image"):
        await asyncio.wait_for(pool.acquire(), 5)
    assert pool.cold_start_errors == 1 and pool.total == 0
    await pool.close()


async def test_a_call_that_gives_up_frees_its_slot_and_its_instance_stays() -> None:
    factory = Factory()
    factory.gate.clear()
    pool = pool_of(replace(SPEC, pool_min=0, pool_max=1), factory)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(pool.acquire(), 0.05)  # the call's deadline, as the worker has it
    assert pool.can_serve()  # the waiter is gone
    factory.gate.set()
    await settle()
    assert len(pool.ready) == 1  # made for the call that left: kept for the next
    await pool.close()


async def test_wait_until_can_serve_wakes_when_a_slot_frees() -> None:
    factory = Factory()
    pool = pool_of(replace(SPEC, pool_min=0, pool_max=1), factory)
    inst = await pool.acquire()
    waiting = asyncio.create_task(pool.wait_until_can_serve())
    await settle()
    assert not waiting.done()
    pool.release(inst, reusable=True)
    await asyncio.wait_for(waiting, 0.5)  # at once, not after its one-second look
    await pool.close()


async def test_close_fails_waiting_calls_and_destroys_what_it_holds() -> None:
    factory = Factory()
    pool = pool_of(replace(SPEC, pool_min=2), factory)
    pool.refill()
    await settle()
    factory.gate.clear()
    busy = [await pool.acquire(), await pool.acquire()]
    pool.spec = replace(pool.spec, pool_max=2)
    waiting = asyncio.create_task(pool.acquire())
    await settle()
    closing = asyncio.create_task(pool.close())
    with pytest.raises(InstanceError, match="shutting down"):
        await waiting
    assert not closing.done()  # a container being made is waited for, then destroyed
    factory.gate.set()
    await asyncio.wait_for(closing, 5)
    assert [i.id for i in factory.destroyed] == [factory.made[-1].id]
    for inst in busy:
        pool.release(inst, reusable=True)  # after close: destroyed, not kept
    await settle()
    assert {i.id for i in factory.destroyed} == {i.id for i in factory.made}


class HalfASecond(MakeTimes):
    @property
    def seconds(self) -> float:
        return 0.5


async def test_a_throwaway_pool_keeps_rate_times_make_time_in_the_making() -> None:
    """Calls arriving faster than one make time apart: more than one kept ready."""
    factory = Factory()
    pool = pool_of(replace(SPEC, pool_min=1, pool_max=16), factory)
    pool.makes = HalfASecond()  # as if each instance took half a second to make
    for _ in range(20):  # 20 calls in well under a second: a rate of 20/s
        inst = await pool.acquire()
        pool.release(inst, reusable=False)
    decided = pool.last_target
    # 20/s x 0.5 s = 10 in the making, plus headroom: 10 + 2*sqrt(10) + 1 -> 18, max 16
    assert decided.rate >= 19 and (decided.size, decided.rule) == (16, "max")
    await settle()
    assert len(pool.ready) + pool.creating == 16
    await pool.close()


async def test_free_slots_counts_what_a_read_may_take_and_never_past_the_maximum() -> None:
    """Five calls at once on a pool with room for five: a made instance goes to as many
    waiting calls as its concurrency takes (before, to one, and the next waited for a
    release)."""
    factory = Factory()
    spec = replace(SPEC, pool_min=1, pool_max=3, concurrency=2, max_invocations=0)
    pool = pool_of(spec, factory)
    pool.refill()
    await settle()
    assert pool.free_slots() == 6  # one ready and two more to make, two calls each
    a = await pool.acquire()
    await settle()
    assert pool.free_slots() == 5  # one call in a, room for one more there
    taken = [a, *(await asyncio.wait_for(asyncio.gather(*(pool.acquire() for _ in range(5))), 5))]
    await settle()
    assert pool.free_slots() == 0 and not pool.can_serve()
    waiting = asyncio.create_task(pool.acquire())
    await settle()
    assert pool.free_slots() == 0  # a waiting call holds a slot
    for inst in taken:
        pool.release(inst, reusable=True)
    await asyncio.wait_for(waiting, 5)
    assert pool.free_slots() == 5
    await pool.close()


async def test_a_throwaway_instance_goes_and_is_replaced_only_after_its_reply() -> None:
    """The teardown and the replacement's making wait for the call's reply (their work
    on the event loop would hold it up), unless nothing else is ready."""
    factory = Factory()
    pool = pool_of(replace(SPEC, pool_min=2, pool_max=8, max_invocations=1), factory)
    pool.refill()
    await settle()
    replied: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    inst = await pool.acquire(after=replied)
    pool.release(inst, reusable=False, after=replied)
    await settle()
    assert factory.destroyed == [] and len(factory.made) == 2  # both wait for the reply
    replied.set_result(None)
    await settle()
    assert factory.destroyed == [inst] and len(factory.made) == 3 and len(pool.ready) == 2
    # The last ready one taken: its replacement is made at once, reply or not.
    answers = [asyncio.get_running_loop().create_future() for _ in range(2)]
    await pool.acquire(after=answers[0])
    await settle()
    assert len(factory.made) == 3  # one is still ready: the replacement waits
    await pool.acquire(after=answers[1])
    await settle()
    assert len(factory.made) > 3 and pool.ready  # none was: made at once
    for answer in answers:
        answer.set_result(None)
    await pool.close()
