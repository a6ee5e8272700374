"""A command run in a running container (``docker exec``): the container's own process
spec with another command, env, user or directory, given to ``runc exec``.

With pipes (``exec_process``) runc stays its parent and exits with its code. With a
terminal (``exec_terminal``) runc runs it detached and hands the terminal's master
to a socket of ours (``--console-socket``); the process is then re-parented to us
(we are the containers' subreaper), which is how its exit code is learnt.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import socket
import struct
import subprocess
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from runtime.errors import InvalidOption, RuncError
from runtime.records import ContainerPaths, ContainerRecord, write_private
from runtime.rootdir import RootDir
from runtime.runc import Runc
from runtime.users import resolve_user


def process_spec(
    record: ContainerRecord, paths: ContainerPaths, argv: Sequence[str], *,
    env: Sequence[str] = (), user: str = "", workdir: str = "",
    terminal: tuple[int, int] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The container's own process spec with another command (in a terminal of ``terminal``
    rows and columns when given)."""
    if not argv:
        raise InvalidOption("command", "", "exec needs a command")
    process: dict[str, Any] = json.loads((paths.bundle / "config.json").read_text())["process"]
    process["args"] = list(argv)
    process["env"] = [*process["env"], *env]
    process["terminal"] = terminal is not None
    process.pop("consoleSize", None)
    if terminal is not None and all(terminal):
        process["consoleSize"] = {"height": terminal[0], "width": terminal[1]}
    if workdir:
        process["cwd"] = workdir
    if user:
        with RootDir(paths.rootfs) as image_root:  # the container's files, never the host's
            u = resolve_user(
                user, image_root.read_text("/etc/passwd"), image_root.read_text("/etc/group")
            )
        process["user"] = {"uid": u.uid, "gid": u.gid}
    return process


async def exec_terminal(
    runc: Runc, record: ContainerRecord, paths: ContainerPaths, consoles: Path,
    argv: Sequence[str], *, env: Sequence[str] = (), user: str = "", workdir: str = "",
    size: tuple[int, int] = (0, 0),
) -> tuple[int, int]:  # fmt: skip
    """A command running in container ``record`` in a pseudo-terminal of its own: its pid
    and the terminal's master fd (the caller closes it and reaps the pid)."""
    process = process_spec(record, paths, argv, env=env, user=user, workdir=workdir,
                           terminal=size)  # fmt: skip
    token = secrets.token_hex(6)
    spec = paths.root / f"exec-{token}.json"
    pid_file = paths.root / f"exec-{token}.pid"
    consoles.mkdir(mode=0o700, exist_ok=True)
    address = consoles / f"{token}.sock"  # short: a Unix socket's name has 108 bytes
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    write_private(spec, json.dumps(process), 0o600)
    try:
        listener.bind(str(address))
        listener.listen(1)
        listener.setblocking(False)
        loop = asyncio.get_running_loop()
        code, _, err = await runc.run_command(
            "exec", "--detach", "--tty", "--console-socket", str(address),
            "--pid-file", str(pid_file), "--process", str(spec), record.id,
        )  # fmt: skip
        if code != 0:
            raise RuncError(["runc", "exec", record.id], code, err)
        conn, _ = await asyncio.wait_for(loop.sock_accept(listener), 10)
        with conn:
            creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            _, uid, _ = struct.unpack("3i", creds)
            if uid != 0:  # only runc, run by us as root, hands us a terminal
                raise RuncError(["runc", "exec", record.id], 1, "a terminal from another user")
            _, fds, _, _ = socket.recv_fds(conn, 4096, 1)
        if not fds:
            raise RuncError(["runc", "exec", record.id], 1, "runc sent no terminal")
        return int(pid_file.read_text()), fds[0]
    finally:
        listener.close()
        address.unlink(missing_ok=True)
        spec.unlink(missing_ok=True)
        pid_file.unlink(missing_ok=True)


@contextlib.asynccontextmanager
async def exec_process(
    runc: Runc,
    record: ContainerRecord,
    paths: ContainerPaths,
    argv: Sequence[str],
    *,
    env: Sequence[str] = (),
    user: str = "",
    workdir: str = "",
    stdin: bool = False,
) -> AsyncIterator[asyncio.subprocess.Process]:
    """A command running in container ``record`` (the caller checked that it runs), its
    stdio as pipes (stdin only when asked for). Leaving the block kills what is left of it."""
    process = process_spec(record, paths, argv, env=env, user=user, workdir=workdir)
    spec = paths.root / f"exec-{secrets.token_hex(4)}.json"
    write_private(spec, json.dumps(process), 0o600)
    proc = None
    try:
        proc = await runc.exec(
            record.id, spec,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        yield proc
    finally:
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        spec.unlink(missing_ok=True)
