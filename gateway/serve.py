"""Run one gateway: uvicorn on TCP and on a root-only Unix socket."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
from collections.abc import Callable
from pathlib import Path
from types import FrameType

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


def serve(config: HostConfig, token: str, socket_path: Path | None, workers: int = 1) -> None:
    """The gateway of ``config`` on its TCP address and ``socket_path``, until a signal.

    With ``workers`` > 1 the sockets are bound once and that many processes accept on
    them (the kernel spreads connections); each has its own Redis connections and its
    own reply stream, so a result goes straight to the process whose client waits."""
    configure_logging(getattr(logging, config.log_level.upper()))
    if workers < 1:
        raise ValueError(f"invalid gateway workers {workers}: at least 1")
    sockets = [bind_tcp(config.http_host, config.http_port)]
    if socket_path is not None:
        sockets.append(bind_unix(socket_path))
    try:
        if workers == 1:
            _serve_one(config, token, sockets)
        else:
            _prefork(workers, lambda: _serve_one(config, token, sockets))
    finally:
        for s in sockets:
            s.close()
        if socket_path is not None:
            socket_path.unlink(missing_ok=True)


def _serve_one(config: HostConfig, token: str, sockets: list[socket.socket]) -> None:
    server_config = uvicorn.Config(
        create_app(config, token), http=HijackingProtocol, log_level="warning", lifespan="on",
        access_log=False,
        log_config=None, server_header=False, date_header=False,  # a function sends its own
    )  # fmt: skip
    server = uvicorn.Server(server_config)
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(server.serve(sockets=sockets))


PR_SET_PDEATHSIG = 1


def _prefork(count: int, run: Callable[[], None]) -> None:
    """Fork ``count`` workers that each ``run()``; a signal here stops them all; one that
    dies on its own stops the rest and ends this process with an error (``scow up``
    starts the gateway again, whole)."""
    log = logging.getLogger("scow.gateway")
    children: set[int] = set()
    for _ in range(count):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the worker
            code = 1
            try:
                # A group of its own: a terminal's Ctrl-C reaches the parent only, which
                # stops each worker once; and a worker never outlives its parent.
                os.setpgid(0, 0)
                ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
                run()
                code = 0
            except BaseException:
                log.exception("gateway worker %d failed", os.getpid())
            finally:
                os._exit(code)
        children.add(pid)
    log.info("gateway: %d workers (%s)", count, " ".join(map(str, sorted(children))))
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        if not stopping:
            stopping = True
            for child in children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    failed = False
    while children:
        pid, status = os.wait()
        children.discard(pid)
        if not stopping:
            log.error("gateway worker %d ended (status %d): stopping the others", pid, status)
            failed = True
            stop(signal.SIGTERM, None)
    if failed:
        raise SystemExit(1)
