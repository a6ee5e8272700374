"""Published ports: a small proxy process per container, as docker-proxy is.

The runtime binds each host port itself (so "port already taken" is an error
at create time, naming the port) and hands the bound sockets to this process
by fd. It forwards every TCP connection to the container's address on the bridge,
and relays UDP datagrams: each client address gets a socket of its own towards the
container, whose answers go back to that client, dropped after a minute without
traffic (at most 1,024 clients at once; the oldest goes first). It runs in its own
session so it outlives a restart of the process that started it, and it is stopped
by pid at teardown.

    python -m runtime.portproxy --container ID --owner STATE_DIR --map FD:IP:PORT/tcp|udp ...
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
import time
from typing import cast


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass  # either side going away ends this direction; the other side is closed below
    finally:
        with contextlib.suppress(OSError):
            if writer.can_write_eof():
                writer.write_eof()


async def _serve_one(sock: socket.socket, target: tuple[str, int]) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        for w in (writer, up_writer):
            w.close()

    return await asyncio.start_server(handle, sock=sock)


UDP_IDLE = 60.0
UDP_CLIENTS = 1024


class _Upstream(asyncio.DatagramProtocol):
    """One client's socket towards the container: what comes back goes to that client."""

    def __init__(self, relay: _UdpRelay, client: tuple[str, int]) -> None:
        self.relay, self.client = relay, client
        self.transport: asyncio.DatagramTransport | None = None
        self.pending: list[bytes] = []
        self.used = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        for data in self.pending:
            self.transport.sendto(data)
        self.pending.clear()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.used = time.monotonic()
        if self.relay.transport is not None:
            self.relay.transport.sendto(data, self.client)

    def send(self, data: bytes) -> None:
        self.used = time.monotonic()
        if self.transport is None:
            self.pending.append(data)
        else:
            self.transport.sendto(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class _UdpRelay(asyncio.DatagramProtocol):
    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.transport: asyncio.DatagramTransport | None = None
        self.clients: dict[tuple[str, int], _Upstream] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        upstream = self.clients.get(addr)
        if upstream is None:
            if len(self.clients) >= UDP_CLIENTS:
                oldest = min(self.clients, key=lambda a: self.clients[a].used)
                self.clients.pop(oldest).close()
            upstream = self.clients[addr] = _Upstream(self, addr)
            loop = asyncio.get_running_loop()
            task = loop.create_task(loop.create_datagram_endpoint(
                lambda: upstream, remote_addr=self.target))  # fmt: skip
            task.add_done_callback(lambda t: t.exception() and self.clients.pop(addr, None))
        upstream.send(data)

    def sweep(self) -> None:
        now = time.monotonic()
        for addr, upstream in list(self.clients.items()):
            if now - upstream.used > UDP_IDLE:
                self.clients.pop(addr).close()


async def _sweep(relays: list[_UdpRelay]) -> None:
    while True:
        await asyncio.sleep(UDP_IDLE / 4)
        for relay in relays:
            relay.sweep()


async def _main(maps: list[tuple[int, str, int, str]]) -> None:
    servers = []
    relays: list[_UdpRelay] = []
    loop = asyncio.get_running_loop()
    for fd, ip, port, proto in maps:
        if proto == "udp":
            sock = socket.socket(fileno=fd)
            relay = _UdpRelay((ip, port))
            await loop.create_datagram_endpoint(lambda r=relay: r, sock=sock)  # type: ignore[misc]
            relays.append(relay)
        else:
            servers.append(await _serve_one(socket.socket(fileno=fd), (ip, port)))
    sweeper = asyncio.create_task(_sweep(relays))
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    sweeper.cancel()
    for s in servers:
        s.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m runtime.portproxy")
    parser.add_argument("--container", required=True, help="owner id (for ps and the reaper)")
    parser.add_argument("--owner", default="", help="the state dir of the runtime it serves")
    parser.add_argument("--map", action="append", default=[], help="FD:IP:PORT[/tcp|udp]")
    args = parser.parse_args()
    maps = []
    for item in args.map:
        fd, ip, rest = item.split(":")
        port, _, proto = rest.partition("/")
        maps.append((int(fd), ip, int(port), proto or "tcp"))
    asyncio.run(_main(maps))


if __name__ == "__main__":
    main()
