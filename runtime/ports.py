"""Publishing container ports on the host: bind here, forward in a proxy process.

Binding happens in the runtime, before the container is created, so a port that
is taken fails the create with an error naming it. The listening sockets then
pass by fd to ``python -m runtime.portproxy`` (see there), which outlives a
restart of this process; teardown stops it by pid.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from runtime.errors import Conflict
from runtime.spec import Port


def bind_ports(ports: list[Port]) -> list[tuple[socket.socket, Port]]:
    """Listening sockets for ``ports``; all or none (a taken port closes the others)."""
    bound: list[tuple[socket.socket, Port]] = []
    try:
        for port in ports:
            family = socket.AF_INET6 if ":" in port.host_ip else socket.AF_INET
            s = socket.socket(family, socket.SOCK_STREAM)
            bound.append((s, port))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((port.host_ip, port.host_port))
            except OSError as exc:
                raise Conflict(
                    f"cannot publish port {port.container_port} on "
                    f"{port.host_ip}:{port.host_port}: {exc.strerror}"
                ) from None
            s.listen(128)
    except BaseException:
        for s, _ in bound:
            s.close()
        raise
    return bound


def spawn_proxy(
    cid: str, ip: str, sockets: list[tuple[socket.socket, Port]]
) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "runtime.portproxy", "--container", cid]
    for s, port in sockets:
        args += ["--map", f"{s.fileno()}:{ip}:{port.container_port}"]
    return subprocess.Popen(
        args,
        pass_fds=[s.fileno() for s, _ in sockets],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
        cwd="/",
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
    )


def stop_proxy(pid: int, cid: str, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Stop the proxy ``pid`` if it is still the one serving ``cid``.

    ``proc`` is its Popen when this process started it; after a restart only the
    pid is known, and the command line tells whether the pid was reused.
    """
    if proc is not None:
        proc.terminate()
        try:
            proc.wait(2)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        return
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return
    if cid.encode() not in cmdline:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return
        time.sleep(0.005)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def orphan_proxies(kept: set[str]) -> list[tuple[int, str]]:
    """(pid, container id) of port proxies whose container is not in ``kept``."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            argv = Path(entry.path, "cmdline").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError):
            continue
        if b"runtime.portproxy" in argv and b"--container" in argv:
            cid = argv[argv.index(b"--container") + 1].decode()
            if cid not in kept:
                found.append((int(entry.name), cid))
    return found
