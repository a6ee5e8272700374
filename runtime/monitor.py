"""Who holds a container's stdio and learns how it ended.

Two ways, chosen per container at create time:

- ``logs``: conmon, podman's container monitor, runs ``runc create`` and stays
  as the container's parent in its own session. It writes the output, with
  timestamps and stream, to a log file (k8s-file format, see logs.py) and the
  exit code to ``<exit_dir>/<id>``. Both survive a restart of our process.
- ``pipes``: we run ``runc create`` with our own pipes as the container's stdio
  (the pool manager feeds a stdio function's stdin and reads its stdout). The
  container's init is re-parented to us because we are a child subreaper, and
  its exit status comes from waitpid.

Exits are observed through pidfds (readable when the process ends, child or
not); a pid that is our child is then reaped with waitpid(pid), never
waitpid(-1), which would steal the statuses of asyncio's own subprocesses.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import shutil
import signal
import socket
from dataclasses import dataclass
from pathlib import Path

from runtime.errors import ContainerError, InvalidOption, RuncError

PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> None:
    """Orphaned descendants (container inits after ``runc create``) become our children."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_CHILD_SUBREAPER) failed: {os.strerror(err)}")


@dataclass(frozen=True)
class ExitStatus:
    """How a container's main process ended.

    ``code`` follows Docker: the exit code, or 128+N for a process killed by
    signal N (an init inside the container reports its child's death that way).
    """

    code: int
    oom_killed: bool = False

    @property
    def signal(self) -> int | None:
        return self.code - 128 if 128 < self.code < 128 + 65 else None

    def __str__(self) -> str:
        if self.oom_killed:
            return f"OOM-killed (exit code {self.code})"
        if self.signal is not None:
            name = signal.Signals(self.signal).name if self.signal in _SIGNALS else "?"
            return f"killed by signal {self.signal} ({name})"
        return f"exit code {self.code}"


_SIGNALS = {s.value for s in signal.Signals}


class ExitWatcher:
    """Awaitable exits of arbitrary pids, shared by every waiter of one pid."""

    def __init__(self) -> None:
        self._waits: dict[int, asyncio.Future[int | None]] = {}

    def watch(self, pid: int) -> asyncio.Future[int | None]:
        """A future of the pid's exit code when it is our child, else None once it is gone."""
        fut = self._waits.get(pid)
        if fut is not None:
            return fut
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._waits[pid] = fut
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            fut.set_result(_reap(pid))
            return fut

        def ready() -> None:
            loop.remove_reader(pidfd)
            os.close(pidfd)
            if not fut.done():
                fut.set_result(_reap(pid))

        loop.add_reader(pidfd, ready)
        return fut

    def watching(self, pid: int) -> bool:
        """Whether ``pid`` is watched (its exit status is, or will be, in its future)."""
        return pid in self._waits

    def forget(self, pid: int) -> None:
        self._waits.pop(pid, None)


def _reap(pid: int) -> int | None:
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        return None
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


class Conmon:
    def __init__(
        self, runc_binary: str, runc_root: Path, binary: str = "conmon", *, log_size_max: int = 0
    ) -> None:
        found = shutil.which(binary)
        if found is None:
            raise ContainerError(f"container monitor {binary!r} not found on PATH")
        runc = shutil.which(runc_binary)
        if runc is None:
            raise ContainerError(f"OCI runtime {runc_binary!r} not found on PATH")
        self.binary, self.runc, self.runc_root = found, runc, runc_root
        self.log_size_max = log_size_max

    async def create(
        self,
        cid: str,
        bundle: Path,
        *,
        log_path: Path,
        exit_dir: Path,
        pid_file: Path,
        conmon_pid_file: Path,
        socket_dir: Path,
        terminal: bool = False,
        stdin: bool = False,
        leave_stdin_open: bool = False,
    ) -> tuple[int, int]:
        """Start conmon, which runs ``runc create``; returns (container pid, conmon pid).

        ``terminal``: conmon takes the container's pseudo-terminal from runc and keeps
        it (the log has what the terminal shows); ``stdin``: conmon holds the container's
        stdin open for clients of its attach socket (``attach_socket``), closing it when
        the first of them leaves unless ``leave_stdin_open``. Resizes go to its control
        fifo (``resize``)."""
        exit_dir.mkdir(parents=True, exist_ok=True)
        socket_dir.mkdir(parents=True, exist_ok=True)
        sync_r, sync_w = os.pipe()
        try:
            proc = await asyncio.create_subprocess_exec(
                self.binary, "--api-version", "1", "-c", cid, "-u", cid, "-n", cid[:12],
                "-r", self.runc, "-b", str(bundle), "-p", str(pid_file),
                "-P", str(conmon_pid_file), "-l", f"k8s-file:{log_path}",
                "--exit-dir", str(exit_dir), "--socket-dir-path", str(socket_dir),
                "--runtime-arg", "--root", "--runtime-arg", str(self.runc_root),
                "--log-level", "error",
                *(("--terminal",) if terminal else ()), *(("--stdin",) if stdin else ()),
                *(("--leave-stdin-open",) if leave_stdin_open else ()),
                *(("--log-size-max", str(self.log_size_max)) if self.log_size_max else ()),
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE, pass_fds=(sync_w,),
                env={**os.environ, "_OCI_SYNCPIPE": str(sync_w)},
                # conmon writes a file named "oom" into its working directory when the
                # container is OOM-killed: the container's own directory, not ours.
                cwd=bundle.parent,
            )  # fmt: skip
            os.close(sync_w)
            sync_w = -1
            _, err = await proc.communicate()  # the first conmon exits once it has forked
            reply = await asyncio.to_thread(_read_line, sync_r)
        finally:
            if sync_w >= 0:
                os.close(sync_w)
            os.close(sync_r)
        try:
            message = json.loads(reply)
        except ValueError:
            raise RuncError(
                ["conmon", "create", cid], proc.returncode or -1, err.decode()
            ) from None
        pid = int(message.get("data", -1))
        if pid <= 0:
            raise RuncError(
                ["runc", "create", cid], pid, message.get("message", "") or err.decode()
            )
        return pid, int(conmon_pid_file.read_text())


ATTACH_STDOUT, ATTACH_STDERR = 2, 3  # the first byte of what conmon's attach socket sends
ATTACH_BUFFER = 8192 + 1


def attach_socket(bundle: Path) -> socket.socket:
    """A connection to conmon's attach socket for the container of ``bundle``: each packet
    read is one byte of stream (ATTACH_STDOUT, ATTACH_STDERR) and the data; what is sent
    goes to the container's stdin; shutting the write side closes it (see ``create``).

    The socket's path may be longer than a Unix socket's name can be: it is reached
    through a descriptor of its directory."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    dirfd = os.open(bundle, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        sock.connect(f"/proc/self/fd/{dirfd}/attach")
    except OSError:
        sock.close()
        raise
    finally:
        os.close(dirfd)
    return sock


def resize(bundle: Path, rows: int, columns: int) -> None:
    """Tell conmon the container's terminal has ``rows`` x ``columns`` (its control fifo)."""
    if not (0 < rows <= 1000 and 0 < columns <= 1000):  # conmon's own bounds
        raise InvalidOption("size", f"{rows}x{columns}", "rows and columns from 1 to 1000")
    fd = os.open(bundle / "ctl", os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        os.write(fd, f"1 {rows} {columns}\n".encode())
    finally:
        os.close(fd)


def _read_line(fd: int) -> str:
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        buf += chunk
    return buf.decode(errors="replace")
