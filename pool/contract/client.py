"""PoolClient: what a gateway knows of Redis, and all it does there.

Functions, secrets, calls (queued, then answered on this gateway's own reply
stream), call records, logs, events, nodes, environments' leases, the map of
Docker containers to nodes, exec states, and node commands. A gateway reads its
reply stream with one task and hands each result to the request waiting for it:
no Redis connection per waiting call.

One class past ~400 lines, on purpose: every key a gateway touches and every command
it sends there is in this one file, which is what a review of the trust boundary
(docs/security.md) reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from pool.contract import keys
from pool.contract.errors import (
    CommandFailed,
    IdempotencyConflict,
    NoNode,
    QueueFull,
    StaleSpec,
    TooManyKeys,
    TooManySecrets,
)
from pool.contract.keys import (
    CALLS_INDEXED,
    COMMANDS,
    DRAINING,
    ENVIRONMENTS,
    EVENTS,
    EVENTS_MAXLEN,
    FUNCTIONS,
    GROUP,
    HEARTBEAT_EVERY,
    HEARTBEAT_STALE,
    INPUT_WINDOW,
    LOGINS,
    MAX_SECRETS,
    NODES,
    OUTPUT_WINDOW,
    RECORD_TTL,
    SECRETS,
    calls_index_key,
    calls_key,
    cancel_key,
    idempotency_count_key,
    idempotency_key,
    input_key,
    invocations_key,
    is_call_id,
    logs_key,
    new_command_id,
    node_commands_key,
    progress_key,
    record_key,
    replies_key,
    spec_key,
)
from pool.contract.messages import CallRecord, CallRequest, CallResult, CommandRequest, text
from pool.contract.networks import Networks
from pool.contract.outage import Outage, cancellation_requested
from pool.contract.specs import FunctionSpec

log = logging.getLogger("scow.gateway")  # PoolClient is the gateway's side

Entries = list[tuple[bytes, dict[bytes, bytes]]]


async def publish_events(redis: aioredis.Redis, events: list[dict[str, Any]]) -> None:
    """Events on the stream Docker's /events reads (one round trip for a batch)."""
    async with redis.pipeline(transaction=False) as pipe:
        for e in events:
            pipe.xadd(EVENTS, {"event": json.dumps(e)}, maxlen=EVENTS_MAXLEN, approximate=True)
        await pipe.execute()


class NodeGone(Exception):
    """The node a command was sent to stopped answering (its heartbeat went stale)."""


@dataclass(frozen=True)
class Idempotency:
    """A client's key for a call, and a fingerprint of the request it sent with it."""

    key: str
    fingerprint: str


# Queue a call unless its function already has ARGV[1] (> 0) calls waiting or running;
# -1 when queued, else the queue's length. Atomic, so concurrent gateways respect the cap.
# With ARGV[9] (the SHA-1 of the function's spec as the gateway read it) and the spec in
# KEYS[4] (the function's spec key) now different or gone, nothing is queued: {'stale'}.
# Every key is in the function's slot (pool.contract.keys): a Redis Cluster runs it too.
# With an idempotency key (KEYS[5]) already set, nothing is queued and the key's value
# (the earlier call's id and fingerprint) is returned; otherwise the key is set to
# ARGV[10], unless the function used ARGV[11] keys this hour (counted in KEYS[6]): -2.
# The shebang makes Redis judge "out of memory" before the script runs, not at each of
# its writes: at maxmemory a submit is refused whole, never half-done.
_SUBMIT = """#!lua
if ARGV[9] ~= '' then
  local spec = redis.call('GET', KEYS[4])
  if not spec or redis.sha1hex(spec) ~= ARGV[9] then return {'stale'} end
end
if KEYS[5] then
  local earlier = redis.call('GET', KEYS[5])
  if earlier then return earlier end
end
local cap = tonumber(ARGV[1])
if cap > 0 then
  local length = redis.call('XLEN', KEYS[2])
  if length >= cap then return length end
end
if KEYS[5] then
  local used = redis.call('INCR', KEYS[6])
  if used == 1 then redis.call('EXPIRE', KEYS[6], ARGV[2]) end
  if used > tonumber(ARGV[11]) then return -2 end
  redis.call('SET', KEYS[5], ARGV[10], 'EX', ARGV[2])
end
redis.call('HSET', KEYS[1], 'state', 'queued', 'function', ARGV[4], 'enqueued', ARGV[7])
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('XADD', KEYS[2], '*', 'id', ARGV[3], 'fn', ARGV[4], 'meta', ARGV[5], 'body', ARGV[6])
redis.call('LPUSH', KEYS[3], ARGV[3])
redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[8]) - 1)
return -1
"""

