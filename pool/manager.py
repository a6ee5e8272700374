"""The pool manager: one per node. It keeps warm pools and runs the calls it pulls.

Per function, a worker (``pool.worker``) reads the function's stream and runs
the calls; the manager starts and stops workers as functions come and go,
replies, runs node commands, reaps environments and serves metrics.

Every node heartbeats into ``nodes``. Each node also looks at the entries still
pending in every function's stream: those held by a node whose heartbeat has
gone stale are claimed and run here, so calls outlive a crashed node; an entry
delivered too often (it keeps killing nodes) goes to ``dead`` with an error.
A call whose deadline has passed is answered 504 and never run late.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace

import httpx
import redis.asyncio as aioredis

from images.store import ImageStore
from pool.command import Command, CommandError
from pool.commands import run_command
from pool.containers import Supervisor
from pool.contract import keys, messages, outbound
from pool.contract.messages import CallRequest, CallResult
from pool.contract.outage import Outage, cancellation_requested
from pool.contract.specs import FunctionSpec
from pool.environments import DEFAULT_MAX_ENVIRONMENTS, reap_expired
from pool.events import EventSink
from pool.instances import DEFAULT_RESPONSE_LIMIT, Instance
from pool.metrics import NodeMetrics
from pool.worker import FunctionWorker
from runtime.engine import Runtime
from runtime.records import ContainerRecord

log = logging.getLogger("scow.pool")


class PoolManager:
    def __init__(
        self,
        redis: aioredis.Redis,
        runtime: Runtime,
        images: ImageStore,
        *,
        node_id: str | None = None,
        create_slots: int | None = None,
        sync_every: float = 0.5,
        metrics_port: int | None = None,
        response_limit: int = DEFAULT_RESPONSE_LIMIT,
        max_environments: int = DEFAULT_MAX_ENVIRONMENTS,
        callback_allow: str | None = None,
    ) -> None:
        self.redis = redis
        self.runtime = runtime
        self.images = images
        self.node_id = node_id or f"{socket.gethostname()}-{secrets.token_hex(4)}"
        self.create_slots = asyncio.Semaphore(create_slots or max(2, (os.cpu_count() or 1) * 2))
        self.sync_every = sync_every
        self.response_limit = response_limit  # a function's reply, in bytes
        self.max_environments = max_environments  # on this node at once
        # Where X-Callback-Url may point beyond the public internet (SCOW_CALLBACK_ALLOW).
        self.callback_allow = outbound.Allow.parse(
            os.environ.get("SCOW_CALLBACK_ALLOW", "") if callback_allow is None else callback_allow
        )
        self.workers: dict[str, FunctionWorker] = {}
        # Entries this process is running: pending entries under our name that are not
        # here were left by an earlier process with the same node id.
        self.handling: set[bytes] = set()
        # Since when this node has seen Redis without a break (None: it has not, or it
        # was just away): until every node had time to heartbeat since, none is dead.
        self._watching_since: float | None = None
        self.http = httpx.AsyncClient(limits=httpx.Limits(max_connections=1024), timeout=None)
        self._tasks: list[asyncio.Task[None]] = []
        self._commands: set[asyncio.Task[None]] = set()
        self._callbacks: set[asyncio.Task[None]] = set()
        self._retiring: set[asyncio.Future[None]] = set()  # workers being stopped by sync
        self.metrics = NodeMetrics()
        self.metrics_port = metrics_port  # None: no /metrics listener (tests read the registry)
        self.events = EventSink(redis)
        self.draining: collections.Counter[str] = collections.Counter()
        self.containers = Supervisor(self)
        self.stopping = asyncio.Event()  # commands that follow or wait end when it is set

    async def destroy_instance(self, inst: Instance) -> None:
        inst.close_pipes()
        self.draining[inst.spec.name] += 1
        try:
            await self.runtime.remove(inst.id, force=True)
        finally:
            self.draining[inst.spec.name] -= 1

    def _container_event(self, action: str, record: ContainerRecord) -> None:
        self.events.container(action, record)
        self.containers.changed(action, record)

    async def start(self) -> None:
        if self.metrics_port is not None:
            self.metrics_port = await asyncio.to_thread(self.metrics.serve, self.metrics_port)
        self.events.start()
        self.runtime.on_event = self._container_event
        await self.runtime.open()
        await self.runtime.reap()
        # Function containers of this node's previous life: their pipes and pools are gone.
        for record in self.runtime.containers():
            if record.labels.get("scow.role") == "function":
                await self.runtime.destroy(record.id)
        await self.containers.reconcile()
        await self._heartbeat_once()
        for key in (keys.COMMANDS, keys.node_commands_key(self.node_id)):
            with contextlib.suppress(aioredis.ResponseError):  # BUSYGROUP: it exists
                await self.redis.xgroup_create(key, keys.GROUP, id="0", mkstream=True)
        await self.sync_functions()
        loops = [(self._heartbeat_once, keys.HEARTBEAT_EVERY), (self.sync_functions,
                 self.sync_every), (self.take_over_once, 1.0), (self._shrink, 1.0),
                 (self._reap_environments, 1.0)]  # fmt: skip
        for step, every in loops:
            name = step.__name__
            self._tasks.append(asyncio.create_task(_forever(step, every), name=name))
        self._tasks.append(asyncio.create_task(_forever(self._read_commands, 0), name="commands"))

    async def stop(self) -> None:
        """Claim no more work, finish what is in flight, remove every function container."""
        self.stopping.set()
        # First of all: no call is taken from here on; the ones taken are finished below.
        await asyncio.gather(*(w.stop_reading() for w in self.workers.values()))
        for task in self._tasks:
            task.cancel()
        # Bounded all the same: a shutdown must never hang on one stuck loop.
        _, stuck = await asyncio.wait(self._tasks, timeout=5)
        for task in stuck:
            log.warning("loop %s did not stop within 5s of being cancelled", task.get_name())
        if self._commands:  # commands already taken are finished and answered
            await asyncio.gather(*self._commands, return_exceptions=True)
        await self.containers.close()
        await asyncio.gather(*(w.stop() for w in self.workers.values()), *self._retiring)
        self.workers.clear()
        if self._callbacks:
            await asyncio.gather(*self._callbacks, return_exceptions=True)
        await self.http.aclose()
        await self.events.close()
        self.metrics.close()
        # Kept while Docker containers (which outlive their node) are in it.
        self.runtime.cgroups.remove_parent_if_empty()
        with contextlib.suppress(aioredis.RedisError):
            await self.redis.hdel(keys.NODES, self.node_id)

    async def run(self, stop: asyncio.Event) -> None:
        await self.start()
        try:
            await stop.wait()
        finally:
            await self.stop()

    # -- loops ----------------------------------------------------------------------

    async def _heartbeat_once(self) -> None:
        pools = {
            name: {"ready": len(w.pool.ready), "busy": w.pool.busy, "creating": w.pool.creating,
                   "draining": self.draining[name]}
            for name, w in self.workers.items()
        }  # fmt: skip
        self.metrics.pools(
            (name, {"warm": p["ready"], "busy": p["busy"], "creating": p["creating"],
                    "draining": p["draining"]}) for name, p in pools.items()
        )  # fmt: skip
        info = {
            "heartbeat": time.time(), "pid": os.getpid(), "host": socket.gethostname(),
            "functions": pools, "latency": self.metrics.percentiles(),
            "metrics": f"127.0.0.1:{self.metrics_port}" if self.metrics_port else "",
        }  # fmt: skip
        clock = time.perf_counter()
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(keys.NODES, self.node_id, json.dumps(info))
            for name in pools:
                pipe.xlen(keys.calls_key(name))
            _, *lengths = await pipe.execute()
        self.metrics.redis_rtt.set(time.perf_counter() - clock)
        for name, length in zip(pools, lengths, strict=True):
            self.metrics.queue.labels(name).set(length)

    async def sync_functions(self) -> None:
        """Start, replace and stop workers to match the deployed functions (and the values
        of the secrets they are given: a changed secret replaces the function's pool)."""
        raw = await self.redis.hgetall(keys.FUNCTIONS)
        specs = {s.name: s for s in (FunctionSpec.from_json(v) for v in raw.values())}
        names = sorted({n for s in specs.values() for n in s.secrets})
        values = await self.redis.hmget(keys.SECRETS, names) if names else []
        known = dict(zip(names, values, strict=True))
        given = {name: {n: known[n] for n in s.secrets} for name, s in specs.items()}
        for name in list(self.workers):
            worker = self.workers[name]
            new = specs.get(name)
            changed = new is None or new != worker.spec or given[name] != worker.given
            if new is not None and changed and _only_sizes_differ(worker.spec, new) and (
                given[name] == worker.given
            ):
                worker.resize(new)  # scaling keeps the warm instances
            elif changed:
                # Shielded and tracked: a node stopping meanwhile cancels this loop, and
                # the worker, no longer in self.workers, would leave its containers.
                retiring = asyncio.ensure_future(self.workers.pop(name).stop())
                self._retiring.add(retiring)
                retiring.add_done_callback(self._retiring.discard)
                await asyncio.shield(retiring)
                if new is None:
                    self.metrics.forget(name)
        for name, spec in specs.items():
            if name not in self.workers:
                worker = FunctionWorker(self, spec, given[name])
                self.workers[name] = worker
                worker.start()

    async def _shrink(self) -> None:
        for worker in list(self.workers.values()):
            await worker.pool.shrink()

    async def _read_commands(self) -> None:
        """Take node commands (shared and our own) and run each in its own task."""
        streams = {keys.COMMANDS: ">", keys.node_commands_key(self.node_id): ">"}
        batches = await self.redis.xreadgroup(
            keys.GROUP, self.node_id, streams, count=16, block=1000
        )
        for key, entries in batches or []:
            for entry_id, fields in entries:
                task = asyncio.create_task(self._command(key, entry_id, fields))
                self._commands.add(task)
                task.add_done_callback(self._commands.discard)

    async def _command(self, key: bytes, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        req = messages.CommandRequest.from_fields(fields)
        if time.time() > req.deadline:
            result = CallResult.failure(req.id, 0, "timeout", f"{req.name}: the deadline passed")
        else:
            lines: asyncio.Queue[str | None] = asyncio.Queue()
            loop = asyncio.get_running_loop()
            pump = asyncio.create_task(self._pump_progress(req.id, lines))
            streamed = False  # whether anything went to the progress stream

            def progress(line: str) -> None:
                nonlocal streamed
                streamed = True
                loop.call_soon_threadsafe(lines.put_nowait, line)

            async def send(chunk: bytes) -> None:
                nonlocal streamed
                streamed = True
                await self._send_output(req.id, chunk, req.deadline)

            async def cancelled() -> bool:
                if self.stopping.is_set():
                    return True
                return bool(await self.redis.exists(keys.cancel_key(req.id)))

            cmd = Command(req.args, req.blob, progress, send, cancelled)
            try:
                value = await run_command(self, req.name, cmd)
                body = json.dumps(value).encode()
                result = CallResult(req.id, 200, (("content-type", "application/json"),), body)
            except CommandError as exc:
                result = CallResult.failure(req.id, 0, exc.error, exc.message)
            except Exception as exc:  # a bug: answer it rather than leave the caller waiting
                log.exception("node command %s failed", req.name)
                result = CallResult.failure(req.id, 0, "internal", f"{req.name}: {exc!r}")
            finally:
                lines.put_nowait(None)
                await pump
            if streamed:  # its reader stops at this, rather than waiting for more
                with contextlib.suppress(aioredis.RedisError):
                    await self._progress_entry(req.id, {"end": b"1"})
        await self.redis.xadd(req.reply_to, result.to_fields(), maxlen=keys.REPLY_MAXLEN)
        await self.redis.xack(key, keys.GROUP, entry_id)
        await self.redis.xdel(key, entry_id)

    async def _pump_progress(self, command_id: str, lines: asyncio.Queue[str | None]) -> None:
        """Forward a command's progress lines to its progress stream, in order."""
        while (line := await lines.get()) is not None:
            with contextlib.suppress(aioredis.RedisError):  # progress is best effort
                await self._progress_entry(command_id, {"line": line}, maxlen=10_000)

    async def _send_output(self, command_id: str, chunk: bytes, deadline: float) -> None:
        """Append a chunk of output, waiting while the reader is behind (it deletes what
        it took), so that an archive never sits in Redis whole."""
        key = keys.progress_key(command_id)
        while await self.redis.xlen(key) >= keys.OUTPUT_WINDOW:
            if time.time() > deadline:
                raise CommandError("timeout", "nobody read the output before the deadline")
            await asyncio.sleep(0.01)
        await self._progress_entry(command_id, {"data": chunk})

    async def _progress_entry(
        self, command_id: str, entry: dict[str, str | bytes], maxlen: int | None = None
    ) -> None:
        """One entry on a command's progress stream, which goes an hour after its last
        (the asker may be gone)."""
        key = keys.progress_key(command_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xadd(key, entry, maxlen=maxlen)
            pipe.expire(key, 3600)
            await pipe.execute()

    async def _reap_environments(self) -> None:
        await reap_expired(self.runtime, self.redis, self.node_id)

    async def live_nodes(self) -> set[str]:
        now = time.time()
        nodes = await self.redis.hgetall(keys.NODES)
        live = set()
        for node, info in nodes.items():
            if now - json.loads(info)["heartbeat"] < keys.HEARTBEAT_STALE:
                live.add(node.decode())
        return live

    async def take_over_once(self) -> int | None:
        """Claim calls pending with dead nodes (or with an earlier life of this one)."""
        try:
            return await self._take_over()
        except (aioredis.RedisError, OSError):
            self._watching_since = None
            raise

    async def _take_over(self) -> int:
        live = await self.live_nodes()
        now = time.monotonic()
        if self._watching_since is None:
            self._watching_since = now
        # Just after a start, or after Redis was away, every heartbeat may look stale:
        # other nodes are taken for dead only once each had time to send one since.
        judging = now - self._watching_since >= keys.HEARTBEAT_STALE
        claimed = 0
        for name, worker in list(self.workers.items()):
            key = keys.calls_key(name)
            try:
                pending = await self.redis.xpending_range(key, keys.GROUP, "-", "+", 100)
            except aioredis.ResponseError:
                continue
            for entry in pending:
                consumer = entry["consumer"].decode()
                if entry["message_id"] in self.handling:
                    continue  # this process runs it now: never a take-over from oneself
                if consumer != self.node_id and (consumer in live or not judging):
                    continue  # a live node's (ours, not handled, are an earlier life's)
                got = await self.redis.xclaim(
                    key, keys.GROUP, self.node_id, min_idle_time=500,
                    message_ids=[entry["message_id"]],
                )  # fmt: skip
                for entry_id, fields in got:
                    if fields is None:
                        continue  # deleted meanwhile
                    claimed += 1
                    if entry["times_delivered"] + 1 > keys.MAX_DELIVERIES:
                        await self._dead_letter(key, entry_id, fields)
                    else:
                        worker.run(entry_id, fields)
            if not judging:
                continue
            for consumer in await self.redis.xinfo_consumers(key, keys.GROUP):
                cname = consumer["name"].decode()
                if cname not in live and cname != self.node_id and not consumer["pending"]:
                    await self.redis.xgroup_delconsumer(key, keys.GROUP, cname)
        return claimed

    async def _dead_letter(self, key: str, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        req = CallRequest.from_fields(fields)
        await self.redis.xadd(keys.DEAD, {**fields, b"stream": key.encode()}, maxlen=10_000)
        result = CallResult.failure(
            req.id, 502, "dead_letter",
            f"the call was delivered {keys.MAX_DELIVERIES} times and its node died each time",
            node=self.node_id,
        )  # fmt: skip
        await self.reply(req, result, ack=(key, entry_id))

    async def reply(
        self, req: CallRequest, result: CallResult, ack: tuple[str, bytes] | None = None,
        logs: Sequence[tuple[str, str]] = (),
    ) -> None:  # fmt: skip
        """Record the result, send it to the gateway that asked, publish the call's log
        lines, then XACK and delete the entry: one round trip."""
        record = {
            "state": "done", "status": result.status, "error": result.error,
            "message": result.message, "cold": int(result.cold), "node": result.node,
            "container": result.container, "queue_seconds": result.queue_seconds,
            "run_seconds": result.run_seconds, "finished": time.time(),
            "cpu_seconds": result.cpu_seconds, "throttled_seconds": result.throttled_seconds,
            "start_seconds": result.start_seconds, "wait_seconds": result.wait_seconds,
            "logs_tail": "\n".join(text for _, text in logs[-20:])[-2048:],
        }  # fmt: skip
        if not req.reply_to or req.keep_result:  # async or idempotent: the record keeps it
            record["headers"] = json.dumps(list(result.headers))
            record["body_size"] = len(result.body)
            if len(result.body) <= keys.RECORD_BODY_LIMIT:
                record["body"] = result.body
            else:  # the callback still gets it whole
                record["body_dropped"] = 1
        key = keys.record_key(req.id)
        # All or nothing (MULTI/EXEC): a reply that failed is sent again whole, and a
        # retry must not add the call's log lines or its invocation twice.
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=record)
            pipe.expire(key, keys.RECORD_TTL)
            if req.reply_to:
                pipe.xadd(req.reply_to, result.to_fields(), maxlen=keys.REPLY_MAXLEN)
                # A gateway killed without closing leaves its stream: it goes in an hour.
                pipe.expire(req.reply_to, keys.RECORD_TTL)
            pipe.hincrby(keys.INVOCATIONS, req.function, 1)
            for stream, text in logs:
                line = {"call": req.id, "container": result.container, "stream": stream,
                        "text": text}  # fmt: skip
                pipe.xadd(keys.logs_key(req.function), line,
                          maxlen=keys.LOGS_MAXLEN, approximate=True)  # fmt: skip
            if ack is not None:
                pipe.xack(ack[0], keys.GROUP, ack[1])
                pipe.xdel(ack[0], ack[1])
            await pipe.execute()
        if req.callback:
            task = asyncio.create_task(self._post_callback(req, result))
            self._callbacks.add(task)
            task.add_done_callback(self._callbacks.discard)

    async def _post_callback(self, req: CallRequest, result: CallResult) -> None:
        """POST an async call's result to its X-Callback-Url, as OpenFaaS does.

        Where it may go is checked at the moment of connecting (pool/outbound.py): the
        gateway checked the URL, this checks where its name leads now. Two tries; the
        outcome goes into the call record.
        """
        headers = [
            *result.headers,
            ("x-call-id", req.id),
            ("x-function-status", str(result.status)),
        ]
        outcome = ""
        for attempt in range(2):
            try:
                target = outbound.check_url(req.callback, self.callback_allow)
                address = await outbound.resolve(target, self.callback_allow)
                status = await outbound.post(target, address, result.body, headers)
                outcome = str(status)
                if status < 500:
                    break
            except outbound.OutboundRefused as exc:
                outcome = f"refused: {exc.reason}"
                break
            except (OSError, TimeoutError) as exc:
                outcome = f"error: {exc!r}"
            if attempt == 0:
                await asyncio.sleep(1.0)
        with contextlib.suppress(aioredis.RedisError):
            await self.redis.hset(keys.record_key(req.id), "callback", outcome)


def _only_sizes_differ(old: FunctionSpec, new: FunctionSpec) -> bool:
    return replace(old, pool_min=new.pool_min, pool_max=new.pool_max) == new


async def _forever(step: Callable[[], Awaitable[object]], every: float) -> None:
    """Run a loop body every ``every`` seconds; a failure is logged and retried, never fatal.

    A cancellation is checked after every step too: redis-py can absorb one.
    """
    outage = Outage(log, getattr(step, "__name__", str(step)))
    while True:
        try:
            await step()
            outage.succeeded()
        except asyncio.CancelledError:
            raise
        except (aioredis.RedisError, OSError) as exc:
            outage.failed(exc)
        except Exception:  # a bug: said loudly, and the loop goes on (a dead heartbeat
            # loop would have this node's calls taken over while it runs them)
            outage.bug()
        if cancellation_requested():
            raise asyncio.CancelledError
        await asyncio.sleep(max(every, keys.RETRY_EVERY) if outage.ongoing else every)
