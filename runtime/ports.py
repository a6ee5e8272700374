"""Publishing container ports on the host: bind here, forward in a proxy process.

Binding happens in the runtime, before the container is created, so a port that
is taken fails the create with an error naming it. The listening sockets then
pass by fd to ``python -m runtime.portproxy`` (see there), which outlives a
restart of this process; teardown stops it by pid.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

from runtime.errors import Conflict
from runtime.spec import Port

LOOPBACK = "127.0.0.1"


def _bind_one(host_ip: str, port: Port, host_port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host_ip else socket.AF_INET
    kind = socket.SOCK_DGRAM if port.protocol == "udp" else socket.SOCK_STREAM
    s = socket.socket(family, kind)
    try:
        if kind == socket.SOCK_STREAM:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host_ip, host_port))
        if kind == socket.SOCK_STREAM:
            s.listen(128)
    except BaseException:
        s.close()
        raise
    return s


def bind_ports(ports: list[Port], bridge_ip: str = "") -> list[tuple[socket.socket, Port]]:
    """Bound sockets for ``ports``; all or none (a taken port closes the others).

    A port without an address is bound on 127.0.0.1 and on ``bridge_ip`` (the address of
    the container's bridge, where clients in other containers find it), the same port
    number on both; each socket comes with its port, its ``host_ip`` filled in.
    """
    bound: list[tuple[socket.socket, Port]] = []
    try:
        for port in ports:
            addresses = [port.host_ip] if port.host_ip else [LOOPBACK, bridge_ip]
            addresses = [a for a in addresses if a]
            for attempt in range(20):  # a free port on the first address may be taken on the next
                sockets: list[tuple[socket.socket, Port]] = []
                number = port.host_port
                address = addresses[0]
                try:
                    for address in addresses:
                        s = _bind_one(address, port, number)
                        number = s.getsockname()[1]
                        sockets.append((s, replace(port, host_ip=address, host_port=number)))
                except OSError as exc:
                    for s, _ in sockets:
                        s.close()
                    if port.host_port or attempt == 19 or exc.errno != errno.EADDRINUSE:
                        raise Conflict(
                            f"cannot publish port {port.container_port}/{port.protocol} on "
                            f"{address}:{number}: {exc.strerror}"
                        ) from None
                    continue
                bound += sockets
                break
    except BaseException:
        for s, _ in bound:
            s.close()
        raise
    return bound


def spawn_proxy(
    cid: str, ip: str, sockets: list[tuple[socket.socket, Port]], owner: Path
) -> subprocess.Popen[bytes]:
    """The proxy of container ``cid``, marked as ``owner``'s (the runtime's state dir: the
    reaper of another runtime on this machine leaves it alone)."""
    args = [sys.executable, "-m", "runtime.portproxy", "--container", cid, "--owner", str(owner)]
    for s, port in sockets:
        args += ["--map", f"{s.fileno()}:{ip}:{port.container_port}/{port.protocol}"]
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


def orphan_proxies(kept: set[str], owner: Path) -> list[tuple[int, str]]:
    """(pid, container id) of ``owner``'s port proxies whose container is not in ``kept``."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            argv = Path(entry.path, "cmdline").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError):
            continue
        if b"runtime.portproxy" in argv and b"--container" in argv:
            mine = b"--owner" in argv and argv[argv.index(b"--owner") + 1] == bytes(owner)
            cid = argv[argv.index(b"--container") + 1].decode()
            if mine and cid not in kept:
                found.append((int(entry.name), cid))
    return found
