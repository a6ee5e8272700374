"""A function's worker on a node: it pulls the function's calls and runs them.

It reads the function's stream in the consumer group ``nodes``, only as many
entries as its pool can serve (pull-based: a node with no room leaves work for
the others), runs each in an instance, and has the replier answer the gateway
that asked, record the call and XACK.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from images.distribution import Remote
from images.errors import ImageError, InvalidReference
from images.store import Image, ImageStore
from pool.contract import keys
from pool.contract.messages import CallRecord, CallRequest, CallResult
from pool.contract.outage import Outage, cancellation_requested
from pool.contract.specs import FunctionSpec
from pool.httpclient import Connections
from pool.instances import Instance, InstanceError, invoke, make_instance
from pool.metrics import NodeMetrics
from pool.registries import Registries
from pool.replies import Replier
from pool.warm import WarmPool
from runtime.engine import Runtime
from runtime.spec import ImageConfig
from runtime.tarfs import UnsafeArchive

log = logging.getLogger("scow.pool")


def _pinned_remote(image: str) -> Remote | None:
    """The registry image a spec pins (``HOST/repo@sha256:...``), which a node pulls when
    it lacks it; None for a local image."""
    if "@" not in image:
        return None
    try:
        return Remote.parse(image)
    except InvalidReference:
        return None

REPLY_PATIENCE = 60.0  # how long a node holds a result that Redis cannot take
STOPPING_PATIENCE = 5.0  # the same for a node that is stopping: its stop must not hang
READ_BATCH = 16  # calls taken off the queue in one read, at most


@dataclass(frozen=True)
class WorkerParts:
    """What every function's worker on a node uses, made once by the node."""

    node_id: str
    redis: aioredis.Redis
    reads: aioredis.Redis  # the same Redis, for the blocking reads of calls only
    runtime: Runtime
    images: ImageStore
    replier: Replier
    metrics: NodeMetrics
    http: Connections  # kept connections to the instances
    response_limit: int  # a function's reply, in bytes
    slots: asyncio.Semaphore  # containers being made at once on this node
    registries: Registries  # pulls of functions' images pinned in a registry
    # Whether another live node can serve a function now (its heartbeat says so): a node
    # that cannot (no image, a pull under way) leaves the calls to it.
    others_serve: Callable[[str], bool]
    # Entries this process is running: pending entries under this node's name that are
    # not here were left by an earlier process with the same node id.
    handling: set[bytes]
    stopping: asyncio.Event
    draining: collections.Counter[str]  # containers being removed, by function


