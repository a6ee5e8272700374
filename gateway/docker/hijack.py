"""Hijacked connections: Docker's attach and exec streams over plain HTTP/1.1.

The docker CLI asks for ``Connection: Upgrade`` / ``Upgrade: tcp`` on attach and
exec start, and requires ``101 Switching Protocols`` before it treats the socket
as a raw two-way stream (stdin in, multiplexed stdout and stderr out). ASGI has
no such upgrade, so this subclass of uvicorn's httptools protocol offers one: a
request asking for a non-websocket upgrade carries a ``scow.hijack`` extension
in its scope. Awaiting it writes the 101 response and hands the route a
``RawStream``; from then on the protocol passes every byte it receives to that
stream instead of the HTTP parser, and uvicorn sends nothing more on the
connection. Requests without the upgrade headers are untouched.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import httptools
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

EXTENSION = "scow.hijack"
RAW_STREAM = "application/vnd.docker.raw-stream"
MULTIPLEXED_STREAM = "application/vnd.docker.multiplexed-stream"


class RawStream:
    """Both directions of a hijacked connection."""

    def __init__(self, protocol: HijackingProtocol, incoming: asyncio.Queue[bytes]) -> None:
        self._protocol = protocol
        self._incoming = incoming
        self._eof = False

    async def read(self) -> bytes:
        """The next bytes the client sent; b"" once it closed its side."""
        if self._eof:
            return b""
        data = await self._incoming.get()
        self._eof = not data
        return data

    async def write(self, data: bytes) -> None:
        transport = self._protocol.transport
        if transport.is_closing():
            raise ConnectionResetError("the client closed the connection")
        transport.write(data)
        if self._protocol.flow.write_paused:
            await self._protocol.flow.drain()

    def close(self) -> None:
        self._protocol.transport.close()


MAX_HEAD_BYTES = 64 << 10  # request line and headers; nginx's large_client_header_buffers
LINGER_SECONDS = 2.0


class HijackingProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, plus the ``scow.hijack`` extension and a cap on
    the size of a request's head (llhttp has none: a client could send headers until
    the gateway runs out of memory)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._raw: asyncio.Queue[bytes] | None = None
        # llhttp ends an upgrade request at its headers, body or not; docker-py sends
        # exec start's JSON body with the upgrade headers, so we read that body ourselves.
        self._body_due: int | None = None
        self._in_head = True  # reading a request line and headers
        self._head_bytes = 0
        self._completed = 0  # requests read on this connection
        self._refused = False  # answered 431: what the client still sends is dropped

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._raw is not None:
            self._raw.put_nowait(data)
            return
        if self._body_due is not None:
            self._take_body(data)
            return
        self._unset_keepalive_if_required()
        completed = self._completed
        try:
            self.parser.feed_data(data)
            self._count_head(data, completed)
        except httptools.HttpParserError:
            msg = "Invalid HTTP request received."
            self.logger.warning(msg)
            self.send_400_response(msg)
        except httptools.HttpParserUpgrade as exc:
            if self._body_due is not None:
                offset = int(exc.args[0]) if exc.args else len(data)
                self._take_body(data[offset:])
            elif self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()

    def _count_head(self, data: bytes, completed: int) -> None:
        """Refuse a head over MAX_HEAD_BYTES with 431, once this chunk is known to be head.

        A chunk that ended a request may hold its body too: counting starts anew then.
        """
        if not self._in_head:
            return
        self._head_bytes = 0 if self._completed != completed else self._head_bytes + len(data)
        if self._head_bytes > MAX_HEAD_BYTES:
            body = (b'{"error":"headers_too_large","message":"the request line and headers '
                    b'are over ' + str(MAX_HEAD_BYTES).encode() + b' bytes"}')  # fmt: skip
            self.transport.write(
                b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
                b"content-type: application/json\r\nconnection: close\r\n"
                b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
            )  # fmt: skip
            # A lingering close: closing with unread input would reset the connection and
            # the client might never read the 431. Send EOF, drop its input for a while.
            self._refused = True
            if self.transport.can_write_eof():
                self.transport.write_eof()
            asyncio.get_running_loop().call_later(LINGER_SECONDS, self.transport.close)

    def on_message_complete(self) -> None:
        upgrade = self._get_upgrade()
        if upgrade and upgrade != b"websocket":
            length = dict(self.headers).get(b"content-length", b"0")
            if length.isdigit() and int(length) > 0:
                self._body_due = int(length)
                return  # complete once _take_body has read it
        self._message_read()
        super().on_message_complete()

    def _message_read(self) -> None:
        self._in_head, self._completed = True, self._completed + 1

    def _take_body(self, data: bytes) -> None:
        assert self._body_due is not None
        body = data[: self._body_due]
        self._body_due -= len(body)
        if body:
            self.on_body(body)
        if self._body_due == 0:
            self._body_due = None
            self._message_read()
            super().on_message_complete()

    def eof_received(self) -> bool | None:  # type: ignore[override]
        if self._raw is not None:  # half-closed: the client still reads our side
            self._raw.put_nowait(b"")
            return True  # keep the transport open for our side
        super().eof_received()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._raw is not None:
            self._raw.put_nowait(b"")
        super().connection_lost(exc)

    def _unsupported_upgrade_warning(self) -> None:
        if self._get_upgrade() != b"tcp":  # tcp is ours: not worth a warning per request
            super()._unsupported_upgrade_warning()

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()
        upgrade = self._get_upgrade()
        cycle = self.cycle
        if upgrade and upgrade != b"websocket" and cycle is not None and cycle.scope is self.scope:
            extensions: dict[str, Any] = self.scope.setdefault("extensions", {})  # type: ignore[typeddict-item, assignment]
            extensions[EXTENSION] = functools.partial(self._hijack, cycle)

    async def _hijack(self, cycle: RequestResponseCycle, content_type: str) -> RawStream:
        if cycle.response_started:
            raise RuntimeError("a response was already started on this connection")
        # uvicorn must neither answer this request nor read another from the connection.
        cycle.response_started = cycle.response_complete = True
        cycle.keep_alive = False
        self._raw = asyncio.Queue()
        self.flow.resume_reading()
        self.transport.write(
            b"HTTP/1.1 101 UPGRADED\r\nContent-Type: " + content_type.encode()
            + b"\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n"
        )  # fmt: skip
        return RawStream(self, self._raw)


class Hijacked(Response):
    """What a route returns once it took the connection over: nothing more is sent."""

    def __init__(self) -> None:
        super().__init__(status_code=101)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        return None


def can_hijack(request: Request) -> bool:
    return EXTENSION in request.scope.get("extensions", {})


async def hijack(request: Request, content_type: str = RAW_STREAM) -> RawStream:
    """Answer 101 and take the connection over; see ``can_hijack``."""
    stream: RawStream = await request.scope["extensions"][EXTENSION](content_type)
    return stream
