"""``docker exec`` on a node: a command run in a running container.

An exec is created, then started, then inspected for its exit code, as in
Docker; between those steps its record lives in Redis (``exec:<id>``, kept an hour
after it ends), so any gateway can start or inspect it and knows which node has
its container. Its output goes back tagged with its stream (``stdout``,
``stderr``, or ``tty`` for an exec in a terminal) while it runs; its stdin, when
attached, comes as the client types it (the command's input). A terminal's size
is set when it starts and on ``exec.resize``, which its node answers from the
terminals of the execs it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import secrets
import select
import struct
import termios
from typing import Any

import redis.asyncio as aioredis

from pool.commands import Command, CommandError, Handler, required
from pool.contract import keys
from pool.supervisor import Supervisor
from runtime.engine import Runtime
from runtime.errors import Conflict


def exec_config(body: Any) -> dict[str, Any]:
    """What to run, from the exec's create body (checked here, on the node that runs it)."""
    if not isinstance(body, dict):
        raise CommandError("invalid", "the exec body must be a JSON object")
    if body.get("Privileged"):
        raise CommandError("not_implemented", "privileged exec is not offered")
    argv = body.get("Cmd")
    if isinstance(argv, str):
        argv = [argv]
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise CommandError("invalid", f"Cmd must be a non-empty list, not {argv!r}")
    env = body.get("Env") or []
    if not isinstance(env, list) or not all(isinstance(e, str) for e in env):
        raise CommandError("invalid", "Env must be a list of KEY=VALUE strings")
    size = body.get("ConsoleSize") or [0, 0]
    if (not isinstance(size, list) or len(size) != 2
            or not all(isinstance(n, int) and 0 <= n <= 1000 for n in size)):  # fmt: skip
        raise CommandError("invalid", f"ConsoleSize must be [rows, columns], not {size!r}")
    return {
        "cmd": argv, "env": env, "user": str(body.get("User") or ""),
        "workdir": str(body.get("WorkingDir") or ""), "tty": bool(body.get("Tty")),
        "size": size, "detach_keys": str(body.get("DetachKeys") or ""),
        "stdin": bool(body.get("AttachStdin")), "stdout": bool(body.get("AttachStdout", True)),
        "stderr": bool(body.get("AttachStderr", True)),
    }  # fmt: skip


