"""Restart policies (``--restart``), run by the node for the Docker-API containers it has.

Docker's rules: ``always`` restarts a container whenever it exits, unless a client
stopped it (then only when its node starts again); ``unless-stopped`` the same, but a
container stopped by a client stays down even then; ``on-failure[:N]`` when it exits
with a code other than 0, at most N times (no limit without N). Each restart waits
first, 100 ms and then twice as long each time, at most a minute; a container that
ran ten seconds or more starts that back-off over. ``RestartCount`` counts the
restarts since a client last started the container. The policy and the count are
in the container's record, so a node that restarts keeps applying them
(``reconcile``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from runtime.engine import Runtime
from runtime.errors import Conflict, ContainerError, NotFound
from runtime.records import ContainerRecord

log = logging.getLogger("scow.pool")

FIRST_DELAY = 0.1
MAX_DELAY = 60.0
RAN_LONG_ENOUGH = 10.0  # seconds of running after which the back-off starts over


def should_restart(
    policy: str, retries: int, exit_code: int, restart_count: int, stopped_by_hand: bool,
    *, node_started: bool = False,
) -> bool:  # fmt: skip
    """Whether a container that exited with ``exit_code`` is started again.

    >>> should_restart("always", 0, 0, 5, False), should_restart("always", 0, 0, 0, True)
    (True, False)
    >>> should_restart("on-failure", 2, 1, 2, False), should_restart("on-failure", 2, 1, 1, False)
    (False, True)
    """
    if policy == "always":
        return not stopped_by_hand or node_started
    if policy == "unless-stopped":
        return not stopped_by_hand
    if policy == "on-failure":
        return exit_code != 0 and not stopped_by_hand and (not retries or restart_count < retries)
    return False


def backoff(delay: float, ran_for: float) -> float:
    """The wait before the next restart, given the last one's and how long it ran.

    >>> backoff(0.0, 1.0), backoff(0.4, 1.0), backoff(40.0, 1.0), backoff(40.0, 12.0)
    (0.1, 0.8, 60.0, 0.1)
    """
    if not delay or ran_for >= RAN_LONG_ENOUGH:
        return FIRST_DELAY
    return min(delay * 2, MAX_DELAY)


class Restarts:
    """Watches the node's containers that have a restart policy (see the module's
    docstring); ``on_start`` is told of each container it starts (healthchecks begin)."""

    def __init__(self, runtime: Runtime, on_start: Callable[[ContainerRecord], None]) -> None:
        self.runtime, self.on_start = runtime, on_start
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._delays: dict[str, float] = {}

    def watch(self, record: ContainerRecord) -> None:
        """Keep applying its policy from now on (a container a client just started)."""
        if record.options.restart == "no" or record.id in self._watchers:
            return
        task = asyncio.create_task(self._keep(record.id), name=f"restart-{record.id[:12]}")
        self._watchers[record.id] = task
        task.add_done_callback(lambda _: self._watchers.pop(record.id, None))

    def forget(self, cid: str) -> None:
        """A container about to be removed: its policy no longer applies."""
        task = self._watchers.pop(cid, None)
        if task is not None:
            task.cancel()

    async def _keep(self, cid: str) -> None:
        with contextlib.suppress(NotFound):
            while True:
                status = await asyncio.shield(self.runtime.wait(cid))
                record = self.runtime.get(cid)
                o = record.options
                if record.status != "exited" or not should_restart(
                    o.restart, o.restart_retries, status.code, record.restart_count,
                    record.stopped_by_hand,
                ):  # fmt: skip
                    return
                ran_for = max(record.finished_at - record.started_at, 0.0)
                delay = self._delays[cid] = backoff(self._delays.get(cid, 0.0), ran_for)
                self.runtime.note(cid, restarting=True)
                await asyncio.sleep(delay)
                if not await self._restart(cid):
                    return

    async def _restart(self, cid: str) -> bool:
        """Start it again, unless a client acted meanwhile (stopped, started or removed it)."""
        record = self.runtime.get(cid)
        if record.status != "exited" or record.stopped_by_hand or not record.restarting:
            if record.restarting:
                self.runtime.note(cid, restarting=False)
            return record.status == "running"  # started by a client: keep watching
        record = self.runtime.note(cid, restarting=False, restart_count=record.restart_count + 1)
        try:
            record = await self.runtime.revive(cid)
        except (Conflict, ContainerError) as exc:
            log.warning("restart policy: container %s did not start again: %s", record.name, exc)
            return False
        self.on_start(record)
        return True

    async def reconcile(self) -> None:
        """When the node starts: containers its policy keeps up that are down start again,
        and the running ones are watched again."""
        for record in self.runtime.containers():
            o = record.options
            if o.restart == "no" or record.labels.get("scow.role") == "function":
                continue
            if record.status in ("running", "paused"):
                self.watch(record)
                self.on_start(record)
            elif record.status == "exited" and should_restart(
                o.restart, o.restart_retries, record.exit_code or 0, record.restart_count,
                record.stopped_by_hand, node_started=True,
            ):  # fmt: skip
                with contextlib.suppress(Conflict, ContainerError, NotFound):
                    record = self.runtime.note(record.id, stopped_by_hand=False, restarting=False)
                    record = await self.runtime.revive(record.id)
                    self.watch(record)
                    self.on_start(record)

    async def close(self) -> None:
        tasks = list(self._watchers.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
