"""Node commands: what a node does for the gateway besides running calls.

Each family is a class built by the node with what it uses (images.py, containers.py,
execs.py, copies.py, volumes.py, environments.py); its ``commands`` map a command's
name to a bound method that takes a ``Command`` and returns something JSON can
encode, in scow's own words (the gateway makes Docker's shapes of them). A command
that fails raises ``CommandError`` with one of the contract's failure kinds.

``CommandServer`` reads the node's command streams (the shared one and its own),
runs each command in a task, relays its progress lines and output chunks to the
asker's progress stream, and answers on the asker's reply stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from images.base import UnknownBase
from images.builder import BuildError
from images.errors import ImageError, ImageInUse, ImageNotFound, InvalidReference
from images.registry import NotInRegistry, RegistryError, Unauthorized
from pool.contract import keys
from pool.contract.errors import InvalidSpec
from pool.contract.messages import CallResult, CommandRequest, Failure
from pool.environments import NotReady
from runtime.errors import Conflict, ContainerError, InvalidOption, NotFound
from runtime.tarfs import UnsafeArchive

log = logging.getLogger("scow.pool")
OUTPUT_CHUNK = 1 << 20


async def _never() -> bool:
    return False


class CommandError(Exception):
    """A command that failed, and how (one of pool.contract.messages.FAILURES): the
    gateway answers each way with its HTTP status."""

    def __init__(self, error: Failure, message: str) -> None:
        self.error, self.message = error, message
        super().__init__(message)


async def _nowhere(chunk: bytes, stream: str = "") -> None:
    raise CommandError("invalid", "this command's output has nowhere to go")


async def _no_input() -> bytes:
    return b""


@dataclass(frozen=True)
class Command:
    """One command's input: JSON arguments, bulk bytes, and where progress lines go."""

    args: dict[str, Any]
    blob: bytes = b""
    # Thread-safe: bootstraps and builds report from worker threads too.
    progress: Callable[[str], None] = lambda line: None
    # Output, in order, at the pace the caller reads it: bytes, and the stream they belong
    # to ("" for bulk bytes such as an archive; "stdout", "stderr"; "log" for log lines).
    send: Callable[[bytes, str], Awaitable[None]] = _nowhere
    # True once the caller went away or the node is stopping: commands that follow or
    # wait (logs -f, attach, wait) check it between steps and end.
    cancelled: Callable[[], Awaitable[bool]] = _never
    # What the caller sends while the command runs (an attached client's stdin), a chunk
    # at a time as it comes; b"" once it ended (or the caller sends none).
    receive: Callable[[], Awaitable[bytes]] = _no_input


Handler = Callable[[Command], Awaitable[Any]]


def required(args: dict[str, Any], key: str) -> str:
    value = args.get(key)
    if not isinstance(value, str) or not value:
        raise CommandError("invalid", f"argument {key!r} is required")
    return value


def strings(args: dict[str, Any], key: str) -> dict[str, str]:
    value = args.get(key) or {}
    if not isinstance(value, dict):
        raise CommandError("invalid", f"argument {key!r} must be an object")
    return {str(k): str(v) for k, v in value.items()}


def flag(args: dict[str, Any], key: str, default: bool = False) -> bool:
    value = args.get(key, default)
    return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")


async def run_command(handlers: Mapping[str, Handler], name: str, cmd: Command) -> Any:
    """The command's result, or CommandError saying how it failed."""
    handler = handlers.get(name)
    if handler is None:
        raise CommandError("unknown_command", f"no node command {name!r}")
    try:
        return await handler(cmd)
    except (ImageNotFound, NotFound, UnknownBase) as exc:
        raise CommandError("not_found", str(exc)) from None
    except (ImageInUse, Conflict) as exc:
        raise CommandError("conflict", str(exc)) from None
    except NotReady as exc:
        kind: Failure = "not_ready_in_time" if exc.timed_out else "not_ready"
        raise CommandError(kind, f"the environment is not ready: {exc}") from None
    except UnsafeArchive as exc:
        raise CommandError("unsafe_archive", str(exc)) from None
    except Unauthorized as exc:
        raise CommandError("unauthorized", str(exc)) from None
    except NotInRegistry as exc:
        raise CommandError("not_found", str(exc)) from None
    except RegistryError as exc:
        raise CommandError("registry", str(exc)) from None
    except (InvalidOption, InvalidSpec, InvalidReference, BuildError, ImageError,
            ContainerError) as exc:  # fmt: skip
        raise CommandError("invalid", str(exc)) from None


