"""What must outlive one node command: the containers that remove themselves, restart
or are checked.

``Supervisor`` removes ``--rm`` containers once they exit (after attached readers
have drained their output), has their restart policies applied (restarts.py) and
their healthchecks run (health.py), keeps the map of which node has which Docker-API
container in Redis, wakes whoever waits on a container's next change, and holds
detached execs.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import time
from collections.abc import Coroutine
from typing import Any

import redis.asyncio as aioredis

from pool.contract import keys
from pool.contract.messages import AUTO_REMOVE
from pool.health import HealthChecks
from pool.restarts import Restarts
from runtime.engine import Runtime
from runtime.errors import NotFound
from runtime.records import ContainerRecord

DRAIN = 5.0  # how long an exited --rm container waits for its attached readers


class Supervisor:
    def __init__(
        self, runtime: Runtime, redis: aioredis.Redis, node_id: str, restarts: Restarts,
        health: HealthChecks,
    ) -> None:  # fmt: skip
        self.runtime, self.redis, self.node_id = runtime, redis, node_id
        self.restarts, self.health = restarts, health
        self.readers: collections.Counter[str] = collections.Counter()  # attach streams
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._detached: set[asyncio.Task[None]] = set()  # exec -d
        self._changes: dict[str, asyncio.Event] = {}  # set at a container's next event
        # Clients attached to a stopped container, told when it is created again and
        # waited for (until connected) before it starts: none of its output is missed.
        self._attachers: dict[str, list[tuple[asyncio.Event, asyncio.Future[None]]]] = {}

    def next_change(self, cid: str) -> asyncio.Event:
        """An event set at the container's next start, exit or removal, or when its last
        attached reader leaves. Take it before looking at the container, so that a
        change in between is not missed."""
        return self._changes.setdefault(cid, asyncio.Event())

    def changed(self, action: str, record: ContainerRecord) -> None:
        """The runtime's event hook: wake whoever waits on this container."""
        change = self._changes.pop(record.id, None)
        if change is not None:
            change.set()

    async def track(self, record: ContainerRecord) -> None:
        value = json.dumps({"node": self.node_id, "name": record.name})
        await self.redis.hset(keys.CONTAINERS, record.id, value)

    async def untrack(self, cid: str) -> None:
        await self.redis.hdel(keys.CONTAINERS, cid)

    def attach_when_created(self, cid: str) -> tuple[asyncio.Event, asyncio.Future[None]]:
        """For a client attaching to a stopped container: an event set once the container
        is created again, and a future it sets once connected (the start waits for it)."""
        pair = (asyncio.Event(), asyncio.get_running_loop().create_future())
        self._attachers.setdefault(cid, []).append(pair)
        return pair

    async def created(self, record: ContainerRecord) -> None:
        """A stopped container was created again: its attachers connect before it starts
        (a second at most)."""
        waiting = self._attachers.pop(record.id, [])
        for created, _ in waiting:
            created.set()
        futures = [connected for _, connected in waiting if not connected.done()]
        if futures:
            await asyncio.wait(futures, timeout=1.0)

    def started(self, record: ContainerRecord) -> None:
        """A client started the container: its restart policy and healthcheck apply from
        now on, and a ``--rm`` one is removed when it exits."""
        self.restarts.watch(record)
        self.health.watch(record)
        self.watch(record)

    def removing(self, cid: str) -> None:
        """A client removes the container: no restart or check may race its removal."""
        self.restarts.forget(cid)
        self.health.forget(cid)

    def watch(self, record: ContainerRecord) -> None:
        """Remove a ``--rm`` container when it exits."""
        if record.labels.get(AUTO_REMOVE) == "1" and record.id not in self._watchers:
            task = asyncio.create_task(self._remove_on_exit(record.id), name=f"rm-{record.id[:12]}")
            self._watchers[record.id] = task
            task.add_done_callback(lambda _: self._watchers.pop(record.id, None))

    async def _remove_on_exit(self, cid: str) -> None:
        runtime = self.runtime
        with contextlib.suppress(NotFound):
            await asyncio.shield(runtime.wait(cid))
            deadline = time.monotonic() + DRAIN
            while True:
                change = self.next_change(cid)
                if not self.readers[cid] or time.monotonic() >= deadline:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(change.wait(), deadline - time.monotonic())
            await runtime.remove(cid, force=True, volumes=True)
        await self.untrack(cid)

    async def reconcile(self) -> None:
        """After a restart: claim this node's containers under its new id, watch running
        ``--rm`` containers again, and remove the exited ones; restart policies and
        healthchecks go on."""
        await self.restarts.reconcile()
        for record in self.runtime.containers():
            if record.status == "running" and record.options.restart == "no":
                self.health.watch(record)
            if record.labels.get("scow.role") == "function":
                continue
            await self.track(record)
            if record.labels.get(AUTO_REMOVE) != "1":
                continue
            if record.status == "exited":
                await self.runtime.remove(record.id, force=True, volumes=True)
                await self.untrack(record.id)
            elif record.status != "created":
                self.watch(record)

    def detached(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._detached.add(task)
        task.add_done_callback(self._detached.discard)

    async def close(self) -> None:
        """Stop watching (the containers themselves keep running, as environments do)."""
        await self.restarts.close()
        await self.health.close()
        tasks = [*self._watchers.values(), *self._detached]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
