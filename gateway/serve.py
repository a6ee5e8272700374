"""Run one gateway: uvicorn on TCP and on a root-only Unix socket."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path

import uvicorn

from gateway.app import create_app
from gateway.docker.hijack import HijackingProtocol
from gateway.http import RequestIdFilter, printable
from pool.contract.config import HostConfig


def bind_tcp(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit it. Without it a keep-alive client waited for its
    # delayed ACK (40 ms) on every response: headers and body leave as two writes.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    # Listen now: a client that connects before uvicorn serves waits in the backlog
    # instead of being refused.
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def bind_unix(path: Path) -> socket.socket:
    """Bind ``path`` with mode 0600 before anyone can connect (uvicorn's own uds is 0666)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when it is there (uvicorn[standard] brings it): its socket writes cost the
    gateway less than asyncio's own loop does."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


class EscapingFormatter(logging.Formatter):
    """One line per record, whatever a client put in the text logged (a function name,
    a path): control characters come out escaped. Tracebacks keep their lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return printable(super().formatMessage(record))


def configure_logging(level: int = logging.INFO) -> None:
    """Every line names the request it belongs to (``-`` outside a request)."""
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(
        EscapingFormatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def serve(config: HostConfig, token: str, socket_path: Path | None) -> None:
    """The gateway of ``config`` on its TCP address and ``socket_path``, until a signal."""
    configure_logging(getattr(logging, config.log_level.upper()))
    sockets = [bind_tcp(config.http_host, config.http_port)]
    if socket_path is not None:
        sockets.append(bind_unix(socket_path))
    server_config = uvicorn.Config(
        create_app(config, token), http=HijackingProtocol, log_level="warning", lifespan="on",
        access_log=False,
        log_config=None, server_header=False, date_header=False,  # a function sends its own
    )  # fmt: skip
    server = uvicorn.Server(server_config)
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(server.serve(sockets=sockets))
    finally:
        for s in sockets:
            s.close()
        if socket_path is not None:
            socket_path.unlink(missing_ok=True)
