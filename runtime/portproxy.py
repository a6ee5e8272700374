"""Published ports: a small TCP proxy process per container, as docker-proxy is.

The runtime binds each host port itself (so "port already taken" is an error
at create time, naming the port) and hands the listening sockets to this process
by fd. It forwards every connection to the container's address on the bridge. It
runs in its own session so it outlives a restart of the process that started it,
and it is stopped by pid at teardown.

    python -m runtime.portproxy --container ID --map FD:IP:PORT [--map ...]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket


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


async def _main(maps: list[tuple[int, str, int]]) -> None:
    servers = []
    for fd, ip, port in maps:
        sock = socket.socket(fileno=fd)
        servers.append(await _serve_one(sock, (ip, port)))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for s in servers:
        s.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m runtime.portproxy")
    parser.add_argument("--container", required=True, help="owner id (for ps and the reaper)")
    parser.add_argument("--map", action="append", default=[], help="FD:IP:PORT")
    args = parser.parse_args()
    maps = []
    for item in args.map:
        fd, ip, port = item.split(":")
        maps.append((int(fd), ip, int(port)))
    asyncio.run(_main(maps))


if __name__ == "__main__":
    main()