class FunctionWorker:
    def __init__(
        self, spec: FunctionSpec, secrets: dict[str, bytes | None], parts: WorkerParts
    ) -> None:
        self.parts = parts
        self.spec = spec
        # Why this function cannot run here (its calls answer 502 with it): (error, message).
        self.unusable: tuple[str, str] | None = None
        self.layers: list[Path] = []
        self.image_config = ImageConfig()
        self.pulling: asyncio.Task[None] | None = None  # of an image pinned in a registry
        try:
            self._use(parts.images.get(spec.image))
        except ImageError as exc:
            self.unusable = ("no_image", str(exc))
            self.pullable = _pinned_remote(spec.image)
        else:
            self.pullable = None
        missing = [name for name, value in secrets.items() if value is None]
        if missing and self.unusable is None:
            self.unusable = ("no_secret", f"secret {', '.join(missing)} does not exist")
        self.given = secrets  # as read from Redis: a change replaces this worker
        self.secrets = {k: v for k, v in secrets.items() if v is not None}
        self.pool = WarmPool(spec, self._make, self._destroy, parts.slots)
        self.inflight: set[asyncio.Task[None]] = set()
        self._reader: asyncio.Task[None] | None = None

    async def _destroy(self, inst: Instance) -> None:
        inst.close_pipes()
        self.parts.http.forget(inst.id)
        self.parts.draining[inst.spec.name] += 1
        try:
            await self.parts.runtime.remove(inst.id, force=True)
        finally:
            self.parts.draining[inst.spec.name] -= 1

    async def _make(self) -> Instance:
        return await make_instance(
            self.parts.runtime, self.spec, self.image_config, self.layers, self.spec.image,
            self.secrets,
        )

    def resize(self, spec: FunctionSpec) -> None:
        self.spec = spec
        self.pool.spec = spec
        if self.unusable is None:
            self.pool.refill()

    def _use(self, image: Image) -> None:
        self.image_config = image.run_config
        self.layers = self.parts.images.layer_dirs(image)

    @property
    def state(self) -> str:
        """``ready``, ``pulling`` (its image, from a registry), or why it cannot run here."""
        if self.pulling is not None and not self.pulling.done():
            return "pulling"
        return "ready" if self.unusable is None else f"{self.unusable[0]}: {self.unusable[1]}"

    async def _pull(self, remote: Remote) -> None:
        """The image the spec pins, from its registry; then the pool is made."""
        try:
            image = await self.parts.registries.pull(self.parts.images, remote, None,
                                                     lambda progress: None)  # fmt: skip
        except (ImageError, OSError, UnsafeArchive) as exc:
            log.warning("function %s: pull of %s failed: %s", self.spec.name, remote, exc)
            self.unusable = ("no_image", f"pull of {remote} failed: {exc}")
            return
        self._use(image)
        if self.unusable is not None and self.unusable[0] == "no_image":
            self.unusable = None
        if self.unusable is None:
            self.pool.refill()

    def start(self) -> None:
        if self.unusable is None:
            self.pool.refill()
        elif self.pullable is not None and self.unusable[0] == "no_image":
            self.pulling = asyncio.create_task(self._pull(self.pullable),
                                               name=f"pull-{self.spec.name}")  # fmt: skip
        self._reader = asyncio.create_task(self._consume(), name=f"consume-{self.spec.name}")

    async def _consume(self) -> None:
        outage = Outage(log, f"function {self.spec.name}: reading calls")
        while not cancellation_requested():
            if self.state != "ready" and (self.state == "pulling"
                                          or self.parts.others_serve(self.spec.name)):
                await asyncio.sleep(0.2)  # others serve it meanwhile (or the pull ends)
                continue
            await self.pool.wait_until_can_serve()
            try:
                batches = await self._read_calls()
            except (aioredis.RedisError, OSError) as exc:
                # Redis away, or a reply cut short as it went (a protocol error, not a
                # ConnectionError): this loop must outlive it, or the function is served
                # by no one while every other loop of the node has recovered.
                outage.failed(exc)
                await asyncio.sleep(keys.RETRY_EVERY)
                continue
            except Exception:  # a bug: said loudly, and the function still served
                outage.bug()
                await asyncio.sleep(1.0)
                continue
            outage.succeeded()
            for _, entries in batches:
                for entry_id, fields in entries:
                    self.run(entry_id, fields)

    async def _read_calls(self) -> list[Any]:
        """The next calls for this node (a second's wait at most), as XREADGROUP gives
        them: as many as the pool can start now (up to READ_BATCH), so that under load
        one round trip brings several calls, and a node never holds calls it cannot
        start while another node could."""
        key = keys.calls_key(self.spec.name)
        redis = self.parts.redis
        count = max(1, min(READ_BATCH, self.pool.free_slots()))
        try:
            batches = await self.parts.reads.xreadgroup(
                keys.GROUP, self.parts.node_id, {key: ">"}, count=count, block=1000
            )  # fmt: skip
        except aioredis.ResponseError as exc:
            # UNBLOCKED: the function was deleted (its stream with it) while we read;
            # NOGROUP: deleted, and maybe deployed again. Make the group again only
            # for a function that exists: a stream for a deleted one would linger.
            if "NOGROUP" not in str(exc) and "UNBLOCKED" not in str(exc):
                raise
            if await redis.hexists(keys.FUNCTIONS, self.spec.name):
                with contextlib.suppress(aioredis.ResponseError):
                    await redis.xgroup_create(key, keys.GROUP, id="0", mkstream=True)
            else:
                await asyncio.sleep(0.2)  # the sync loop stops this worker
            return []
        return list(batches or [])

    def run(self, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        self.parts.handling.add(entry_id)
        task = asyncio.create_task(self._handle(entry_id, fields))
        self.inflight.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self.inflight.discard(t)
            self.parts.handling.discard(entry_id)

        task.add_done_callback(done)

    async def _handle(self, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        req = CallRequest.from_fields(fields)
        picked = time.time()
        queue_seconds = max(0.0, picked - req.enqueued)
        logs: list[tuple[str, str]] = []
        # Set once the reply is sent: a throwaway container is torn down after that, so
        # that the teardown's work on the event loop never holds a reply up.
        replied = asyncio.get_running_loop().create_future()
        try:
            if picked >= req.deadline:
                result = CallResult.failure(
                    req.id, 504, "timeout", "the deadline passed before a node took the call",
                    part="queue",
                )  # fmt: skip
            elif self.unusable is not None:
                result = CallResult.failure(req.id, 502, *self.unusable)
            else:
                # attempts counts the runs a call had: more than one when a node died
                # mid-run.
                try:
                    async with self.parts.redis.pipeline(transaction=False) as pipe:
                        key = keys.record_key(req.id)
                        pipe.hset(key, mapping=CallRecord.running(self.parts.node_id))
                        pipe.hincrby(key, "attempts", 1)
                        await pipe.execute()
                except (aioredis.RedisError, OSError) as exc:
                    # Not run, and still pending: the take-over runs it when Redis is back.
                    log.warning("call %s: not started, Redis is away: %r", req.id, exc)
                    return
                result = await self._run(req, logs, replied)
            result = replace(
                result, node=self.parts.node_id, queue_seconds=queue_seconds,
                run_seconds=time.time() - picked,
            )  # fmt: skip
            ack = (keys.calls_key(self.spec.name), entry_id)
            self.parts.metrics.answered(self.spec.name, result)
            await self._reply(req, result, ack, logs)
        finally:
            replied.set_result(None)

    async def _reply(
        self, req: CallRequest, result: CallResult, ack: tuple[str, bytes],
        logs: list[tuple[str, str]],
    ) -> None:  # fmt: skip
        """Send a result, again and again while Redis is away, for ``REPLY_PATIENCE``.

        The call ran: were its result dropped, the take-over would run it a second
        time, for an answer that was only late. A stopping node waits less.
        """
        give_up = time.monotonic() + REPLY_PATIENCE
        while True:
            try:
                await self.parts.replier.reply(req, result, ack=ack, logs=logs)
                return
            except (aioredis.RedisError, OSError) as exc:
                if self.parts.stopping.is_set():
                    give_up = min(give_up, time.monotonic() + STOPPING_PATIENCE)
                if time.monotonic() >= give_up or cancellation_requested():
                    log.warning("call %s: result dropped, Redis is away (%r); it runs again "
                                "when taken over", req.id, exc)  # fmt: skip
                    return
                await asyncio.sleep(keys.RETRY_EVERY)

    async def _run(
        self, req: CallRequest, logs: list[tuple[str, str]], replied: asyncio.Future[None]
    ) -> CallResult:
        """The call in an instance of the pool; a throwaway one is destroyed once
        ``replied`` is done."""
        clock = time.perf_counter()
        try:
            inst = await asyncio.wait_for(
                self.pool.acquire(after=replied), max(req.deadline - time.time(), 0)
            )
        except TimeoutError:
            return CallResult.failure(
                req.id, 504, "timeout", "no instance was ready before the deadline", part="queue"
            )
        except InstanceError as exc:
            return CallResult.failure(
                req.id, 502, "cold_start", f"the function could not start: {exc}"
            )
        waited = time.perf_counter() - clock
        self.parts.metrics.started(inst)
        runtime = self.parts.runtime
        reusable = False
        try:
            used, throttled = runtime.cgroups.cpu_usage(inst.id)
            result = await invoke(runtime, self.parts.http, inst, req, self.parts.response_limit)
            # The cgroup stays until the instance goes, so it can still be read.
            used_after, throttled_after = runtime.cgroups.cpu_usage(inst.id)
            logs.extend(inst.call_logs)
            reusable = result.error == "" and self.spec.protocol == "http"
            return replace(
                result, cold=inst.source == "cold", container=inst.id,
                cpu_seconds=(used_after - used) / 1e9,
                throttled_seconds=(throttled_after - throttled) / 1e9,
                start_seconds=inst.phases.get("total", 0.0), wait_seconds=waited,
            )  # fmt: skip
        finally:
            self.pool.release(inst, reusable=reusable, after=replied)

    async def stop_reading(self) -> None:
        """Take no more calls; the ones taken go on. Idempotent."""
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            try:
                await reader
            except asyncio.CancelledError:
                pass
            except Exception:  # the pool must still be destroyed
                log.exception("function %s: its reader failed", self.spec.name)

    async def stop(self) -> None:
        """Stop reading, let calls in flight finish, destroy the pool."""
        if self.pulling is not None:
            self.pulling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.pulling
        await self.stop_reading()
        if self.inflight:
            await asyncio.gather(*self.inflight, return_exceptions=True)
        await self.pool.close()
