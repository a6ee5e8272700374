"""Function instances: one warm container, and how a call runs in it.

- ``http``: the container runs the function's HTTP server. It is started ahead
  and counts as warm once its port accepts connections. A call is an HTTP
  request to it over the bridge (keep-alive).
- ``stdio``: the container is made with ``runc create`` and waits at its first
  instruction; we hold its stdin, stdout and stderr pipes. A call starts it,
  writes the body to stdin, reads stdout to the end, and the exit code decides.

The deadline kills the container. An OOM kill, a crash (exit code or signal) or
a reply that is not HTTP answers 502 with the reason and the tail of stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import os
import select
import struct
import termios
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pool.contract.messages import CallRequest, CallResult
from pool.contract.specs import FunctionSpec
from pool.httpclient import Connections, ReplyError, ReplyTooLarge
from runtime.engine import Runtime, Stdio
from runtime.errors import ContainerError
from runtime.monitor import ExitStatus
from runtime.records import ContainerRecord
from runtime.spec import ImageConfig, RunOptions

HOP_HEADERS = {
    "connection", "keep-alive", "transfer-encoding", "te", "upgrade", "proxy-authorization",
    "proxy-authenticate", "trailer", "host", "content-length",
}  # fmt: skip
STDERR_TAIL = 2048
READY_TIMEOUT = 30.0
DEFAULT_RESPONSE_LIMIT = 6 << 20  # a function's reply body, as the gateway's request limit
STDERR_KEPT = 256 << 10  # of a stdio call's stderr: the end, for its log and its error
LOG_LINES_KEPT = 1000  # of one call's log lines, the last: what is published


class InstanceError(Exception):
    """An instance that could not be made ready (a cold start error)."""


@dataclass
class Instance:
    spec: FunctionSpec
    record: ContainerRecord
    source: Literal["pool", "cold"] = "pool"
    phases: dict[str, float] = field(default_factory=dict)
    calls: int = 0  # calls taken so far (max_invocations counts these)
    inflight: int = 0  # calls running now (at most the spec's concurrency)
    retired: bool = False  # a call on it failed: it takes no more and goes when idle
    last_used: float = field(default_factory=time.monotonic)
    stdin: int = -1
    stdout: int = -1
    stderr: int = -1
    logged: int = 0  # bytes of the container's log already published
    call_logs: list[tuple[str, str]] = field(default_factory=list)  # the last call's

    @property
    def id(self) -> str:
        return self.record.id

    def close_pipes(self) -> None:
        for name in ("stdin", "stdout", "stderr"):
            fd = getattr(self, name)
            if fd >= 0:
                os.close(fd)
                setattr(self, name, -1)


def run_options(spec: FunctionSpec, network: Literal["none", "bridge"]) -> RunOptions:
    return RunOptions(
        command=spec.command, env=spec.env, workdir=spec.workdir, user=spec.user,
        read_only=spec.read_only, memory=spec.memory, cpu_shares=spec.cpu_shares,
        pids_limit=spec.pids, network=network, isolated=True,
        labels={"scow.function": spec.name, "scow.role": "function"},
    )  # fmt: skip


async def make_instance(
    runtime: Runtime, spec: FunctionSpec, image: ImageConfig, layers: list[Path], image_ref: str,
    secrets: Mapping[str, bytes] | None = None,
) -> Instance:
    """A ready instance: created, and for http started and answering on its port."""
    started = time.perf_counter()
    if spec.protocol == "stdio":
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            record = await runtime.create(
                image, layers, run_options(spec, "none"), image=image_ref, stdio="pipes",
                pipes=Stdio(stdin=in_r, stdout=out_w, stderr=err_w), secrets=secrets,
            )  # fmt: skip
        except BaseException:
            for fd in (in_w, out_r, err_r):
                os.close(fd)
            raise
        finally:
            for fd in (in_r, out_w, err_w):
                os.close(fd)
        inst = Instance(spec, record, stdin=in_w, stdout=out_r, stderr=err_r)
        inst.phases = {**record.phases, "total": time.perf_counter() - started}
        return inst
    record = await runtime.create(
        image, layers, run_options(spec, "bridge"), image=image_ref, stdio="logs",
        secrets=secrets,
    )
    inst = Instance(spec, record)
    try:
        record = await runtime.start(record.id)
        inst.record = record
        clock = time.perf_counter()
        await _wait_port(runtime, record, spec.port)
        inst.phases = {**record.phases, "ready": time.perf_counter() - clock}
    except BaseException:
        await runtime.remove(record.id, force=True)
        raise
    inst.phases["total"] = time.perf_counter() - started
    return inst


async def _wait_port(runtime: Runtime, record: ContainerRecord, port: int) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    delay = 0.002
    while time.monotonic() < deadline:
        try:
            # Each probe is short: a lost SYN must not stall readiness for TCP's own
            # connect timeout (minutes), far past any call's deadline.
            _, writer = await asyncio.wait_for(asyncio.open_connection(record.ip, port), 0.5)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return
        except (OSError, TimeoutError):
            if runtime.get(record.id).status == "exited":
                tail = _log_tail(runtime, record.id)
                raise InstanceError(
                    f"the function exited before listening on {port}: {tail}"
                ) from None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)
    raise InstanceError(f"the function did not listen on port {port} within {READY_TIMEOUT:.0f}s")


async def _new_log_lines(runtime: Runtime, inst: Instance) -> list[tuple[str, str]]:
    """What the container logged since the last call (a throwaway one: all of it).

    What it wrote before its reply is in its log once conmon has taken it from the
    pipes: that is waited for (a few milliseconds at most). Lines written after the
    reply was sent are published with the next call, or not at all for a throwaway
    container.
    """
    record = inst.record
    deadline = time.monotonic() + LOG_DRAIN_TIMEOUT
    while not _log_drained(record.pid, record.monitor_pid) and time.monotonic() < deadline:
        await asyncio.sleep(0.001)
    new, inst.logged = runtime.logs_from(inst.id, inst.logged)
    return [(ln.stream, ln.text) for ln in new]


LOG_DRAIN_TIMEOUT = 0.05


def _log_drained(pid: int, monitor: int) -> bool:
    """Whether conmon has written to the log all that the container wrote: nothing is left
    in its stdout and stderr pipes (FIONREAD on them, reopened through /proc), and conmon
    sleeps, its write done."""
    for n in (1, 2):
        try:
            fd = os.open(f"/proc/{pid}/fd/{n}", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            return True  # gone, or not a pipe we may open: nothing to wait for
        try:
            pending = struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0" * 4))[0]
        except OSError:
            pending = 0
        finally:
            os.close(fd)
        if pending:
            return False
    try:
        with open(f"/proc/{monitor}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return True
    return stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] != b"R"


def _log_tail(runtime: Runtime, cid: str) -> str:
    lines = runtime.logs(cid, stdout=False, tail=20)
    return "\n".join(ln.text for ln in lines)[-STDERR_TAIL:]


async def invoke(
    runtime: Runtime, http: Connections, inst: Instance, req: CallRequest,
    limit: int = DEFAULT_RESPONSE_LIMIT,
) -> CallResult:
    """Run ``req`` in ``inst`` before the request's deadline; a reply over ``limit`` bytes
    is a 502 that names the limit, and the function's output is not read past it."""
    remaining = req.deadline - time.time()
    if remaining <= 0:
        return CallResult.failure(
            req.id, 504, "timeout", "the deadline passed in the queue", part="queue"
        )
    inst.last_used = time.monotonic()
    inst.call_logs = []
    try:
        if inst.spec.protocol == "stdio":
            return await asyncio.wait_for(_stdio(runtime, inst, req, limit), remaining)
        result = await asyncio.wait_for(_http(runtime, http, inst, req, limit), remaining)
        inst.call_logs = (await _new_log_lines(runtime, inst))[-LOG_LINES_KEPT:]
        return result
    except TimeoutError:
        with contextlib.suppress(ContainerError):  # it may have exited meanwhile
            await runtime.kill(inst.id, "KILL")
        return CallResult.failure(
            req.id, 504, "timeout",
            f"the function ran past its timeout ({inst.spec.timeout:g}s) and was killed",
            part="run",
        )  # fmt: skip


