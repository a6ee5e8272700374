"""HTTP/1.1 to function containers, the node's hot path: keep-alive connections on asyncio
streams, each response parsed by httptools (llhttp, the parser uvicorn uses).

Why not an HTTP library: a call's request and reply cross here once per call, and a
general client's layers (URL objects, header classes, connection-pool bookkeeping)
cost more CPU than the function it calls. This knows exactly one kind of peer: a
container on the bridge, reached by address, answering one request at a time per
connection.

- A connection is kept per instance while the function keeps it alive, and goes
  when the instance does (``forget``).
- A reply is read up to ``limit`` bytes of body: a declared ``Content-Length`` past it,
  or a body that grows past it, is ``ReplyTooLarge`` and the connection is closed
  unread.
- A kept connection the function closed meanwhile (EOF before a byte of the reply)
  is retried once on a new one: that is the race every keep-alive client has, and
  the request never reached the function's handler.
- The request line and headers are written from checked parts: a header name or
  value with CR, LF or NUL is dropped, the path is percent-encoded.
"""

from __future__ import annotations

import asyncio
import re
from collections import defaultdict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote

import httptools

READ_CHUNK = 65536
IDLE_PER_INSTANCE = 64  # kept connections to one instance (its concurrency at most)
_UNSAFE = re.compile(r"[\r\n\0]")
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # RFC 9110 token: a header name


class ReplyError(Exception):
    """The function's reply was not HTTP, or was cut short."""


class ReplyTooLarge(Exception):
    """The reply's body passed the limit."""


@dataclass(frozen=True)
class Reply:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


class _Message:
    """httptools' callbacks for one response."""

    def __init__(self, limit: int, head_only: bool) -> None:
        self.limit, self.head_only = limit, head_only
        self.parser: httptools.HttpResponseParser | None = None
        self.keep_alive = False
        self.headers: list[tuple[str, str]] = []
        self.chunks: list[bytes] = []
        self.size = 0
        self.headers_done = self.done = self.over = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1").lower(), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self.headers_done = True
        assert self.parser is not None
        # Asked now: llhttp resets its flags once the message is complete.
        self.keep_alive = self.parser.should_keep_alive()
        declared = next((v for k, v in self.headers if k == "content-length"), "")
        if declared.isdigit() and int(declared) > self.limit:
            self.over = True

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size > self.limit:
            self.over = True
        elif not self.over:
            self.chunks.append(bytes(body))

    def on_message_complete(self) -> None:
        self.done = True


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def exchange(
        self, request: bytes, limit: int, head_only: bool
    ) -> tuple[Reply | None, bool]:
        """Send ``request``; the reply and whether the connection may be kept. None (and
        not kept) when the peer closed the connection before a byte of the reply."""
        self.writer.write(request)
        await self.writer.drain()
        message = _Message(limit, head_only)
        parser = message.parser = httptools.HttpResponseParser(message)
        received = False
        while not message.done:
            if head_only and message.headers_done:
                break  # a HEAD's reply has no body, whatever it declares
            data = await self.reader.read(READ_CHUNK)
            if not data:
                if not received:
                    return None, False
                if message.headers_done and not _framed(message.headers):
                    break  # a body delimited by the end of the connection
                raise ReplyError("the connection closed before the reply was whole")
            received = True
            try:
                parser.feed_data(data)
            except httptools.HttpParserUpgrade:
                raise ReplyError("the function asked to upgrade the connection") from None
            except httptools.HttpParserError as exc:
                raise ReplyError(f"not HTTP: {exc}") from None
            if message.over:
                raise ReplyTooLarge
        status = parser.get_status_code()
        keep = message.done and not head_only and message.keep_alive
        return Reply(status, tuple(message.headers), b"".join(message.chunks)), keep

    def close(self) -> None:
        self.writer.close()


def _framed(headers: Sequence[tuple[str, str]]) -> bool:
    return any(k in ("content-length", "transfer-encoding") for k, _ in headers)


def request_bytes(
    method: str, host: str, port: int, path: str, query: str,
    headers: Sequence[tuple[str, str]], body: bytes,
) -> bytes:  # fmt: skip
    """The request as it goes on the wire.

    >>> for line in request_bytes("POST", "10.0.0.2", 8080, "/a b", "x=1", [("X-A", "1"),
    ...         ("Bad", "a\\r\\nInjected: 1")], b"hi").split(b"\\r\\n"):
    ...     print(line.decode())
    POST /a%20b?x=1 HTTP/1.1
    Host: 10.0.0.2:8080
    Content-Length: 2
    X-A: 1
    <BLANKLINE>
    hi
    """
    if not _TOKEN.match(method):
        raise ValueError(f"invalid method {method!r}")
    target = quote(path or "/", safe="/%:@!$&'()*+,;=-._~")
    if query:
        target += "?" + quote(query, safe="/%:@!$&'()*+,;=-._~?")
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(body)}"]
    for name, value in headers:
        if _TOKEN.match(name) and not _UNSAFE.search(value):
            lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace") + body


class Connections:
    """Kept connections to the node's instances, by instance id."""

    def __init__(self) -> None:
        self._idle: defaultdict[str, deque[_Connection]] = defaultdict(deque)

    async def request(
        self, instance: str, host: str, port: int, method: str, path: str, query: str,
        headers: Sequence[tuple[str, str]], body: bytes, limit: int,
    ) -> Reply:  # fmt: skip
        data = request_bytes(method, host, port, path, query, headers, body)
        head_only = method.upper() == "HEAD"
        for attempt in range(2):
            reused = bool(self._idle[instance])
            conn = self._idle[instance].popleft() if reused else await self._open(host, port)
            try:
                reply, keep = await conn.exchange(data, limit, head_only)
            except BaseException:
                conn.close()
                raise
            if reply is None:
                conn.close()
                if reused and attempt == 0:
                    continue  # closed while it sat idle: once more, on a new connection
                raise ReplyError("the function closed the connection without a reply")
            if keep and len(self._idle[instance]) < IDLE_PER_INSTANCE:
                self._idle[instance].append(conn)
            else:
                conn.close()
            return reply
        raise AssertionError("unreachable")

    async def _open(self, host: str, port: int) -> _Connection:
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError as exc:
            raise ReplyError(f"cannot connect to {host}:{port}: {exc}") from None
        return _Connection(reader, writer)

    def forget(self, instance: str) -> None:
        """The instance is gone: its kept connections with it."""
        for conn in self._idle.pop(instance, ()):
            conn.close()

    def close(self) -> None:
        for instance in list(self._idle):
            self.forget(instance)
