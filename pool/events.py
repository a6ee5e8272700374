"""Events, as Docker's /events reports them: containers, images and functions.

Producers call ``EventSink.emit`` without waiting; one task writes what has
piled up in a single pipeline, so a busy node costs Redis one round trip per
batch rather than one per event.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import redis.asyncio as aioredis

from pool.contract import client
from pool.contract.messages import event
from runtime.records import ContainerRecord

log = logging.getLogger("scow.pool")


def container_event(action: str, record: ContainerRecord) -> dict[str, Any]:
    attributes = {"image": record.image, "name": record.name, **record.labels}
    if action == "die" and record.exit_code is not None:
        attributes["exitCode"] = str(record.exit_code)
    return event("container", action, record.id, attributes)


class EventSink:
    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._pending: list[dict[str, Any]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._dropped = 0  # events lost while Redis is away, told once it is back

    def start(self) -> None:
        self._closing = False
        self._task = asyncio.create_task(self._run(), name="events")

    def emit(self, e: dict[str, Any]) -> None:
        self._pending.append(e)
        self._wake.set()

    def container(self, action: str, record: ContainerRecord) -> None:
        self.emit(container_event(action, record))

    async def _run(self) -> None:
        while not self._closing:
            await self._wake.wait()
            self._wake.clear()
            await self._flush()

    async def _flush(self) -> None:
        batch, self._pending = self._pending, []
        if not batch:
            return
        try:
            await client.publish_events(self.redis, batch)
        except (aioredis.RedisError, OSError) as exc:  # events are best effort: calls go on
            if not self._dropped:
                log.warning("dropping events while Redis is away: %s", exc)
            self._dropped += len(batch)
            return
        except Exception:  # a bug: said, and the writer goes on (it lives as long as the node)
            log.exception("dropped %d events", len(batch))
            return
        if self._dropped:
            log.warning("events written again; %d were dropped", self._dropped)
            self._dropped = 0

    async def close(self) -> None:
        """Write what is pending and stop. Not by cancelling: redis-py can absorb a
        cancellation mid-command, and the loop would then wait for events forever."""
        if self._task is not None:
            self._closing = True
            self._wake.set()
            await self._task
            self._task = None
        await self._flush()