def too_large(req: CallRequest, limit: int) -> CallResult:
    return CallResult.failure(
        req.id, 502, "response_too_large",
        f"the function's reply passed the response limit of {limit} bytes",
    )  # fmt: skip


async def _stdio(
    runtime: Runtime, inst: Instance, req: CallRequest, limit: int
) -> CallResult:
    await runtime.start(inst.id)
    # Both outputs are read by one thread of the node's own pool for calls (a read
    # returns as soon as the data is there, whatever the event loop is doing); the
    # input is written by the event loop. The thread owns the two fds from here on and
    # closes them at their end, which comes by the container's exit at the latest.
    out_fd, err_fd = inst.stdout, inst.stderr
    inst.stdout = inst.stderr = -1
    reading = asyncio.get_running_loop().run_in_executor(
        _readers(), _read_both, out_fd, err_fd, limit
    )
    await _feed(inst, req.body)
    out, err, over = await reading
    lines = err.decode(errors="replace").splitlines()[-LOG_LINES_KEPT:]
    inst.call_logs = [("stderr", line) for line in lines]
    if over:  # its stdout is closed: it dies of EPIPE, or of this
        with contextlib.suppress(ContainerError):  # it may have exited meanwhile
            await runtime.kill(inst.id, "KILL")
        await runtime.wait(inst.id)
        return too_large(req, limit)
    status = await runtime.wait(inst.id)
    if status.code == 0 and not status.oom_killed:
        return CallResult(req.id, 200, (("content-type", "application/octet-stream"),), out)
    return _crash(req, status, err.decode(errors="replace"))


