"""A redis-server child process on a Unix socket, for `scow up` and for tests.

The server listens on no TCP port (``port 0``), only on its socket, and keeps its
data in ``data_dir``. ``start()`` returns once the server answers PING.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

DEFAULT_MAXMEMORY = "1gb"  # as redis.conf writes sizes


class RedisServerError(Exception):
    pass


class RedisServer:
    def __init__(
        self,
        socket_path: Path,
        data_dir: Path,
        *,
        binary: str = "redis-server",
        persist: bool = True,
        maxmemory: str = DEFAULT_MAXMEMORY,
    ) -> None:
        self.socket_path = socket_path
        self.data_dir = data_dir
        self.binary = binary
        self.persist = persist
        self.maxmemory = maxmemory
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def start(self, timeout: float = 10.0) -> None:
        path = shutil.which(self.binary)
        if path is None:
            raise RedisServerError(f"redis-server binary {self.binary!r} not found on PATH")
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        self.socket_path.unlink(missing_ok=True)
        args = [
            path,
            "--port",
            "0",
            "--unixsocket",
            str(self.socket_path),
            "--unixsocketperm",
            "600",
            "--dir",
            str(self.data_dir),
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
            "--logfile",
            "",
            "--save",
            "60 1" if self.persist else "",
            "--appendonly",
            "yes" if self.persist else "no",
            # Full means full: writes fail (the gateway answers 503) and nothing queued is
            # evicted to make room, as an eviction policy would do silently.
            "--maxmemory",
            self.maxmemory,
            "--maxmemory-policy",
            "noeviction",
        ]
        self.data_dir.chmod(0o700)  # queued calls, results and secrets: root's alone
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        umask=0o077)  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RedisServerError(
                    f"redis-server exited with code {self.process.returncode} on start "
                    f"(socket {self.socket_path}, data dir {self.data_dir})"
                )
            if self._ping():
                return
            time.sleep(0.02)
        self.stop()
        raise RedisServerError(f"redis-server did not answer on {self.socket_path} in {timeout}s")

    def _ping(self) -> bool:
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(0.5)
                s.connect(str(self.socket_path))
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (redis saves and exits), then SIGKILL after ``timeout``. Idempotent."""
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.socket_path.unlink(missing_ok=True)
