"""``docker exec`` on a node: a command run in a running container.

An exec is created, then started, then inspected for its exit code, as in
Docker; between those steps it lives in Redis (``exec:<id>``, kept an hour
after it ends), so any gateway can start or inspect it and knows which node
has its container. Its output goes back as multiplexed frames while it runs;
its stdin, when attached, is the whole stdin the client sent (the gateway reads
it to the end first, which suits ``echo x | docker exec -i c cmd``, not an
interactive shell).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from typing import TYPE_CHECKING, Any

from pool import docker
from pool.command import Command, CommandError, Handler, required
from pool.contract import keys
from runtime.errors import Conflict

if TYPE_CHECKING:
    from pool.manager import PoolManager


def _config(body: Any) -> dict[str, Any]:
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
        "Cmd": argv, "Env": env, "User": str(body.get("User") or ""),
        "WorkingDir": str(body.get("WorkingDir") or ""),
        "AttachStdin": bool(body.get("AttachStdin")),
        "AttachStdout": bool(body.get("AttachStdout", True)),
        "AttachStderr": bool(body.get("AttachStderr", True)),
    }  # fmt: skip


async def _save(node: PoolManager, state: dict[str, Any], ttl: int | None = None) -> None:
    await node.redis.set(keys.exec_key(state["ID"]), json.dumps(state), ex=ttl)


async def create(node: PoolManager, cmd: Command) -> Any:
    record = node.runtime.get(required(cmd.args, "container"))
    if record.status != "running":
        raise Conflict(f"container {record.name} is not running")
    config = _config(cmd.args.get("body"))
    exec_id = secrets.token_hex(32)
    state = {
        "ID": exec_id, "ContainerID": record.id, "Running": False, "ExitCode": None, "Pid": 0,
        "OpenStdin": config["AttachStdin"], "OpenStdout": config["AttachStdout"],
        "OpenStderr": config["AttachStderr"], "CanRemove": False, "DetachKeys": "",
        "ProcessConfig": {"tty": False, "entrypoint": config["Cmd"][0],
                          "arguments": config["Cmd"][1:], "privileged": False,
                          "user": config["User"]},
        "node": node.node_id, "config": config, "started": False,
    }  # fmt: skip
    await _save(node, state, keys.EXEC_TTL * 24)  # unstarted execs expire too
    return {"Id": exec_id}


async def _run(node: PoolManager, state: dict[str, Any], cmd: Command, attached: bool) -> int:
    config = state["config"]
    stdin = cmd.blob if config["AttachStdin"] else None

    async def pump(reader: asyncio.StreamReader | None, stream: int, wanted: bool) -> None:
        assert reader is not None
        while chunk := await reader.read(65536):
            if attached and wanted:
                await cmd.send(docker.frame(stream, chunk))

    async with node.runtime.exec_process(
        state["ContainerID"], config["Cmd"], env=config["Env"], user=config["User"],
        workdir=config["WorkingDir"], stdin=stdin is not None,
    ) as proc:  # fmt: skip
        if attached:
            await cmd.send(b"")  # started: the response can begin
        if proc.stdin is not None:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                proc.stdin.write(stdin or b"")
                await proc.stdin.drain()
            proc.stdin.close()
        await asyncio.gather(
            pump(proc.stdout, docker.STDOUT, config["AttachStdout"]),
            pump(proc.stderr, docker.STDERR, config["AttachStderr"]),
        )
        code = await proc.wait()
    return code


async def start(node: PoolManager, cmd: Command) -> Any:
    exec_id = required(cmd.args, "id")
    raw = await node.redis.get(keys.exec_key(exec_id))
    if raw is None:
        raise CommandError("not_found", f"no such exec instance: {exec_id}")
    state = json.loads(raw)
    if state["started"]:
        raise CommandError("conflict", f"exec {exec_id[:12]} has already been started")
    state.update(started=True, Running=True)
    await _save(node, state)
    detach = bool(cmd.args.get("detach"))
    code = -1
    try:
        if detach:
            node.containers.detached(_finish(node, state, cmd))
            return {}
        code = await _run(node, state, cmd, attached=True)
    finally:
        if not detach:
            state.update(Running=False, ExitCode=code)
            await _save(node, state, keys.EXEC_TTL)
    return {"ExitCode": code}


async def _finish(node: PoolManager, state: dict[str, Any], cmd: Command) -> None:
    code = -1
    try:
        code = await _run(node, state, cmd, attached=False)
    finally:
        state.update(Running=False, ExitCode=code)
        await _save(node, state, keys.EXEC_TTL)


COMMANDS: dict[str, Handler] = {
    "exec.create": create,
    "exec.start": start,
}
