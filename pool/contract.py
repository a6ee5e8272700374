"""The Redis contract between gateways and nodes: key names, message shapes, client.

Version 1. Every key starts with ``scow:v1:``.

    functions            hash   name -> FunctionSpec JSON
    calls:<fn>           stream one entry per call; consumer group "nodes"
    replies:<gateway>    stream results for the gateway instance that asked
    call:<id>            hash   the call record (state, status, timings), with a TTL
    invocations          hash   function -> calls answered
    logs:<fn>            stream the function's log lines, tagged with call and container
    nodes                hash   node id -> {heartbeat, pid, host, functions: pool sizes}
    dead                 stream calls that killed their node too often
    commands             stream node commands any node may take; group "nodes"
    node:<id>:commands   stream node commands for one node; group "nodes"
    progress:<id>        stream a node command's progress lines or output chunks, then
                                {end: 1} just before its result
    environments         hash   environment id -> its lease and where it runs
    events               stream container, image and function events (Docker's shape)
    calls:index:<fn>     list   the function's latest call ids, newest first
    idempotency:<fn>:<key> string "<call id> <request fingerprint>", for an hour
    idempotency-count:<fn> string keys the function took this hour (capped)
    secrets              hash   name -> value: the one place a secret's value is kept

A call's entry is deleted once it is answered, so a stream's length is the
number of calls waiting or running: the gateway's queue cap reads it.

A gateway reads its reply stream with one task and hands each result to the
request waiting for it (``PoolClient``): no Redis connection per waiting call.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from pool.functions import FunctionSpec

log = logging.getLogger("scow.gateway")  # PoolClient is the gateway's side

VERSION = 1
PREFIX = f"scow:v{VERSION}"
GROUP = "nodes"
FUNCTIONS = f"{PREFIX}:functions"
NODES = f"{PREFIX}:nodes"
DEAD = f"{PREFIX}:dead"
INVOCATIONS = f"{PREFIX}:invocations"
ENVIRONMENTS = f"{PREFIX}:environments"
LOGS_MAXLEN = 10_000  # lines kept per function
EVENTS = f"{PREFIX}:events"
# Docker-API containers: id -> {"node", "name"}, so that a gateway sends a container's
# commands to the node that has it.
CONTAINERS = f"{PREFIX}:containers"
EXEC_TTL = 3600  # how long an exec's record is kept after it ends
EVENTS_MAXLEN = 10_000
CALLS_INDEXED = 1000  # call ids kept per function for `scow fn calls`
OUTPUT_WINDOW = 16  # chunks of a command's output that may wait for its reader
RECORD_TTL = 3600
RECORD_BODY_LIMIT = 1 << 20  # a result body a call record keeps (async, idempotent calls)
MAX_IDEMPOTENCY_KEYS = 100_000  # per function and hour: each is a Redis key for an hour
REPLY_MAXLEN = 10_000
MAX_DELIVERIES = 3  # a call delivered this often has crashed nodes: dead-letter it
HEARTBEAT_EVERY = 1.0
HEARTBEAT_STALE = 4.0  # a node silent this long is dead: its calls are taken over
RETRY_EVERY = 0.5  # what failed because Redis is away is tried again this often
SECRETS = f"{PREFIX}:secrets"
MAX_SECRET_BYTES = 512 << 10  # Docker's swarm secrets hold 500 KB
MAX_SECRETS = 1024


class Outage:
    """What a loop that outlives Redis errors (and bugs) logs: the first failure of a run
    of them, and that it works again, not a line per try."""

    def __init__(self, logger: logging.Logger, what: str) -> None:
        self.logger, self.what, self.on = logger, what, False

    def failed(self, exc: BaseException) -> None:
        """Redis away, or a reply cut short: said once."""
        if not self.on:
            self.logger.warning("%s: %r (retrying)", self.what, exc)
        self.on = True

    def bug(self) -> None:
        """Any other exception, with its traceback: said once too."""
        if not self.on:
            self.logger.exception("%s failed (retrying)", self.what)
        self.on = True

    def over(self) -> None:
        if self.on:
            self.logger.warning("%s: working again", self.what)
        self.on = False


def cancellation_requested() -> bool:
    """Whether the current task was asked to stop.

    redis-py can absorb a cancellation that lands mid-command (it retries the
    command), so loops that keep going after Redis errors must also ask this.
    """
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def calls_key(function: str) -> str:
    return f"{PREFIX}:calls:{function}"


def replies_key(gateway: str) -> str:
    return f"{PREFIX}:replies:{gateway}"


COMMANDS = f"{PREFIX}:commands"


def node_commands_key(node: str) -> str:
    return f"{PREFIX}:node:{node}:commands"


def record_key(call_id: str) -> str:
    return f"{PREFIX}:call:{call_id}"


def calls_index_key(function: str) -> str:
    return f"{PREFIX}:calls:index:{function}"


def idempotency_key(function: str, key: str) -> str:
    return f"{PREFIX}:idempotency:{function}:{key}"


def idempotency_count_key(function: str) -> str:
    """How many idempotency keys the function took this hour (their cap)."""
    return f"{PREFIX}:idempotency-count:{function}"


def logs_key(function: str) -> str:
    return f"{PREFIX}:logs:{function}"


def progress_key(command_id: str) -> str:
    return f"{PREFIX}:progress:{command_id}"


def cancel_key(command_id: str) -> str:
    """Set when the asker of a command stopped waiting for it (its client went away)."""
    return f"{PREFIX}:cancel:{command_id}"


def exec_key(exec_id: str) -> str:
    return f"{PREFIX}:exec:{exec_id}"


def new_call_id() -> str:
    return secrets.token_hex(12)


def event(kind: str, action: str, actor: str, attributes: dict[str, str]) -> dict[str, Any]:
    """An event as Docker's /events reports it."""
    now = time.time_ns()
    return {"Type": kind, "Action": action, "Actor": {"ID": actor, "Attributes": attributes},
            "scope": "local", "time": now // 1_000_000_000, "timeNano": now}  # fmt: skip


async def publish_events(redis: aioredis.Redis, events: list[dict[str, Any]]) -> None:
    async with redis.pipeline(transaction=False) as pipe:
        for e in events:
            pipe.xadd(EVENTS, {"event": json.dumps(e)}, maxlen=EVENTS_MAXLEN, approximate=True)
        await pipe.execute()


# redis-py types stream fields loosely; this is what we put in and take out.
Fields = dict[Any, Any]


def _s(value: bytes | str | None) -> str:
    return value.decode() if isinstance(value, bytes) else (value or "")


@dataclass(frozen=True)
class CallRequest:
    id: str
    function: str
    deadline: float  # epoch seconds: queue wait and run together
    method: str = "POST"
    path: str = "/"
    query: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    enqueued: float = 0.0
    reply_to: str = ""  # a reply stream; "" for async calls (the record keeps the result)
    callback: str = ""
    keep_result: bool = False  # a sync call's record keeps its result too (idempotent calls)

    def to_fields(self) -> Fields:
        meta = {
            "method": self.method, "path": self.path, "query": self.query,
            "headers": list(self.headers), "deadline": self.deadline,
            "enqueued": self.enqueued, "reply_to": self.reply_to, "callback": self.callback,
            "keep_result": self.keep_result,
        }  # fmt: skip
        return {"id": self.id, "fn": self.function, "meta": json.dumps(meta), "body": self.body}

    @classmethod
    def from_fields(cls, fields: dict[bytes, bytes]) -> CallRequest:
        meta = json.loads(fields[b"meta"])
        return cls(
            id=_s(fields[b"id"]), function=_s(fields[b"fn"]), deadline=meta["deadline"],
            method=meta["method"], path=meta["path"], query=meta["query"],
            headers=tuple((k, v) for k, v in meta["headers"]), body=fields.get(b"body", b""),
            enqueued=meta["enqueued"], reply_to=meta["reply_to"], callback=meta["callback"],
            keep_result=meta.get("keep_result", False),
        )  # fmt: skip


@dataclass(frozen=True)
class CallResult:
    id: str
    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    cold: bool = False
    error: str = ""  # timeout, oom, crash, bad_response, no_image, dead_letter...
    message: str = ""
    part: str = ""  # for timeouts: queue or run
    node: str = ""
    container: str = ""
    queue_seconds: float = 0.0
    run_seconds: float = 0.0
    # From the container's cgroup, over this call: what it used and how it was held back.
    cpu_seconds: float = 0.0
    throttled_seconds: float = 0.0
    start_seconds: float = 0.0  # how long its container took to start (cold or ahead)
    wait_seconds: float = 0.0  # of run_seconds: waiting for a container to be free or made

    def to_fields(self) -> Fields:
        meta = {k: v for k, v in self.__dict__.items() if k not in ("body", "headers")}
        meta["headers"] = list(self.headers)
        return {"meta": json.dumps(meta), "body": self.body}

    @classmethod
    def from_fields(cls, fields: dict[bytes, bytes]) -> CallResult:
        meta = json.loads(fields[b"meta"])
        meta["headers"] = tuple((k, v) for k, v in meta["headers"])
        return cls(body=fields.get(b"body", b""), **meta)

    @classmethod
    def failure(
        cls, call_id: str, status: int, error: str, message: str, **extra: Any
    ) -> CallResult:
        body = json.dumps({"error": error, "message": message}).encode()
        headers = (("content-type", "application/json"),)
        return cls(call_id, status, headers, body, error=error, message=message, **extra)


@dataclass(frozen=True)
class CommandRequest:
    """Work for a node that is not a function call: images, containers, environments."""

    id: str
    name: str  # e.g. "images.list", "image.bootstrap"
    args: dict[str, Any]
    deadline: float
    reply_to: str
    blob: bytes = b""  # bulk input, such as a build context

    def to_fields(self) -> Fields:
        meta = {"name": self.name, "args": self.args, "deadline": self.deadline,
                "reply_to": self.reply_to}  # fmt: skip
        return {"id": self.id, "meta": json.dumps(meta), "blob": self.blob}

    @classmethod
    def from_fields(cls, fields: dict[bytes, bytes]) -> CommandRequest:
        meta = json.loads(fields[b"meta"])
        return cls(_s(fields[b"id"]), meta["name"], meta["args"], meta["deadline"],
                   meta["reply_to"], fields.get(b"blob", b""))  # fmt: skip


# Queue a call unless its function already has ARGV[1] (> 0) calls waiting or running;
# -1 when queued, else the queue's length. Atomic, so concurrent gateways respect the cap.
# With an idempotency key (KEYS[4]) already set, nothing is queued and the key's value
# (the earlier call's id and fingerprint) is returned; otherwise the key is set to ARGV[9],
# unless the function used ARGV[10] keys this hour (counted in KEYS[5]): then -2.
# The shebang makes Redis judge "out of memory" before the script runs, not at each of
# its writes: at maxmemory a submit is refused whole, never half-done.
_SUBMIT = """#!lua
if KEYS[4] then
  local earlier = redis.call('GET', KEYS[4])
  if earlier then return earlier end
end
local cap = tonumber(ARGV[1])
if cap > 0 then
  local length = redis.call('XLEN', KEYS[2])
  if length >= cap then return length end
end
if KEYS[4] then
  local used = redis.call('INCR', KEYS[5])
  if used == 1 then redis.call('EXPIRE', KEYS[5], ARGV[2]) end
  if used > tonumber(ARGV[10]) then return -2 end
  redis.call('SET', KEYS[4], ARGV[9], 'EX', ARGV[2])
end
redis.call('HSET', KEYS[1], 'state', 'queued', 'function', ARGV[4], 'enqueued', ARGV[7])
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('XADD', KEYS[2], '*', 'id', ARGV[3], 'fn', ARGV[4], 'meta', ARGV[5], 'body', ARGV[6])
redis.call('LPUSH', KEYS[3], ARGV[3])
redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[8]) - 1)
return -1
"""


class QueueFull(Exception):
    """A function's queue is at its cap: the call was not queued."""

    def __init__(self, function: str, length: int) -> None:
        self.function, self.length = function, length
        super().__init__(f"function {function!r} has {length} calls queued, its limit")


class TooManyKeys(Exception):
    """A function took its hour's worth of idempotency keys: the call was not queued."""

    def __init__(self, function: str, limit: int) -> None:
        self.function, self.limit = function, limit
        super().__init__(f"function {function!r} was sent {limit} Idempotency-Keys this hour, "
                         "its limit")  # fmt: skip


class IdempotencyConflict(Exception):
    """An idempotency key was used before for a different request."""

    def __init__(self, key: str, call_id: str) -> None:
        self.key, self.call_id = key, call_id
        super().__init__(
            f"Idempotency-Key {key!r} was used for a different request (call {call_id})"
        )


@dataclass(frozen=True)
class Idempotency:
    """A client's key for a call, and a fingerprint of the request it sent with it."""

    key: str
    fingerprint: str


class CommandFailed(Exception):
    """A node command answered with an error: its status, code and message."""

    def __init__(self, status: int, error: str, message: str) -> None:
        self.status, self.error, self.message = status, error, message
        super().__init__(f"{error}: {message}")


@dataclass
class PoolClient:
    """What a gateway uses: functions, and calls whose results come back on its reply stream."""

    redis: aioredis.Redis
    instance: str = field(default_factory=lambda: secrets.token_hex(6))
    _waiting: dict[str, asyncio.Future[CallResult]] = field(default_factory=dict)
    _reader: asyncio.Task[None] | None = None
    _submit: Any = None  # the registered submit script

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
            outage.over()

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
        """Create or replace ``spec``; True when it is new."""
        with contextlib.suppress(aioredis.ResponseError):  # BUSYGROUP: the group exists
            await self.redis.xgroup_create(calls_key(spec.name), GROUP, id="0", mkstream=True)
        created: int = await self.redis.hset(FUNCTIONS, spec.name, spec.to_json())
        return created == 1

    async def get(self, name: str) -> FunctionSpec | None:
        raw = await self.redis.hget(FUNCTIONS, name)
        return FunctionSpec.from_json(raw) if raw else None

    async def functions(self) -> list[FunctionSpec]:
        raw = await self.redis.hgetall(FUNCTIONS)
        return sorted((FunctionSpec.from_json(v) for v in raw.values()), key=lambda s: s.name)

    # -- secrets --------------------------------------------------------------------

    async def secret_names(self) -> list[str]:
        return sorted(_s(k) for k in await self.redis.hkeys(SECRETS))

    async def set_secret(self, name: str, value: bytes, *, create: bool) -> bool:
        """Store ``value`` as secret ``name``: only a new one with ``create``, only an
        existing one without; False when that does not hold (nothing is changed)."""
        if create:
            if await self.redis.hlen(SECRETS) >= MAX_SECRETS:
                raise QueueFull("secrets", MAX_SECRETS)
            return bool(await self.redis.hsetnx(SECRETS, name, value))
        if not await self.redis.hexists(SECRETS, name):
            return False
        await self.redis.hset(SECRETS, name, value)
        return True

    async def remove_secret(self, name: str) -> bool:
        return bool(await self.redis.hdel(SECRETS, name))

    async def remove(self, name: str) -> bool:
        removed: int = await self.redis.hdel(FUNCTIONS, name)
        await self.redis.delete(calls_key(name), calls_index_key(name), logs_key(name))
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
        self, request: CallRequest, max_queue: int = 0, idempotency: Idempotency | None = None
    ) -> str | None:
        """Record the call and queue it, in one round trip.

        With ``max_queue`` above zero, raises QueueFull instead when that many calls
        of the function are already waiting or running. With ``idempotency``, a key
        seen in the last hour queues nothing: the earlier call's id is returned (or
        IdempotencyConflict raised when that call was a different request).
        """
        if self._submit is None:
            self._submit = self.redis.register_script(_SUBMIT)
        f = request.to_fields()
        keys = [record_key(request.id), calls_key(request.function),
                calls_index_key(request.function)]  # fmt: skip
        argv = [max_queue, RECORD_TTL, f["id"], f["fn"], f["meta"], f["body"], request.enqueued,
                CALLS_INDEXED]  # fmt: skip
        if idempotency is not None:
            keys += [idempotency_key(request.function, idempotency.key),
                     idempotency_count_key(request.function)]  # fmt: skip
            argv += [f"{request.id} {idempotency.fingerprint}", MAX_IDEMPOTENCY_KEYS]
        answer = await self._submit(keys=keys, args=argv)
        if isinstance(answer, bytes):
            assert idempotency is not None
            earlier, fingerprint = answer.decode().split(" ", 1)
            if fingerprint != idempotency.fingerprint:
                raise IdempotencyConflict(idempotency.key, earlier)
            return earlier
        if int(answer) == -2:
            raise TooManyKeys(request.function, MAX_IDEMPOTENCY_KEYS)
        if int(answer) >= 0:
            raise QueueFull(request.function, int(answer))
        return None

    async def call(
        self, request: CallRequest, grace: float = 1.0, max_queue: int = 0,
        idempotency: Idempotency | None = None,
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
            earlier = await self.submit(request, max_queue, idempotency)
            if earlier is not None:
                call_id = earlier
                return await self._recorded_result(earlier, request.deadline + grace)
            remaining = request.deadline - time.time() + grace
            return await asyncio.wait_for(fut, max(remaining, 0.01))
        except TimeoutError:
            state = _s(await self.redis.hget(record_key(call_id), "state"))
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
            raw = await self.redis.hgetall(record_key(call_id))
            record = {_s(k): v for k, v in raw.items()}
            if not record:
                message = f"call {call_id} of this Idempotency-Key has no record left"
                return CallResult.failure(call_id, 410, "gone", message)
            if record.get("state") == b"done" and record.get("body_dropped"):
                message = (f"call {call_id}'s result was {_s(record.get('body_size'))} bytes, "
                           f"more than a record keeps ({RECORD_BODY_LIMIT})")  # fmt: skip
                return CallResult.failure(call_id, 502, "result_not_kept", message)
            if record.get("state") == b"done":
                return CallResult(
                    call_id, int(record["status"]),
                    tuple((k, v) for k, v in json.loads(record.get("headers", b"[]"))),
                    record.get("body", b""), cold=record.get("cold") == b"1",
                    error=_s(record.get("error")), message=_s(record.get("message")),
                    node=_s(record.get("node")), container=_s(record.get("container")),
                )  # fmt: skip
            if time.time() >= until:
                raise TimeoutError
            await asyncio.sleep(0.05)

    async def command(
        self, name: str, args: dict[str, Any] | None = None, *, node: str = "",
        timeout: float = 60.0, blob: bytes = b"",
        progress: Callable[[str], Awaitable[None]] | None = None,
        output: Callable[[bytes], Awaitable[None]] | None = None,
    ) -> Any:  # fmt: skip
        """Run a node command (on ``node``, or on any node) and return its JSON result.

        ``progress`` is awaited with each progress line the node reports while it works,
        ``output`` with each chunk of its bulk output (an image archive), in order.
        Raises CommandFailed with the node's status and message, or a 504 one when no
        node answered in time.
        """
        req = CommandRequest(new_call_id(), name, args or {}, time.time() + timeout,
                             self.reply_stream, blob)  # fmt: skip
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[CallResult] = loop.create_future()
        self._waiting[req.id] = fut
        try:
            key = node_commands_key(node) if node else COMMANDS
            await self.redis.xadd(key, req.to_fields())
            if progress is None and output is None:
                result = await asyncio.wait_for(fut, timeout)
            else:
                follow = self._follow(req.id, fut, progress, output)
                result = await asyncio.wait_for(follow, timeout)
        except TimeoutError:
            where = f"node {node}" if node else "any node"
            raise CommandFailed(
                504, "timeout", f"{name}: no answer from {where} in {timeout:g}s"
            ) from None
        finally:
            self._waiting.pop(req.id, None)
            if not fut.done():  # timed out or cancelled: the node may stop following
                with contextlib.suppress(aioredis.RedisError):
                    await self.redis.set(cancel_key(req.id), 1, ex=3600)
            if progress is not None or output is not None:
                await self.redis.delete(progress_key(req.id))
        if result.status >= 400:
            raise CommandFailed(result.status, result.error, result.message)
        return json.loads(result.body) if result.body else None

    async def _follow(
        self, command_id: str, fut: asyncio.Future[CallResult],
        progress: Callable[[str], Awaitable[None]] | None,
        output: Callable[[bytes], Awaitable[None]] | None,
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
                        await progress(_s(fields[b"line"]))
                    elif b"data" in fields and output is not None:
                        await output(fields[b"data"])
                    await self.redis.xdel(key, entry_id)  # room for the node's next chunk
            if ended:
                return await fut
            if done and not batches:
                return fut.result()

    async def record(self, call_id: str) -> dict[str, str] | None:
        raw = await self.redis.hgetall(record_key(call_id))
        return {_s(k): _s(v) for k, v in raw.items()} if raw else None
