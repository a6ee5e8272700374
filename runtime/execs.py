"""A command run in a running container (``docker exec``): the container's own process
spec with another command, env, user or directory, given to ``runc exec``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import subprocess
from collections.abc import AsyncIterator, Sequence
from typing import Any

from runtime.errors import InvalidOption
from runtime.records import ContainerPaths, ContainerRecord, write_private
from runtime.rootdir import RootDir
from runtime.runc import Runc
from runtime.users import resolve_user


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
    if not argv:
        raise InvalidOption("command", "", "exec needs a command")
    process: dict[str, Any] = json.loads((paths.bundle / "config.json").read_text())["process"]
    process["args"] = list(argv)
    process["env"] = [*process["env"], *env]
    if workdir:
        process["cwd"] = workdir
    if user:
        with RootDir(paths.rootfs) as image_root:  # the container's files, never the host's
            u = resolve_user(
                user, image_root.read_text("/etc/passwd"), image_root.read_text("/etc/group")
            )
        process["user"] = {"uid": u.uid, "gid": u.gid}
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
