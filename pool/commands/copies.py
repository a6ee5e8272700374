"""``docker cp`` on a node: a container's files as a tar, out and in.

Paths are resolved inside the container (runtime/files.py, on runtime/rootdir.py),
so neither a path given by the client nor a symlink made by the container leads
outside it. A tar coming in is checked whole before anything is written, and is
written without following any link; a refused member fails the copy, naming it.
"""

from __future__ import annotations

import asyncio
import io
from typing import Any, BinaryIO, cast

from pool.commands import OUTPUT_CHUNK, Command, CommandError, Handler, required
from runtime.engine import Runtime
from runtime.files import extract_into, path_stat, write_tar


class _Pipe:
    """A writable file whose bytes go to the command's output, from the tar thread."""

    def __init__(self, cmd: Command, loop: asyncio.AbstractEventLoop) -> None:
        self._cmd, self._loop = cmd, loop
        self._buffer = bytearray()

    def write(self, data: bytes) -> int:
        self._buffer += data
        if len(self._buffer) >= OUTPUT_CHUNK:
            self.flush()
        return len(data)

    def flush(self) -> None:
        if self._buffer:
            chunk, self._buffer = bytes(self._buffer), bytearray()
            asyncio.run_coroutine_threadsafe(_sent(self._cmd, chunk), self._loop).result()


async def _sent(cmd: Command, chunk: bytes) -> None:
    await cmd.send(chunk, "")


class CopyCommands:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    @property
    def commands(self) -> dict[str, Handler]:
        return {"archive.stat": self.stat, "archive.get": self.get, "archive.put": self.put}

    async def stat(self, cmd: Command) -> Any:
        with self.runtime.files(required(cmd.args, "id")) as fs:
            return await asyncio.to_thread(path_stat, fs, required(cmd.args, "path"))

    async def get(self, cmd: Command) -> Any:
        path = required(cmd.args, "path")
        with self.runtime.files(required(cmd.args, "id")) as fs:
            info = await asyncio.to_thread(path_stat, fs, path)  # a missing path fails first
            pipe = _Pipe(cmd, asyncio.get_running_loop())

            def run() -> None:
                write_tar(fs, path, cast(BinaryIO, pipe))
                pipe.flush()

            await asyncio.to_thread(run)
        return info

    async def put(self, cmd: Command) -> Any:
        path = required(cmd.args, "path")
        if not cmd.blob:
            raise CommandError("invalid", "the archive (a tar) is the request body")
        with self.runtime.files(required(cmd.args, "id")) as fs:
            written = await asyncio.to_thread(extract_into, fs, path, io.BytesIO(cmd.blob))
        return {"written": len(written)}
