"""``docker exec`` on a node: a command run in a running container.

An exec is created, then started, then inspected for its exit code, as in
Docker; between those steps its record lives in Redis (``exec:<id>``, kept an hour
after it ends), so any gateway can start or inspect it and knows which node has
its container. Its output goes back tagged with its stream (``stdout``,
``stderr``) while it runs; its stdin, when attached, is the whole stdin the client
sent (the gateway reads it to the end first, which suits ``echo x | docker exec
-i c cmd``, not an interactive shell).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
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
    if body.get("Tty"):
        raise CommandError("not_implemented", "exec with a TTY (-t) is not supported")
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
    return {
        "cmd": argv, "env": env, "user": str(body.get("User") or ""),
        "workdir": str(body.get("WorkingDir") or ""),
        "stdin": bool(body.get("AttachStdin")), "stdout": bool(body.get("AttachStdout", True)),
        "stderr": bool(body.get("AttachStderr", True)),
    }  # fmt: skip


class ExecCommands:
    def __init__(
        self, runtime: Runtime, redis: aioredis.Redis, node_id: str, supervisor: Supervisor
    ) -> None:
        self.runtime, self.redis, self.node_id = runtime, redis, node_id
        self.supervisor = supervisor

    @property
    def commands(self) -> dict[str, Handler]:
        return {"exec.create": self.create, "exec.start": self.start}

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
        stdin = cmd.blob if config["stdin"] else None

        async def pump(reader: asyncio.StreamReader | None, stream: str) -> None:
            assert reader is not None
            while chunk := await reader.read(65536):
                if attached and config[stream]:
                    await cmd.send(chunk, stream)

        async with self.runtime.exec_process(
            state["container"], config["cmd"], env=config["env"], user=config["user"],
            workdir=config["workdir"], stdin=stdin is not None,
        ) as proc:  # fmt: skip
            if attached:
                await cmd.send(b"", "stdout")  # started: the response can begin
            if proc.stdin is not None:
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    proc.stdin.write(stdin or b"")
                    await proc.stdin.drain()
                proc.stdin.close()
            await asyncio.gather(pump(proc.stdout, "stdout"), pump(proc.stderr, "stderr"))
            code = await proc.wait()
        return code

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