SPECS_CACHED = 4096  # functions whose spec a gateway keeps; past it, it starts over


@dataclass(frozen=True)
class Deployed:
    """A function's spec as a gateway read it, and the SHA-1 of its stored form: a call
    built on it is queued only while the stored spec is still this one."""

    spec: FunctionSpec
    digest: str


@dataclass
class PoolClient:
    """What a gateway uses: functions, and calls whose results come back on its reply stream."""

    redis: aioredis.Redis
    instance: str = field(default_factory=lambda: secrets.token_hex(6))
    _waiting: dict[str, asyncio.Future[CallResult]] = field(default_factory=dict)
    _reader: asyncio.Task[None] | None = None
    _submit: Any = None  # the registered submit script
    # Specs read for calls, checked at every submit (so never trusted stale): a call
    # costs one round trip, not a read of its spec and then a submit.
    _specs: dict[str, Deployed] = field(default_factory=dict)
    networks: Networks = field(init=False)  # user-defined networks' records

    def __post_init__(self) -> None:
        self.networks = Networks(self.redis)

    @property
    def reply_stream(self) -> str:
        return replies_key(self.instance)

    async def start(self) -> None:
        self._reader = asyncio.create_task(self._read_replies(), name="scow-replies")

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self.redis.delete(self.reply_stream)

    async def _read_replies(self) -> None:
        """Hand each result on this gateway's reply stream to the call waiting for it.

        This loop must outlive everything (Redis away, a reply cut short, a bug): were
        it to end, every call of this gateway would wait for its deadline from then on.
        """
        last: str | bytes = "0-0"  # the stream is this gateway's own: all of it is ours
        outage = Outage(log, "reading replies")
        while not cancellation_requested():
            try:
                last = await self._deliver_replies(last)
            except (aioredis.RedisError, OSError) as exc:
                # Redis away, or a reply cut short (a protocol error): waiting calls
                # time out on their own.
                if cancellation_requested():
                    raise asyncio.CancelledError from None
                outage.failed(exc)
                await asyncio.sleep(0.2)
                continue
            except Exception:  # a bug: said loudly, and the replies still read
                outage.bug()
                await asyncio.sleep(0.2)
                continue
            outage.succeeded()

    async def _deliver_replies(self, last: str | bytes) -> str | bytes:
        """One read of the reply stream after ``last``; returns the last id read."""
        batches = await self.redis.xread({self.reply_stream: last}, block=1000, count=500)
        ids = []
        for _, entries in batches or []:
            for entry_id, fields in entries:
                last = entry_id
                ids.append(entry_id)
                result = CallResult.from_fields(fields)
                fut = self._waiting.pop(result.id, None)
                if fut is not None and not fut.done():
                    fut.set_result(result)
        if ids:
            # Should this fail, the next read gets them again (their calls are answered
            # already) and deletes them then.
            await self.redis.xdel(self.reply_stream, *ids)
        return last

    # -- functions ------------------------------------------------------------------

    async def deploy(self, spec: FunctionSpec) -> bool:
        """Create or replace ``spec``; True when it is new. Its spec key (what calls are
        judged on) first, then the list of functions (what nodes serve)."""
        with contextlib.suppress(aioredis.ResponseError):  # BUSYGROUP: the group exists
            await self.redis.xgroup_create(calls_key(spec.name), GROUP, id="0", mkstream=True)
        data = spec.to_json()
        await self.redis.set(spec_key(spec.name), data)
        created: int = await self.redis.hset(FUNCTIONS, spec.name, data)
        self.forget(spec.name)
        return created == 1

    async def get(self, name: str) -> FunctionSpec | None:
        raw = await self.redis.get(spec_key(name))
        return FunctionSpec.from_json(raw) if raw else None

    async def deployed(self, name: str) -> Deployed | None:
        """The spec a call to ``name`` is built on: read once, then kept until a submit
        finds it changed (``forget``). Not found is never kept."""
        if (known := self._specs.get(name)) is not None:
            return known
        raw = await self.redis.get(spec_key(name))
        if not raw:
            return None
        data = raw if isinstance(raw, bytes) else str(raw).encode()
        found = Deployed(FunctionSpec.from_json(data), hashlib.sha1(data).hexdigest())
        if len(self._specs) >= SPECS_CACHED:
            self._specs.clear()
        self._specs[name] = found
        return found

    def forget(self, name: str) -> None:
        self._specs.pop(name, None)

    async def functions(self) -> list[FunctionSpec]:
        raw = await self.redis.hgetall(FUNCTIONS)
        return sorted((FunctionSpec.from_json(v) for v in raw.values()), key=lambda s: s.name)

    # -- secrets --------------------------------------------------------------------

    async def secret_names(self) -> list[str]:
        return sorted(text(k) for k in await self.redis.hkeys(SECRETS))

    async def set_secret(self, name: str, value: bytes, *, create: bool) -> bool:
        """Store ``value`` as secret ``name``: only a new one with ``create``, only an
        existing one without; False when that does not hold (nothing is changed)."""
        if create:
            if await self.redis.hlen(SECRETS) >= MAX_SECRETS:
                raise TooManySecrets(MAX_SECRETS)
            return bool(await self.redis.hsetnx(SECRETS, name, value))
        if not await self.redis.hexists(SECRETS, name):
            return False
        await self.redis.hset(SECRETS, name, value)
        return True

    async def remove_secret(self, name: str) -> bool:
        return bool(await self.redis.hdel(SECRETS, name))

    async def remove(self, name: str) -> bool:
        removed: int = await self.redis.hdel(FUNCTIONS, name)
        self.forget(name)
        await self.redis.delete(spec_key(name), calls_key(name), calls_index_key(name),
                                logs_key(name), invocations_key(name))  # one slot
        return removed == 1

    async def queue_length(self, name: str) -> int:
        """Calls waiting for a node: entries not yet read, plus pending ones."""
        try:
            groups = await self.redis.xinfo_groups(calls_key(name))
        except aioredis.ResponseError:
            return 0
        return sum(int(g.get("lag") or 0) + int(g.get("pending") or 0) for g in groups)

    # -- calls ----------------------------------------------------------------------

    async def submit(
        self, request: CallRequest, max_queue: int = 0, idempotency: Idempotency | None = None,
        spec: Deployed | None = None,
    ) -> str | None:  # fmt: skip
        """Record the call and queue it, in one round trip.

        With ``max_queue`` above zero, raises QueueFull instead when that many calls
        of the function are already waiting or running. With ``idempotency``, a key
        seen in the last hour queues nothing: the earlier call's id is returned (or
        IdempotencyConflict raised when that call was a different request). With
        ``spec``, raises StaleSpec (nothing queued, the spec forgotten) when the
        function's stored spec is no longer that one.
        """
        if self._submit is None:
            self._submit = self.redis.register_script(_SUBMIT)
        f = request.to_fields()
        touched = [record_key(request.id), calls_key(request.function),
                   calls_index_key(request.function), spec_key(request.function)]  # fmt: skip
        argv = [max_queue, RECORD_TTL, f["id"], f["fn"], f["meta"], f["body"], request.enqueued,
                CALLS_INDEXED, spec.digest if spec is not None else ""]  # fmt: skip
        if idempotency is not None:
            touched += [idempotency_key(request.function, idempotency.key),
                        idempotency_count_key(request.function)]  # fmt: skip
            argv += [f"{request.id} {idempotency.fingerprint}", keys.MAX_IDEMPOTENCY_KEYS]
        answer = await self._submit(keys=touched, args=argv)
        if isinstance(answer, list):
            self.forget(request.function)
            raise StaleSpec(request.function)
        if isinstance(answer, bytes):
            assert idempotency is not None
            earlier, fingerprint = answer.decode().split(" ", 1)
            if fingerprint != idempotency.fingerprint:
                raise IdempotencyConflict(idempotency.key, earlier)
            return earlier
        if int(answer) == -2:
            raise TooManyKeys(request.function, keys.MAX_IDEMPOTENCY_KEYS)
        if int(answer) >= 0:
            raise QueueFull(request.function, int(answer))
        return None

    async def call(
        self, request: CallRequest, grace: float = 1.0, max_queue: int = 0,
        idempotency: Idempotency | None = None, spec: Deployed | None = None,
    ) -> CallResult:  # fmt: skip
        """Queue ``request`` and wait for its result; a 504 when its deadline passes first.

        Raises QueueFull (nothing queued) when the function's queue is at ``max_queue``.
        With ``idempotency`` and a key seen before, nothing is queued: the result is
        the earlier call's (with its id), waited for when it has not finished yet.
        """
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[CallResult] = loop.create_future()
        self._waiting[request.id] = fut
        call_id = request.id
        try:
            earlier = await self.submit(request, max_queue, idempotency, spec)
            if earlier is not None:
                call_id = earlier
                return await self._recorded_result(earlier, request.deadline + grace)
            remaining = request.deadline - time.time() + grace
            return await asyncio.wait_for(fut, max(remaining, 0.01))
        except TimeoutError:
            state = text(await self.redis.hget(record_key(call_id), "state"))
            part = "run" if state == "running" else "queue"
            where = "running" if part == "run" else "queued"
            message = f"the call's deadline passed while it was {where}"
            return CallResult.failure(call_id, 504, "timeout", message, part=part)
        finally:
            self._waiting.pop(request.id, None)

    async def _recorded_result(self, call_id: str, until: float) -> CallResult:
        """An earlier call's result from its record, polled until it is done or ``until``.

        Its reply went to the gateway that queued it, which may be gone: the record is
        the one place every gateway can read it from.
        """
        while True:
            record = await self.record(call_id)
            if record is None:
                message = f"call {call_id} of this Idempotency-Key has no record left"
                return CallResult.failure(call_id, 410, "gone", message)
            if record.state == "done":
                return record.result()
            if time.time() >= until:
                raise TimeoutError
            await asyncio.sleep(0.05)

    async def command(
        self, name: str, args: dict[str, Any] | None = None, *, node: str = "",
        timeout: float = 60.0, blob: bytes = b"",
        progress: Callable[[str], Awaitable[None]] | None = None,
        output: Callable[[bytes, str], Awaitable[None]] | None = None,
        input: asyncio.Queue[bytes | None] | None = None,
    ) -> Any:  # fmt: skip
        """Run a node command (on ``node``, or on any node) and return its JSON result.

        ``progress`` is awaited with each progress line the node reports while it works,
        ``output`` with each chunk of its output (an archive, or a container's log lines)
        and the stream it belongs to ("", ``stdout``, ``stderr``, ``log``, ``tty``), in
        order. What is put in ``input`` while it runs goes to the node (an attached
        client's stdin; None is its end). Raises CommandFailed with the node's status and
        message, or a 504 one when no node answered in time.
        """
        req = CommandRequest(new_command_id(), name, args or {}, time.time() + timeout,
                             self.reply_stream, blob)  # fmt: skip
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[CallResult] = loop.create_future()
        self._waiting[req.id] = fut
        sending = (asyncio.create_task(self._send_input(req.id, input))
                   if input is not None else None)  # fmt: skip
        try:
            key = node_commands_key(node) if node else COMMANDS
            await self.redis.xadd(key, req.to_fields())
            if progress is None and output is None:
                answer: Awaitable[CallResult] = fut
            else:
                answer = self._follow(req.id, fut, progress, output)
            result = await self._unless_gone(answer, node, timeout)
        except NodeGone:
            raise CommandFailed("node_gone", f"{name}: node {node} stopped answering (no "
                                f"heartbeat for {HEARTBEAT_STALE:g}s)") from None
        except TimeoutError:
            where = f"node {node}" if node else "any node"
            message = f"{name}: no answer from {where} in {timeout:g}s"
            raise CommandFailed("timeout", message) from None
        finally:
            self._waiting.pop(req.id, None)
            if sending is not None:
                sending.cancel()
                with contextlib.suppress(asyncio.CancelledError, aioredis.RedisError):
                    await sending
                with contextlib.suppress(aioredis.RedisError):
                    await self.redis.delete(input_key(req.id))
            if not fut.done():  # timed out or cancelled: the node may stop following
                with contextlib.suppress(aioredis.RedisError):
                    await self.redis.set(cancel_key(req.id), 1, ex=3600)
            if progress is not None or output is not None:
                await self.redis.delete(progress_key(req.id))
        if result.error:
            raise CommandFailed(result.error, result.message)
        return json.loads(result.body) if result.body else None

    async def _unless_gone(self, answer: Awaitable[CallResult], node: str,
                           timeout: float) -> CallResult:  # fmt: skip
        """``answer`` within ``timeout`` (else TimeoutError); NodeGone as soon as ``node``
        (when one is named) is no longer live: its commands die with it, and waiting out
        the timeout would only hold the client."""
        task = asyncio.ensure_future(answer)
        if not node:
            return await asyncio.wait_for(task, timeout)
        watch = asyncio.create_task(self._until_gone(node))
        try:
            done, _ = await asyncio.wait({task, watch}, timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
        finally:
            watch.cancel()
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if task in done:
            return task.result()
        if watch in done and watch.exception() is None:
            raise NodeGone(node)
        raise TimeoutError

    async def _until_gone(self, node: str) -> None:
        """Returns once ``node``'s heartbeat is stale or gone (a Redis outage is no news
        of the node: it is read again)."""
        while True:
            await asyncio.sleep(HEARTBEAT_EVERY)
            try:
                raw = await self.redis.hget(NODES, node)
            except (aioredis.ConnectionError, aioredis.TimeoutError):
                continue
            if raw is None or time.time() - float(json.loads(raw).get("heartbeat", 0)) > (
                HEARTBEAT_STALE
            ):
                return

    async def _send_input(self, command_id: str, chunks: asyncio.Queue[bytes | None]) -> None:
        """Forward what is put in ``chunks`` to the command's input stream, waiting while the
        node is behind (it deletes what it took), and its end (None) as ``{eof: 1}``."""
        key = input_key(command_id)
        while True:
            chunk = await chunks.get()
            while await self.redis.xlen(key) >= INPUT_WINDOW:
                await asyncio.sleep(0.01)
            entry: dict[str, bytes] = {"eof": b"1"} if chunk is None else {"data": chunk}
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.xadd(key, entry)
                pipe.expire(key, 3600)  # the node may be gone
                await pipe.execute()
            if chunk is None:
                return

    async def _follow(
        self, command_id: str, fut: asyncio.Future[CallResult],
        progress: Callable[[str], Awaitable[None]] | None,
        output: Callable[[bytes, str], Awaitable[None]] | None,
    ) -> CallResult:  # fmt: skip
        key, last = progress_key(command_id), "0"
        while True:
            done = fut.done()  # read before the last batch: lines sent before the result
            batches = await self.redis.xread(
                {key: last}, block=None if done else 200, count=OUTPUT_WINDOW
            )
            ended = False
            for _, entries in batches or []:
                for entry_id, fields in entries:
                    last = entry_id
                    if b"end" in fields:  # the node sent all it had: its result follows
                        ended = True
                    elif b"line" in fields and progress is not None:
                        await progress(text(fields[b"line"]))
                    elif b"data" in fields and output is not None:
                        await output(fields[b"data"], text(fields.get(b"stream", b"")))
                    await self.redis.xdel(key, entry_id)  # room for the node's next chunk
            if ended:
                return await fut
            if done and not batches:
                return fut.result()

    async def record(self, call_id: str) -> CallRecord | None:
        """The call's record; None for no such call (or an id no call could have)."""
        if not is_call_id(call_id):
            return None
        raw = await self.redis.hgetall(record_key(call_id))
        return CallRecord.from_hash(call_id, raw) if raw else None

    async def recent_calls(self, function: str, limit: int) -> list[CallRecord]:
        """The function's latest calls, newest first (expired records are left out)."""
        ids = [text(i) for i in await self.redis.lrange(calls_index_key(function), 0, limit - 1)]
        ids = [i for i in ids if is_call_id(i)]
        async with self.redis.pipeline(transaction=False) as pipe:
            for call_id in ids:
                pipe.hgetall(record_key(call_id))
            records = await pipe.execute()
        return [CallRecord.from_hash(i, raw) for i, raw in zip(ids, records, strict=True) if raw]

    # -- logs and events ----------------------------------------------------------------

    async def log_entries(self, function: str, start: str, count: int | None) -> Entries:
        """A function's log lines from stream id ``start`` on: all, or the last ``count``."""
        key = logs_key(function)
        if count is not None:
            return list(reversed(await self.redis.xrevrange(key, "+", start, count=count)))
        return list(await self.redis.xrange(key, start, "+"))

    async def follow(self, key: str, cursor: bytes | str) -> AsyncIterator[Entries]:
        """Batches of a stream's entries after ``cursor`` as they come (a second's wait
        each, an empty batch when none came), until the caller stops."""
        while True:
            found = await self.redis.xread({key: cursor}, block=1000, count=500)
            entries = [e for _, batch in found or [] for e in batch]
            if entries:
                cursor = entries[-1][0]
            yield entries

    def follow_logs(self, function: str, cursor: bytes | str) -> AsyncIterator[Entries]:
        return self.follow(logs_key(function), cursor)

    async def _end_of(self, key: str) -> bytes | str:
        """The id of a stream's last entry now ("0-0" when it has none): a cursor to follow
        it from. XREAD's "$" would mean the end at the time of the read, which loses
        what came between the client's request and the first read."""
        last = await self.redis.xrevrange(key, "+", "-", count=1)
        return last[0][0] if last else "0-0"

    async def logs_end(self, function: str) -> bytes | str:
        return await self._end_of(logs_key(function))

    async def events_end(self) -> bytes | str:
        return await self._end_of(EVENTS)

    async def events_since(self, start: str) -> Entries:
        return list(await self.redis.xrange(EVENTS, start, "+"))

    def follow_events(self, cursor: bytes | str) -> AsyncIterator[Entries]:
        return self.follow(EVENTS, cursor)

    async def publish(self, events: list[dict[str, Any]]) -> None:
        await publish_events(self.redis, events)

    # -- nodes, environments, containers, execs ---------------------------------------

    async def ping(self) -> None:
        await self.redis.ping()

    async def nodes(self) -> dict[str, dict[str, Any]]:
        """Every registered node with its heartbeat age and whether it counts as live."""
        now = time.time()
        out = {}
        for node, raw in (await self.redis.hgetall(NODES)).items():
            info = json.loads(raw)
            age = now - float(info.get("heartbeat", 0))
            out[text(node)] = {**info, "heartbeat_age": age, "live": age < HEARTBEAT_STALE}
        return out

    async def drain(self, node: str) -> None:
        """Ask ``node`` to take no new calls and exit once idle."""
        await self.redis.hset(DRAINING, node, time.time())

    async def least_loaded(self, pinned: str = "") -> str:
        """The live node that is not draining with the fewest containers (then the lowest
        load per CPU): where a new container or environment goes; ``pinned`` when it is
        live. Raises NoNode when there is none."""
        nodes = await self.nodes()
        if pinned:
            if not nodes.get(pinned, {}).get("live"):
                raise NoNode(f"node {pinned} is not live (scow node ls)")
            return pinned
        ready = [(int(n.get("containers", 0)), float(n.get("load", 0.0)), node)
                 for node, n in nodes.items() if n["live"] and not n.get("draining")]  # fmt: skip
        if not ready:
            raise NoNode("no node is up (and not draining) to run it")
        return min(ready)[2]

    async def leases(self) -> list[dict[str, Any]]:
        """Every environment's lease, oldest first."""
        raw = await self.redis.hgetall(ENVIRONMENTS)
        return sorted((json.loads(v) for v in raw.values()), key=lambda lease: lease["created"])

    async def lease(self, env_id: str) -> dict[str, Any] | None:
        raw = await self.redis.hget(ENVIRONMENTS, env_id)
        return json.loads(raw) if raw is not None else None

    async def renew(self, env_id: str, lease: dict[str, Any]) -> bool:
        """Write ``lease`` while it still exists (a lease the reaper just removed stays
        removed); False when it was gone."""
        written = await self.redis.eval(
            "if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then "
            "return redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end return -1",
            1, ENVIRONMENTS, env_id, json.dumps(lease),
        )  # fmt: skip
        return bool(written != -1)

    async def keep_login(self, registry: str, auth: str) -> None:
        """Keep credentials a registry accepted (X-Registry-Auth form), for nodes' pulls."""
        await self.redis.hset(LOGINS, registry, auth)

    async def container_nodes(self) -> dict[str, dict[str, str]]:
        """Docker-API containers: id -> {"node", "name"}."""
        raw = await self.redis.hgetall(keys.CONTAINERS)
        return {text(k): json.loads(v) for k, v in raw.items()}

    async def exec_state(self, exec_id: str) -> dict[str, Any] | None:
        raw = await self.redis.get(keys.exec_key(exec_id))
        return json.loads(raw) if raw is not None else None

    async def invocations(self, names: list[str]) -> list[int]:
        if not names:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:  # one slot each
            for name in names:
                pipe.get(invocations_key(name))
            counts = await pipe.execute()
        return [int(c or 0) for c in counts]

    async def queue_lengths(self, names: list[str]) -> list[int]:
        """Entries in each function's stream: calls waiting or running."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.xlen(calls_key(name))
            return [int(n) for n in await pipe.execute()]