class ExecCommands:
    def __init__(
        self, runtime: Runtime, redis: aioredis.Redis, node_id: str, supervisor: Supervisor
    ) -> None:
        self.runtime, self.redis, self.node_id = runtime, redis, node_id
        self.supervisor = supervisor
        self.terminals: dict[str, int] = {}  # exec id -> its terminal's master, while it runs
        self.sizes: dict[str, tuple[int, int]] = {}  # asked for before the exec started

    @property
    def commands(self) -> dict[str, Handler]:
        return {"exec.create": self.create, "exec.start": self.start,
                "exec.resize": self.resize}  # fmt: skip

    async def resize(self, cmd: Command) -> Any:
        exec_id = required(cmd.args, "id")
        try:
            rows, columns = int(cmd.args.get("h", 0)), int(cmd.args.get("w", 0))
        except (TypeError, ValueError):
            raise CommandError("invalid", "a size is whole rows (h) and columns (w)") from None
        if not (0 < rows <= 1000 and 0 < columns <= 1000):
            raise CommandError("invalid", f"invalid size {rows}x{columns}: 1 to 1000 each")
        master = self.terminals.get(exec_id)
        if master is None:
            raw = await self.redis.get(keys.exec_key(exec_id))
            if raw is None:
                raise CommandError("not_found", f"no such exec instance: {exec_id}")
            if not json.loads(raw)["config"].get("tty"):
                raise CommandError("conflict", f"exec {exec_id[:12]} has no terminal")
            self.sizes[exec_id] = (rows, columns)  # for its start
            return {}
        set_size(master, rows, columns)
        return {}

    async def _save(self, state: dict[str, Any], ttl: int | None = None) -> None:
        await self.redis.set(keys.exec_key(state["id"]), json.dumps(state), ex=ttl)

    async def create(self, cmd: Command) -> Any:
        record = self.runtime.get(required(cmd.args, "container"))
        if record.status != "running":
            raise Conflict(f"container {record.name} is not running")
        state = {
            "id": secrets.token_hex(32), "container": record.id, "running": False,
            "exit_code": None, "pid": 0, "node": self.node_id,
            "config": exec_config(cmd.args.get("body")), "started": False,
        }  # fmt: skip
        await self._save(state, keys.EXEC_TTL * 24)  # unstarted execs expire too
        return {"id": state["id"]}

    async def _run(self, state: dict[str, Any], cmd: Command, attached: bool) -> int:
        config = state["config"]
        if config.get("tty"):
            return await self._run_terminal(state, cmd, attached)

        async def pump(reader: asyncio.StreamReader | None, stream: str) -> None:
            assert reader is not None
            while chunk := await reader.read(65536):
                if attached and config[stream]:
                    await cmd.send(chunk, stream)

        async def feed(writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                while chunk := await cmd.receive():
                    writer.write(chunk)
                    await writer.drain()
            writer.close()

        stdin = attached and config["stdin"]
        async with self.runtime.exec_process(
            state["container"], config["cmd"], env=config["env"], user=config["user"],
            workdir=config["workdir"], stdin=stdin,
        ) as proc:  # fmt: skip
            if attached:
                await cmd.send(b"", "stdout")  # started: the response can begin
            feeding = asyncio.create_task(feed(proc.stdin)) if proc.stdin is not None else None
            try:
                await asyncio.gather(pump(proc.stdout, "stdout"), pump(proc.stderr, "stderr"))
                code = await proc.wait()
            finally:
                if feeding is not None:
                    feeding.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await feeding
        return code

    async def _run_terminal(self, state: dict[str, Any], cmd: Command, attached: bool) -> int:
        """The exec in a terminal of its own: what it shows goes out as ``tty``, what the
        client types goes in, until it exits."""
        config, exec_id = state["config"], state["id"]
        size = self.sizes.pop(exec_id, None) or tuple(config["size"])
        pid, master = await self.runtime.exec_terminal(
            state["container"], config["cmd"], env=config["env"], user=config["user"],
            workdir=config["workdir"], size=(int(size[0]), int(size[1])),
        )  # fmt: skip
        self.terminals[exec_id] = master
        state["pid"] = pid
        await self._save(state)
        loop = asyncio.get_running_loop()
        output: asyncio.Queue[bytes] = asyncio.Queue(maxsize=64)

        def readable() -> None:
            if output.full():  # the client is behind: read on when it catches up
                loop.remove_reader(master)
                loop.call_later(0.05, resume)
                return
            try:
                data = os.read(master, 65536)
            except BlockingIOError:
                return
            except OSError:  # EIO: the last process on the terminal's other side is gone
                data = b""
            output.put_nowait(data)
            if not data:
                loop.remove_reader(master)

        closed = False

        def resume() -> None:
            if not closed:  # the fd's number may be another file's once it is closed
                loop.add_reader(master, readable)

        os.set_blocking(master, False)

        async def feed() -> None:
            while chunk := await cmd.receive():
                with contextlib.suppress(BlockingIOError):
                    await asyncio.to_thread(_write_all, master, chunk)

        feeding = asyncio.create_task(feed()) if config["stdin"] and attached else None
        try:
            loop.add_reader(master, readable)
            if attached:
                await cmd.send(b"", "tty")
            while data := await output.get():
                if attached:
                    await cmd.send(data, "tty")
            return await self.runtime.wait_pid(pid)
        finally:
            with contextlib.suppress(ValueError, OSError):
                loop.remove_reader(master)
            if feeding is not None:
                feeding.cancel()
                with contextlib.suppress(asyncio.CancelledError, OSError):
                    await feeding
            self.terminals.pop(exec_id, None)
            closed = True
            os.close(master)

    async def start(self, cmd: Command) -> Any:
        exec_id = required(cmd.args, "id")
        raw = await self.redis.get(keys.exec_key(exec_id))
        if raw is None:
            raise CommandError("not_found", f"no such exec instance: {exec_id}")
        state = json.loads(raw)
        if state["started"]:
            raise CommandError("conflict", f"exec {exec_id[:12]} has already been started")
        state.update(started=True, running=True)
        await self._save(state)
        detach = bool(cmd.args.get("detach"))
        code = -1
        try:
            if detach:
                self.supervisor.detached(self._finish(state, cmd))
                return {}
            code = await self._run(state, cmd, attached=True)
        finally:
            if not detach:
                state.update(running=False, exit_code=code)
                await self._save(state, keys.EXEC_TTL)
        return {"exit_code": code}

    async def _finish(self, state: dict[str, Any], cmd: Command) -> None:
        code = -1
        try:
            code = await self._run(state, cmd, attached=False)
        finally:
            state.update(running=False, exit_code=code)
            await self._save(state, keys.EXEC_TTL)


def _write_all(fd: int, data: bytes) -> None:
    """All of ``data`` to a terminal's master (blocking briefly when its buffer is full)."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            select.select([], [fd], [], 1.0)


def set_size(fd: int, rows: int, columns: int) -> None:
    """Set a terminal's window size (TIOCSWINSZ): its process gets SIGWINCH."""
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
