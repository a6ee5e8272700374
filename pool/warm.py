"""A warm pool: instances of one function on one node, made before calls need them.

The pool keeps ready or in the making as many instances as ``sizing.target``
decides (the recent peak of calls at once, and for throwaway functions the call
rate times the time to make one), at least ``pool.min``, at most ``pool.max`` in
all; calls that wait make it grow (a call that finds none ready waits for the next
one made: a cold start). A throwaway instance
(``max_invocations`` 1) is destroyed after its call and replaced at once; a
reusable one goes back to the pool until it has served ``max_invocations``
calls, and while busy it takes more calls, up to the spec's ``concurrency``.
Ready instances beyond ``pool.min`` that sat idle for ``idle_ttl`` are
destroyed: with ``pool.min`` 0 the function scales to zero.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Literal

from pool.contract.specs import FunctionSpec
from pool.instances import Instance, InstanceError
from pool.sizing import ArrivalRate, MakeTimes, Target, target

AFTER_PATIENCE = 5.0  # a throwaway instance waits this long at most for its call's reply

log = logging.getLogger("scow.pool")


class WarmPool:
    def __init__(
        self,
        spec: FunctionSpec,
        make: Callable[[], Awaitable[Instance]],
        destroy: Callable[[Instance], Awaitable[None]],
        slots: asyncio.Semaphore,
    ) -> None:
        self.spec = spec
        self._make = make
        self._destroy = destroy
        self._slots = slots
        self.ready: deque[Instance] = deque()
        self.creating = 0
        self.busy = 0
        self.cold_start_errors = 0
        self._waiters: deque[asyncio.Future[Instance]] = deque()
        self._tasks: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()
        self._closed = False
        self._peaks: deque[tuple[float, int]] = deque()  # (when, calls at once)
        # Busy instances that may take more calls at once (concurrency above 1).
        self._shared: list[Instance] = []
        self.arrivals = ArrivalRate()
        self.makes = MakeTimes()
        self.last_target = self.decide()

    def _note_demand(self) -> None:
        # A sliding-window maximum: the deque's counts decrease from front to back, so
        # the front is the peak, and each call costs O(1) however many came before.
        now, n = time.monotonic(), self.busy + len(self._waiters)
        while self._peaks and self._peaks[-1][1] <= n:
            self._peaks.pop()
        self._peaks.append((now, n))

    def recent_demand(self) -> int:
        """The most calls this node ran at once within the last ``idle_ttl``."""
        now = time.monotonic()
        while self._peaks and now - self._peaks[0][0] > self.spec.idle_ttl:
            self._peaks.popleft()
        return self._peaks[0][1] if self._peaks else 0

    def decide(self) -> Target:
        """How many instances to keep ready or being made now (see sizing.py)."""
        spec = self.spec
        return target(
            pool_min=spec.pool_min, pool_max=spec.pool_max, concurrency=spec.concurrency,
            throwaway=spec.throwaway, peak=self.recent_demand(),
            rate=self.arrivals.per_second(time.monotonic()), make_seconds=self.makes.seconds,
        )  # fmt: skip

    @property
    def total(self) -> int:
        return len(self.ready) + self.creating + self.busy

    def can_serve(self) -> bool:
        """Whether a call read now gets an instance without exceeding ``pool.max``.

        Ready instances are never kept while calls wait, so any ready one is free;
        a shared busy one may have room; otherwise each busy instance and each
        waiting call holds one of the slots.
        """
        return (
            bool(self.ready)
            or self._room() is not None
            or self.busy + len(self._waiters) < self.spec.pool_max
        )

    def free_slots(self) -> int:
        """How many calls read now would each get an instance without exceeding
        ``pool.max``: what a node may take off the queue in one read.

        Ready instances, the room left in shared busy ones, and the instances that may
        still be made, each taking ``concurrency`` calls, less the calls already waiting.
        """
        per = self.spec.concurrency
        shared = sum(per - i.inflight for i in filter(self._may_take, self._shared))
        unmade = max(0, self.spec.pool_max - self.total)
        return max(0, len(self.ready) * per + shared + unmade * per - len(self._waiters))

    def _may_take(self, inst: Instance) -> bool:
        return inst.inflight < self.spec.concurrency and not inst.retired and self._has_budget(inst)

    def _has_budget(self, inst: Instance) -> bool:
        limit = self.spec.max_invocations
        return limit == 0 or inst.calls < limit

    def _room(self) -> Instance | None:
        """A busy instance that can take one more call now, the least loaded."""
        return min(filter(self._may_take, self._shared), key=lambda i: i.inflight, default=None)

    def _take(self, inst: Instance, source: Literal["pool", "cold"]) -> Instance:
        inst.calls += 1
        inst.inflight += 1
        inst.source = source
        if self.spec.concurrency > 1 and inst not in self._shared:
            self._shared.append(inst)
        return inst

    async def wait_until_can_serve(self) -> None:
        """Until a call read now would get an instance. Looked at every second too: a
        wakeup missed must cost a second, never the function's calls from then on."""
        while not self.can_serve() and not self._closed:
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), 1.0)

    async def acquire(self, after: Awaitable[object] | None = None) -> Instance:
        """A ready instance, or the next one made (marked ``cold``).

        The one taken is replaced once ``after`` is done (the call answered) while others
        are still ready: making a container costs the event loop and the GIL work that
        would slow the call in flight; with none left ready, at once."""
        self.arrivals.arrived(time.monotonic())
        if self.ready:
            inst = self.ready.popleft()
            self.busy += 1
            self._note_demand()
            self._refill_once(after)
            return self._take(inst, "pool")
        if (shared := self._room()) is not None:
            self._note_demand()
            return self._take(shared, "pool")
        fut: asyncio.Future[Instance] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        self._note_demand()
        self.refill()
        try:
            return await fut  # taken for us by _hand_over
        except BaseException:
            if fut in self._waiters:
                self._waiters.remove(fut)
                self._changed.set()  # a slot is free again: the reader may take a call
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                unused = fut.result()  # taken for us, but we are gone: given back unused
                unused.calls -= 1
                self.release(unused, reusable=True)
            raise

    def release(
        self, inst: Instance, *, reusable: bool, after: Awaitable[object] | None = None
    ) -> None:
        """After a call: back to the pool if it may serve again, else destroyed once
        ``after`` is done (the call's reply sent: a teardown's work on the event loop
        would otherwise hold the reply up).

        An instance still running other calls stays busy; one that failed takes
        no new calls and goes when its last call ends.
        """
        inst.inflight -= 1
        if not reusable:
            inst.retired = True
        if inst.inflight > 0:
            self._changed.set()
            return
        if inst in self._shared:
            self._shared.remove(inst)
        self.busy -= 1
        if not inst.retired and not self._closed and self._has_budget(inst):
            self.busy += 1
            self._hand_over(inst)
        else:
            self._spawn(self._destroy_after(inst, after))
        self._refill_once(after)

    def _refill_once(self, after: Awaitable[object] | None) -> None:
        """Refill now, or once ``after`` is done while some are still ready."""
        if after is not None and self.ready:
            self._spawn(self._refill_after(after))
        else:
            self.refill()

    async def _refill_after(self, after: Awaitable[object]) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(after), AFTER_PATIENCE)
        self.refill()

    async def _destroy_after(self, inst: Instance, after: Awaitable[object] | None) -> None:
        if after is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(after), AFTER_PATIENCE)
        await self._destroy(inst)

    def _hand_over(self, inst: Instance) -> None:
        """Give a ready instance to the calls waiting, as many as it takes at once (its
        concurrency, its budget of invocations), or keep it ready. Taken here, not when
        each waiting call resumes, so that the next call counts what is already given."""
        self.busy -= 1
        given = 0
        while self._waiters and self._may_take(inst):
            fut = self._waiters.popleft()
            if fut.done():
                continue
            if not given:
                self.busy += 1
            self._take(inst, "cold")
            fut.set_result(inst)
            given += 1
        if given:
            return
        inst.last_used = time.monotonic()
        self.ready.append(inst)
        self._changed.set()

    def refill(self) -> None:
        if self._closed:
            return
        self.last_target = self.decide()
        want = max(self.last_target.size, len(self._waiters))
        while len(self.ready) + self.creating < want and self.total < self.spec.pool_max:
            self.creating += 1
            self._spawn(self._create())
        self._changed.set()

    async def _create(self) -> None:
        try:
            async with self._slots:
                clock = time.monotonic()
                inst = await self._make()
                self.makes.made(time.monotonic() - clock)
        except Exception as exc:
            self.creating -= 1
            self.cold_start_errors += 1
            log.warning("function %s: cannot make an instance: %s", self.spec.name, exc)
            if self._waiters:
                fut = self._waiters.popleft()
                if not fut.done():
                    fut.set_exception(InstanceError(str(exc)))
            self._changed.set()
            return
        self.creating -= 1
        if self._closed:
            await self._destroy(inst)
            return
        self.busy += 1
        self._hand_over(inst)

    async def shrink(self) -> int:
        """Destroy ready instances idle past ``idle_ttl`` beyond ``pool.min``; how many."""
        now = time.monotonic()
        removed = 0
        while len(self.ready) > self.spec.pool_min:
            oldest = min(self.ready, key=lambda i: i.last_used)
            if now - oldest.last_used < self.spec.idle_ttl:
                break
            self.ready.remove(oldest)
            await self._destroy(oldest)
            removed += 1
        if removed:
            self._changed.set()
        return removed

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Destroy every instance this pool holds; calls still waiting fail."""
        self._closed = True
        self._changed.set()
        for fut in self._waiters:
            if not fut.done():
                fut.set_exception(InstanceError(f"function {self.spec.name} is shutting down"))
        self._waiters.clear()
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        while self.ready:
            await self._destroy(self.ready.popleft())
