"""A container's output and input on a node: its log (``docker logs``), an attached
client (``docker attach``, ``run``, ``start -a``) and its terminal's size.

A log goes back through the command's output channel as JSON lines (stream ``log``,
or ``tty-log`` for a terminal's), at the pace the client reads it; a follow ends when
the container exits, when the client goes away, or when the node stops. An attach to a
container with a terminal or an open stdin goes through conmon's attach socket: what
it shows as it comes, and what the client types (the command's input) into it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pool.commands import Command, CommandError, Handler, flag, required
from pool.commands.containers import until_cancelled
from pool.supervisor import Supervisor
from runtime.engine import Runtime
from runtime.logs import LogLine
from runtime.monitor import ATTACH_BUFFER, ATTACH_STDERR
from runtime.records import ContainerRecord

POLL = 0.05  # seconds between reads of a followed log


def log_json(lines: Iterable[LogLine]) -> bytes:
    """Log lines as the gateway reads them: one JSON object a line."""
    return b"".join(
        json.dumps({"stream": ln.stream, "time": ln.timestamp, "text": ln.text}).encode() + b"\n"
        for ln in lines
    )


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _size_args(cmd: Command) -> tuple[int, int]:
    try:
        rows, columns = int(cmd.args.get("h", 0)), int(cmd.args.get("w", 0))
    except (TypeError, ValueError):
        raise CommandError("invalid", "a size is whole rows (h) and columns (w)") from None
    return rows, columns


class AttachCommands:
    def __init__(self, runtime: Runtime, supervisor: Supervisor) -> None:
        self.runtime, self.supervisor = runtime, supervisor

    @property
    def commands(self) -> dict[str, Handler]:
        return {"container.logs": self.logs, "container.attach": self.attach,
                "container.resize": self.resize}  # fmt: skip

    def _record(self, cmd: Command) -> ContainerRecord:
        return self.runtime.get(required(cmd.args, "id"))

    async def _follow(
        self, cmd: Command, record: ContainerRecord, offset: int, *, streams: set[str],
        follow: bool,
    ) -> None:  # fmt: skip
        """Send the log from byte ``offset`` on; with ``follow``, until the container ends.
        A terminal's log goes as ``tty-log``: what it showed, never split by stream."""
        kind = "tty-log" if record.options.tty else "log"
        cid = record.id
        ended = asyncio.ensure_future(asyncio.shield(self.runtime.wait(cid))) if follow else None
        try:
            while True:
                finished = ended is None or ended.done()  # read once more after the end
                lines, offset = self.runtime.logs_from(cid, offset)
                data = log_json(ln for ln in lines if ln.stream in streams)
                if data:
                    await cmd.send(data, kind)
                if finished:
                    return
                if not data:
                    if await cmd.cancelled():
                        return
                    # New lines are polled for; the end is not: it wakes this at once.
                    assert ended is not None  # not following: returned above
                    await asyncio.wait([ended], timeout=POLL)
        finally:
            if ended is not None and not ended.done():
                ended.cancel()

    @staticmethod
    def _streams(cmd: Command) -> set[str]:
        return {s for s in ("stdout", "stderr") if flag(cmd.args, s)}

    async def logs(self, cmd: Command) -> Any:
        record = self._record(cmd)
        streams = self._streams(cmd)
        tail = str(cmd.args.get("tail") or "all")
        since = float(cmd.args.get("since") or 0)
        until = float(cmd.args.get("until") or 0)
        if tail != "all" and not tail.isdigit():
            raise CommandError("invalid", f"invalid tail {tail!r}: a number or all")
        await cmd.send(b"", "log")  # found: the response can start
        lines = [ln for ln in self.runtime.logs(record.id)
                 if ln.stream in streams and ln.time.timestamp() >= since
                 and (not until or ln.time.timestamp() <= until)]  # fmt: skip
        if tail != "all":
            lines = lines[-int(tail) :] if int(tail) else []
        if data := log_json(lines):
            await cmd.send(data, "tty-log" if record.options.tty else "log")
        if flag(cmd.args, "follow") and record.status in ("created", "running", "paused"):
            size = _size(self.runtime.paths(record.id).log)
            await self._follow(cmd, record, size, streams=streams, follow=True)
        return {}

    async def attach(self, cmd: Command) -> Any:
        """The container's output from now (all of it with ``logs``) until it exits; with
        ``stdin`` (a container made with one) what the client sends goes to it.

        A container with a terminal or a stdin is attached through conmon's attach socket
        (its output as it comes, ``tty`` when it is a terminal's); any other one follows
        its log. The first chunk sent, empty, says which and that the client may start
        the container now."""
        record = self._record(cmd)
        if record.stdio != "logs":
            raise CommandError("conflict", f"container {record.name} has no attachable output")
        stdin = flag(cmd.args, "stdin")
        if stdin and not record.options.stdin_open:
            raise CommandError("conflict", f"container {record.name} was not created with "
                               "an open stdin (docker run -i)")  # fmt: skip
        readers = self.supervisor.readers
        readers[record.id] += 1
        try:
            if record.options.tty or stdin:
                await self._attach_live(cmd, record, stdin)
            else:
                offset = (
                    0
                    if record.status == "created" or flag(cmd.args, "logs")
                    else _size(self.runtime.paths(record.id).log)
                )
                await cmd.send(b"", "log")  # attached: the client may start the container now
                await self._follow(cmd, record, offset, streams=self._streams(cmd),
                                   follow=flag(cmd.args, "stream", True))  # fmt: skip
        finally:
            readers[record.id] -= 1
            if not readers[record.id]:
                del readers[record.id]
                self.supervisor.changed("detach", record)  # its --rm removal may go on
        return {}

    async def _attach_live(self, cmd: Command, record: ContainerRecord, stdin: bool) -> None:
        tty = record.options.tty
        streams = self._streams(cmd)
        if flag(cmd.args, "logs"):
            lines = [ln for ln in self.runtime.logs(record.id) if ln.stream in streams]
            if data := log_json(lines):
                await cmd.send(b"", "tty" if tty else "stdout")
                await cmd.send(data, "tty-log" if tty else "log")
        if not flag(cmd.args, "stream", True):
            await cmd.send(b"", "tty" if tty else "stdout")
            return
        if record.status == "exited":  # docker start -a: attached first, then started
            created, connected = self.supervisor.attach_when_created(record.id)
            await cmd.send(b"", "tty" if tty else "stdout")
            try:
                await until_cancelled(cmd, created.wait())
                sock = self.runtime.attach_socket(record.id)
            finally:
                if not connected.done():
                    connected.set_result(None)
        else:
            sock = self.runtime.attach_socket(record.id)
        loop = asyncio.get_running_loop()
        sock.setblocking(False)

        async def pump_input() -> None:
            while chunk := await cmd.receive():
                await loop.sock_sendall(sock, chunk)
            if not tty:  # the client's stdin ended: so does the container's (stdin_once)
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_WR)

        feeding = asyncio.create_task(pump_input()) if stdin else None
        try:
            if record.status != "exited":
                await cmd.send(b"", "tty" if tty else "stdout")  # attached: start it now
            while True:
                reading = asyncio.ensure_future(loop.sock_recv(sock, ATTACH_BUFFER))
                while not reading.done():
                    await asyncio.wait([reading], timeout=0.5)
                    if not reading.done() and await cmd.cancelled():
                        reading.cancel()
                        return
                data = reading.result()
                if not data:
                    return  # the container ended (conmon closes its socket)
                kind = "tty" if tty else "stderr" if data[0] == ATTACH_STDERR else "stdout"
                if tty or kind in streams:
                    await cmd.send(data[1:], kind)
        finally:
            if feeding is not None:
                feeding.cancel()
                with contextlib.suppress(asyncio.CancelledError, OSError):
                    await feeding
            sock.close()

    async def resize(self, cmd: Command) -> Any:
        rows, columns = _size_args(cmd)
        self.runtime.resize(required(cmd.args, "id"), rows, columns)
        return {}

