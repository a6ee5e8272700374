"""Healthchecks (Dockerfile ``HEALTHCHECK``, ``--health-*``), run by the node in the
Docker-API containers it has, as Docker runs them.

The check in force is the container's own, its unset fields taken from its image's,
else the image's; ``NONE`` turns it off. It first runs ``interval`` after the start
(``start_interval`` while in the start period), then every ``interval``, as an exec in
the container (``CMD``: the arguments, ``CMD-SHELL``: ``/bin/sh -c``), killed after
``timeout``. Exit 0 is healthy; anything else counts against it, ``retries`` in a
row make it unhealthy, except during ``start_period``, where only a success counts
(and ends the start period).
The state and its last five results (each output cut to 4 KiB) are in the container's
record, shown as ``State.Health``, and every change is a ``health_status: ...`` event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from runtime.engine import Runtime
from runtime.errors import Conflict, ContainerError, NotFound
from runtime.records import ContainerRecord, Health

log = logging.getLogger("scow.pool")

DEFAULT_INTERVAL = 30.0
DEFAULT_TIMEOUT = 30.0
DEFAULT_START_INTERVAL = 5.0
DEFAULT_RETRIES = 3
LOG_KEPT = 5
OUTPUT_KEPT = 4096


@dataclass(frozen=True)
class Check:
    argv: tuple[str, ...]
    interval: float
    timeout: float
    start_period: float
    start_interval: float
    retries: int


def check_of(record: ContainerRecord) -> Check | None:
    """The check in force for ``record``: its own over its image's (None: no check).

    >>> from runtime.spec import ImageConfig, RunOptions, Healthcheck
    >>> image = ImageConfig(healthcheck={"Test": ["CMD-SHELL", "true"], "Interval": 2 * 10**9})
    >>> r = ContainerRecord("c", "c", 0, "i", image, RunOptions(
    ...     healthcheck=Healthcheck(retries=5)), (), "logs")
    >>> check_of(r)
    Check(argv=('/bin/sh', '-c', 'true'), interval=2.0, timeout=30.0, start_period=0.0, \
start_interval=5.0, retries=5)
    """
    image: Mapping[str, Any] = record.image_config.healthcheck or {}
    own = record.options.healthcheck
    test = list(own.test) if own is not None and own.test else list(image.get("Test") or [])
    if not test or test[0] == "NONE":
        return None

    def pick(mine: float, key: str, default: float) -> float:
        if mine:
            return mine
        theirs = image.get(key) or 0
        return theirs / 1e9 if theirs else default

    argv = ("/bin/sh", "-c", test[1]) if test[0] == "CMD-SHELL" else tuple(test[1:])
    if not argv:
        return None
    retries = (own.retries if own is not None else 0) or int(image.get("Retries") or 0)
    return Check(
        argv=argv,
        interval=pick(own.interval if own else 0.0, "Interval", DEFAULT_INTERVAL),
        timeout=pick(own.timeout if own else 0.0, "Timeout", DEFAULT_TIMEOUT),
        start_period=pick(own.start_period if own else 0.0, "StartPeriod", 0.0),
        start_interval=pick(own.start_interval if own else 0.0, "StartInterval",
                            DEFAULT_START_INTERVAL),
        retries=retries or DEFAULT_RETRIES,
    )  # fmt: skip


def judged(health: Health, check: Check, code: int, in_start_period: bool) -> Health:
    """The health after one result (its log entry is the caller's).

    >>> c = Check(("true",), 1, 1, 0, 1, 2)
    >>> judged(Health(), c, 0, False).status, judged(Health("healthy", 1), c, 1, False).status
    ('healthy', 'unhealthy')
    >>> judged(Health("starting"), c, 1, True)
    Health(status='starting', failing_streak=0, log=())
    """
    if code == 0:
        return Health("healthy", 0, health.log)
    if in_start_period:
        return health
    streak = health.failing_streak + 1
    status = "unhealthy" if streak >= check.retries else health.status
    return Health(status, streak, health.log)


class HealthChecks:
    """Runs the checks of the node's containers (see the module's docstring);
    ``event`` is told of each change of health (``health_status: healthy``...)."""

    def __init__(self, runtime: Runtime, event: Callable[[str, ContainerRecord], None]) -> None:
        self.runtime, self.event = runtime, event
        self._checks: dict[str, asyncio.Task[None]] = {}

    def watch(self, record: ContainerRecord) -> None:
        """Check the container from now on (it was just started); a check already running
        for it starts over."""
        check = check_of(record)
        if check is None:
            return
        old = self._checks.pop(record.id, None)
        if old is not None:
            old.cancel()
        task = asyncio.create_task(self._run(record.id, check), name=f"health-{record.id[:12]}")
        self._checks[record.id] = task
        task.add_done_callback(lambda t: self._checks.get(record.id) is t
                               and self._checks.pop(record.id))  # fmt: skip

    async def _run(self, cid: str, check: Check) -> None:
        started = time.monotonic()
        health = Health("starting")
        passed_once = False  # a success ends the start period

        def in_start_period() -> bool:
            return not passed_once and time.monotonic() - started < check.start_period

        with contextlib.suppress(NotFound):
            self.runtime.note(cid, health=health)
            while True:
                await asyncio.sleep(check.start_interval if in_start_period() else check.interval)
                record = self.runtime.get(cid)
                if record.status != "running":
                    return
                begun = time.time()
                code, output = await self._probe(cid, check)
                in_start = in_start_period()
                passed_once = passed_once or code == 0
                entry = {"start": begun, "end": time.time(), "exit_code": code, "output": output}
                new = judged(health, check, code, in_start)
                new = Health(new.status, new.failing_streak, (*health.log, entry)[-LOG_KEPT:])
                record = self.runtime.note(cid, health=new)
                if new.status != health.status:
                    self.event(f"health_status: {new.status}", record)
                health = new

    async def _probe(self, cid: str, check: Check) -> tuple[int, str]:
        """Run the check once: its exit code and the start of its output."""
        try:
            async with self.runtime.exec_process(cid, check.argv) as proc:
                try:
                    out, err = await asyncio.wait_for(proc.communicate(), check.timeout)
                except TimeoutError:
                    return -1, f"Health check exceeded timeout ({check.timeout:g}s)"
                code = proc.returncode if proc.returncode is not None else -1
        except (Conflict, ContainerError) as exc:
            return -1, str(exc)[:OUTPUT_KEPT]
        text = (out + err).decode(errors="replace")
        return code, text[:OUTPUT_KEPT]

    def forget(self, cid: str) -> None:
        task = self._checks.pop(cid, None)
        if task is not None:
            task.cancel()

    async def close(self) -> None:
        tasks = list(self._checks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