STDIO_CALLS_AT_ONCE = 256  # threads reading stdio calls' outputs, per node


@functools.cache
def _readers() -> ThreadPoolExecutor:
    """The node's threads for reading stdio calls (not the default pool: its few threads
    are shared with mounts and removals, and three calls once held them all)."""
    return ThreadPoolExecutor(STDIO_CALLS_AT_ONCE, thread_name_prefix="scow-stdio")


def _read_both(out_fd: int, err_fd: int, limit: int) -> tuple[bytes, bytes, bool]:
    """stdout (up to ``limit`` bytes) and the end of stderr, each to its end (in a
    thread); closes both. True when stdout passed ``limit``: both are closed at once
    then, and what is left unread is the function's to lose."""
    out: list[bytes] = []
    err = bytearray()
    size = 0
    poller = select.poll()
    for fd in (out_fd, err_fd):
        poller.register(fd, select.POLLIN)
    left = {out_fd, err_fd}
    try:
        while left:
            for fd, _ in poller.poll():
                data = os.read(fd, 65536)
                if not data:
                    poller.unregister(fd)
                    left.discard(fd)
                elif fd == out_fd:
                    size += len(data)
                    if size > limit:
                        return b"", bytes(err[-STDERR_KEPT:]), True
                    out.append(data)
                else:
                    err += data
                    if len(err) > 2 * STDERR_KEPT:
                        del err[:-STDERR_KEPT]
    finally:
        os.close(out_fd)
        os.close(err_fd)
    return b"".join(out), bytes(err[-STDERR_KEPT:]), False


async def _feed(inst: Instance, data: bytes) -> None:
    """Write ``data`` to the instance's stdin, then close it: the function reads to its
    end. Cut short, the pipe stays the instance's, and goes when it does."""
    fd = inst.stdin
    os.set_blocking(fd, False)  # our end only: the container's end is its own
    view = memoryview(data)
    try:
        while view:
            try:
                view = view[os.write(fd, view) :]
            except BlockingIOError:
                await _writable(fd)
    except BrokenPipeError:
        pass  # the function did not read all of its input: its right
    os.close(fd)
    inst.stdin = -1


async def _writable(fd: int) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_writer(fd, wake)
    try:
        await ready
    finally:
        loop.remove_writer(fd)


def _crash(req: CallRequest, status: ExitStatus, stderr: str) -> CallResult:
    error = "oom" if status.oom_killed else "crash"
    what = "the function was OOM-killed" if status.oom_killed else f"the function crashed: {status}"
    tail = stderr[-STDERR_TAIL:]
    return CallResult.failure(req.id, 502, error, what + (f"\n{tail}" if tail else ""))


async def _http(
    runtime: Runtime, http: Connections, inst: Instance, req: CallRequest, limit: int
) -> CallResult:
    headers = [(k, v) for k, v in req.headers if k.lower() not in HOP_HEADERS]
    headers.append(("x-call-id", req.id))  # the runtime hands it to the handler
    try:
        reply = await http.request(
            inst.id, inst.record.ip, inst.spec.port, req.method, req.path, req.query, headers,
            req.body, limit,
        )  # fmt: skip
    except ReplyTooLarge:
        return too_large(req, limit)
    except ReplyError as exc:
        record = runtime.get(inst.id)
        if record.status == "exited":
            status = await runtime.wait(inst.id)
            return _crash(req, status, _log_tail(runtime, inst.id))
        return CallResult.failure(
            req.id, 502, "bad_response", f"the function's reply was not HTTP: {exc}"
        )
    kept = tuple((k, v) for k, v in reply.headers if k not in HOP_HEADERS)
    return CallResult(req.id, reply.status, kept, reply.body)