class CommandServer:
    """Takes this node's commands and answers them (see the module's docstring)."""

    def __init__(
        self, redis: aioredis.Redis, node_id: str, handlers: Mapping[str, Handler],
        stopping: asyncio.Event,
    ) -> None:  # fmt: skip
        self.redis, self.node_id, self.handlers = redis, node_id, handlers
        self.stopping = stopping
        self.running: set[asyncio.Task[None]] = set()

    async def open(self) -> None:
        for key in (keys.COMMANDS, keys.node_commands_key(self.node_id)):
            with contextlib.suppress(aioredis.ResponseError):  # BUSYGROUP: it exists
                await self.redis.xgroup_create(key, keys.GROUP, id="0", mkstream=True)

    async def read_once(self) -> None:
        """Take node commands (shared and our own) and run each in its own task."""
        streams = {keys.COMMANDS: ">", keys.node_commands_key(self.node_id): ">"}
        batches = await self.redis.xreadgroup(
            keys.GROUP, self.node_id, streams, count=16, block=1000
        )
        for key, entries in batches or []:
            for entry_id, fields in entries:
                task = asyncio.create_task(self._answer(key, entry_id, fields))
                self.running.add(task)
                task.add_done_callback(self.running.discard)

    async def finish(self) -> None:
        """Commands already taken are finished and answered."""
        if self.running:
            await asyncio.gather(*self.running, return_exceptions=True)

    async def _answer(self, key: bytes, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        req = CommandRequest.from_fields(fields)
        if time.time() > req.deadline:
            result = CallResult.failure(req.id, 0, "timeout", f"{req.name}: the deadline passed")
        else:
            result = await self._run(req)
        await self.redis.xadd(req.reply_to, result.to_fields(), maxlen=keys.REPLY_MAXLEN)
        await self.redis.xack(key, keys.GROUP, entry_id)
        await self.redis.xdel(key, entry_id)

    async def _run(self, req: CommandRequest) -> CallResult:
        lines: asyncio.Queue[str | None] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        pump = asyncio.create_task(self._pump_progress(req.id, lines))
        streamed = False  # whether anything went to the progress stream

        def progress(line: str) -> None:
            nonlocal streamed
            streamed = True
            loop.call_soon_threadsafe(lines.put_nowait, line)

        async def send(chunk: bytes, stream: str = "") -> None:
            nonlocal streamed
            streamed = True
            await self._send_output(req.id, chunk, stream, req.deadline)

        async def cancelled() -> bool:
            if self.stopping.is_set():
                return True
            return bool(await self.redis.exists(keys.cancel_key(req.id)))

        cmd = Command(req.args, req.blob, progress, send, cancelled, Input(self.redis, req.id))
        try:
            value = await run_command(self.handlers, req.name, cmd)
            body = json.dumps(value).encode()
            result = CallResult(req.id, 200, (("content-type", "application/json"),), body)
        except CommandError as exc:
            result = CallResult.failure(req.id, 0, exc.error, exc.message)
        except Exception as exc:  # a bug: answer it rather than leave the caller waiting
            log.exception("node command %s failed", req.name)
            result = CallResult.failure(req.id, 0, "internal", f"{req.name}: {exc!r}")
        finally:
            # After the lines already handed over (call_soon_threadsafe queues them): put
            # at once, the end overtook the last ones, which were lost.
            loop.call_soon(lines.put_nowait, None)
            await pump
        if streamed:  # its reader stops at this, rather than waiting for more
            with contextlib.suppress(aioredis.RedisError):
                await self._progress_entry(req.id, {"end": b"1"})
        return result

    async def _pump_progress(self, command_id: str, lines: asyncio.Queue[str | None]) -> None:
        """Forward a command's progress lines to its progress stream, in order."""
        while (line := await lines.get()) is not None:
            with contextlib.suppress(aioredis.RedisError):  # progress is best effort
                await self._progress_entry(command_id, {"line": line}, maxlen=10_000)

    async def _send_output(
        self, command_id: str, chunk: bytes, stream: str, deadline: float
    ) -> None:
        """Append a chunk of output, waiting while the reader is behind (it deletes what
        it took), so that an archive never sits in Redis whole."""
        key = keys.progress_key(command_id)
        while await self.redis.xlen(key) >= keys.OUTPUT_WINDOW:
            if time.time() > deadline:
                raise CommandError("timeout", "nobody read the output before the deadline")
            await asyncio.sleep(0.01)
        await self._progress_entry(command_id, {"data": chunk, "stream": stream})

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


class Input:
    """A command's input as its asker sends it (``PoolClient.command(input=...)``): each
    call the next chunk, waiting for it; b"" at its end. What was read is deleted, which
    lets the asker send more."""

    def __init__(self, redis: aioredis.Redis, command_id: str) -> None:
        self.redis, self.key = redis, keys.input_key(command_id)
        self.cursor: bytes | str = "0-0"
        self.ended = False

    async def __call__(self) -> bytes:
        while not self.ended:
            found = await self.redis.xread({self.key: self.cursor}, block=1000, count=1)
            for _, entries in found or []:
                for entry_id, fields in entries:
                    self.cursor = entry_id
                    await self.redis.xdel(self.key, entry_id)
                    if b"eof" in fields:
                        self.ended = True
                        return b""
                    return bytes(fields.get(b"data", b""))
        return b""
