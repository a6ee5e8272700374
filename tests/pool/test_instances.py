"""How a call runs in an instance, by protocol: on a fake runtime (no containers).

For stdio the fake's "container" is a host process on the instance's pipes, started
by ``start`` as runc would start the real one; for http it is a small server on
127.0.0.1 in this test. What is tested is scow's side: deadlines, limits, crashes,
hop-by-hop headers.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import pytest

from pool.contract import keys
from pool.contract.messages import CallRequest, CallResult
from pool.contract.specs import FunctionSpec
from pool.httpclient import Connections
from pool.instances import Instance, invoke
from runtime.logs import LogLine
from runtime.monitor import ExitStatus
from runtime.records import ContainerRecord, Status
from runtime.spec import ImageConfig, RunOptions

CID = "c" * 64


@dataclass
class FakeRuntime:
    """The runtime calls an instance makes, with a host process as the container."""

    argv: list[str] = field(default_factory=list)
    fds: tuple[int, int, int] = (-1, -1, -1)  # the container's ends of stdin, stdout, stderr
    proc: subprocess.Popen[bytes] | None = None
    status: Status = "running"
    killed: list[str] = field(default_factory=list)
    log: list[LogLine] = field(default_factory=list)

    async def start(self, cid: str) -> None:
        self.proc = subprocess.Popen(self.argv, stdin=self.fds[0], stdout=self.fds[1],
                                     stderr=self.fds[2])  # fmt: skip
        for fd in self.fds:
            os.close(fd)

    async def wait(self, cid: str) -> ExitStatus:
        assert self.proc is not None
        return ExitStatus(await asyncio.to_thread(self.proc.wait), False)

    async def kill(self, cid: str, sig: str = "KILL") -> None:
        self.killed.append(sig)
        if self.proc is not None:
            self.proc.kill()

    def get(self, cid: str) -> ContainerRecord:
        return replace(_record(), status=self.status)

    def logs_from(self, cid: str, offset: int) -> tuple[list[LogLine], int]:
        return self.log[offset:], len(self.log)

    def logs(self, cid: str, **options: object) -> list[LogLine]:
        return self.log


def _record(ip: str = "") -> ContainerRecord:
    return ContainerRecord(
        id=CID, name="f", created=0.0, image="img", image_config=ImageConfig(),
        options=RunOptions(), layers=(), stdio="pipes", status="created", ip=ip,
    )  # fmt: skip


def stdio_instance(runtime: FakeRuntime, *argv: str) -> Instance:
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    runtime.argv, runtime.fds = list(argv), (in_r, out_w, err_w)
    spec = FunctionSpec(name="f", image="img", protocol="stdio")
    return Instance(spec, _record(), stdin=in_w, stdout=out_r, stderr=err_r)


def call(body: bytes = b"", seconds: float = 10.0, **kw: Any) -> CallRequest:
    return CallRequest(keys.new_call_id("f"), "f", deadline=time.time() + seconds, body=body, **kw)


async def run(
    runtime: FakeRuntime, inst: Instance, req: CallRequest, limit: int = 1 << 20
) -> CallResult:
    http = Connections()
    try:
        return await run_on(http, runtime, inst, req, limit)
    finally:
        http.close()


async def run_on(
    http: Connections, runtime: FakeRuntime, inst: Instance, req: CallRequest,
    limit: int = 1 << 20,
) -> CallResult:  # fmt: skip
    try:
        return await invoke(runtime, http, inst, req, limit)  # type: ignore[arg-type]
    finally:
        inst.close_pipes()
        if runtime.proc is not None and runtime.proc.poll() is None:
            runtime.proc.kill()
            runtime.proc.wait()


# -- stdio ---------------------------------------------------------------------------------


async def test_stdio_the_body_in_and_stdout_back() -> None:
    rt = FakeRuntime()
    result = await run(rt, stdio_instance(rt, "sh", "-c", "tr a-z A-Z; echo note >&2"),
                       call(b"hello"))  # fmt: skip
    assert (result.status, result.body) == (200, b"HELLO")


async def test_stdio_a_crash_is_a_502_with_the_end_of_stderr() -> None:
    rt = FakeRuntime()
    result = await run(rt, stdio_instance(rt, "sh", "-c", "echo it broke >&2; exit 3"), call())
    assert (result.status, result.error) == (502, "crash")
    assert "exit code 3" in result.message and "it broke" in result.message


async def test_stdio_output_past_the_limit_is_a_502_and_the_function_is_killed() -> None:
    rt = FakeRuntime()
    inst = stdio_instance(rt, "sh", "-c", "while :; do echo 0123456789; done")
    result = await run(rt, inst, call(), limit=4096)
    assert (result.status, result.error) == (502, "response_too_large") and "4096" in result.message
    assert rt.killed == ["KILL"]


async def test_stdio_past_the_deadline_is_a_504_and_the_function_is_killed() -> None:
    rt = FakeRuntime()
    clock = time.monotonic()
    result = await run(rt, stdio_instance(rt, "sleep", "30"), call(seconds=0.3))
    assert (result.status, result.error, result.part) == (504, "timeout", "run")
    assert rt.killed == ["KILL"] and time.monotonic() - clock < 5


async def test_a_deadline_passed_in_the_queue_never_starts_the_function() -> None:
    rt = FakeRuntime()
    result = await run(rt, stdio_instance(rt, "true"), call(seconds=-1))
    assert (result.status, result.part) == (504, "queue") and rt.proc is None


async def test_stdio_a_function_that_reads_none_of_its_input_still_answers() -> None:
    rt = FakeRuntime()
    result = await run(rt, stdio_instance(rt, "echo", "done"), call(b"x" * (4 << 20)))
    assert (result.status, result.body) == (200, b"done\n")


# -- http ----------------------------------------------------------------------------------

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
Serve = Callable[[Handler], Awaitable[Instance]]


@pytest.fixture
async def function_server() -> AsyncIterator[Serve]:
    servers: list[asyncio.Server] = []
    handling: set[asyncio.Task[None]] = set()

    async def serve(handler: Handler) -> Instance:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            handling.add(task)
            try:
                await handler(reader, writer)
            finally:
                writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        spec = FunctionSpec(name="f", image="img", port=port)
        return Instance(spec, _record(ip="127.0.0.1"))

    yield serve
    for task in handling:
        task.cancel()
    await asyncio.gather(*handling, return_exceptions=True)
    for server in servers:
        server.close()
        await server.wait_closed()


async def _request_head(reader: asyncio.StreamReader) -> list[bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    return head.split(b"\r\n")


def _answer(writer: asyncio.StreamWriter, head: bytes, body: bytes = b"") -> None:
    writer.write(head + b"\r\n\r\n" + body)


async def test_http_hop_headers_are_dropped_and_the_call_id_is_given(
    function_server: Serve,
) -> None:
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.extend(await _request_head(reader))
        _answer(writer, b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nX-Out: 1\r\n"
                        b"Keep-Alive: timeout=5", b"ok")  # fmt: skip
        await writer.drain()
        writer.close()

    inst = await function_server(handler)
    req = call(headers=(("x-in", "1"), ("proxy-authorization", "Basic c2VjcmV0"),
                        ("connection", "x-in"), ("te", "trailers")))  # fmt: skip
    result = await run(FakeRuntime(), inst, req)
    assert (result.status, result.body) == (201, b"ok")
    lower = [h.lower() for h in seen]
    assert b"x-in: 1" in lower and f"x-call-id: {req.id}".encode() in lower
    assert not [h for h in lower if h.startswith((b"proxy-authorization", b"te:"))]
    names = {k for k, _ in result.headers}
    assert "x-out" in names and "keep-alive" not in names and "content-length" not in names


@pytest.mark.parametrize("declared", [True, False])
async def test_http_a_reply_past_the_limit_is_a_502(function_server: Serve, declared: bool) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _request_head(reader)
        if declared:
            _answer(writer, b"HTTP/1.1 200 OK\r\nContent-Length: 1000000")
        else:
            _answer(writer, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked")
            for _ in range(100):
                writer.write(b"400\r\n" + b"x" * 1024 + b"\r\n")
        with_room = writer.transport.get_write_buffer_size() < (8 << 20)
        assert with_room
        await writer.drain()
        writer.close()

    inst = await function_server(handler)
    result = await run(FakeRuntime(), inst, call(), limit=10_000)
    assert (result.status, result.error) == (502, "response_too_large")


async def test_http_a_reply_that_is_not_http_is_a_502_bad_response(function_server: Serve) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _request_head(reader)
        writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        await writer.drain()
        writer.close()

    inst = await function_server(handler)
    result = await run(FakeRuntime(), inst, call())
    assert (result.status, result.error) == (502, "bad_response")


async def test_http_a_function_that_died_is_a_502_crash_with_its_log(
    function_server: Serve,
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _request_head(reader)
        writer.close()  # it died mid-call

    rt = FakeRuntime(status="exited", log=[LogLine(datetime.now(UTC), "stderr", "segfault at 0")])
    rt.proc = subprocess.Popen(["sh", "-c", "exit 139"])
    rt.proc.wait()
    result = await run(rt, await function_server(handler), call())
    assert (result.status, result.error) == (502, "crash")
    assert "segfault at 0" in result.message


async def test_http_past_the_deadline_is_a_504_and_the_container_is_killed(
    function_server: Serve,
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _request_head(reader)
        await asyncio.sleep(30)

    rt = FakeRuntime()
    result = await run(rt, await function_server(handler), call(seconds=0.3))
    assert (result.status, result.part) == (504, "run") and rt.killed == ["KILL"]


async def test_http_a_connection_is_kept_between_calls(function_server: Serve) -> None:
    accepted = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        while True:
            try:
                await _request_head(reader)
            except asyncio.IncompleteReadError:
                return
            _answer(writer, b"HTTP/1.1 200 OK\r\nContent-Length: 2", b"ok")
            await writer.drain()

    inst = await function_server(handler)
    http = Connections()
    for _ in range(5):
        result = await run_on(http, FakeRuntime(), inst, call())
        assert (result.status, result.body) == (200, b"ok")
    assert accepted == 1
    http.forget(inst.id)


async def test_http_a_kept_connection_the_function_closed_is_tried_again_once(
    function_server: Serve,
) -> None:
    """The keep-alive race: the function closes an idle connection just as a call is
    written to it. The call goes again on a new connection; it never ran."""
    seen = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal seen
        await _request_head(reader)
        seen += 1
        # keep-alive promised, then the connection is closed unasked once answered
        _answer(writer, b"HTTP/1.1 200 OK\r\nContent-Length: 2", b"ok")
        await writer.drain()

    inst = await function_server(handler)
    http = Connections()
    first = await run_on(http, FakeRuntime(), inst, call())
    await asyncio.sleep(0.05)  # the server's side is closed by now
    second = await run_on(http, FakeRuntime(), inst, call())
    assert (first.status, second.status) == (200, 200) and seen == 2
    http.forget(inst.id)


async def test_http_a_body_delimited_by_the_close_and_a_head_reply(function_server: Serve) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await _request_head(reader)
        if head[0].startswith(b"HEAD"):
            _answer(writer, b"HTTP/1.1 200 OK\r\nContent-Length: 999")
        else:
            _answer(writer, b"HTTP/1.0 200 OK", b"until the end")
        await writer.drain()

    inst = await function_server(handler)
    got = await run(FakeRuntime(), inst, call())
    assert (got.status, got.body) == (200, b"until the end")
    head = await run(FakeRuntime(), inst, call(method="HEAD"))
    assert (head.status, head.body) == (200, b"")
