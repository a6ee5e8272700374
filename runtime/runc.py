"""The runc driver: every invocation of the OCI runtime binary goes through here.

Calls are awaited subprocesses with ``--root`` set to scow's own state dir for
runc, so scow's containers never mix with another engine's. The binary is
configurable (``crun`` takes the same arguments where it works).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from pathlib import Path
from typing import Any

from runtime.errors import RuncError

EXEC_FIFO = "exec.fifo"  # runc's, in its state dir: a created container's init waits on it
RUNC_INIT = b"runc:[2:INIT]"  # that init's name in /proc until it execs the process
_GONE = ("does not exist", "not found", "container not running", "process already finished")


class Runc:
    def __init__(self, root: Path, binary: str = "runc") -> None:
        self.root = root
        self.binary = binary
        # runc's exec fifo is read by its start; crun's is written to: only runc's is ours
        self.reads_exec_fifo = Path(binary).name == "runc"

    def _argv(self, *args: str) -> list[str]:
        return [self.binary, "--root", str(self.root), *args]

    async def _run(
        self,
        *args: str,
        stdin: int | None = asyncio.subprocess.DEVNULL,
        stdout: int | None = asyncio.subprocess.PIPE,
        stderr: int | None = asyncio.subprocess.PIPE,
        pass_fds: tuple[int, ...] = (),
    ) -> tuple[int, bytes, str]:
        argv = self._argv(*args)
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=stdin, stdout=stdout, stderr=stderr, pass_fds=pass_fds
        )
        out, err = await proc.communicate()
        code = proc.returncode if proc.returncode is not None else -1
        return code, out or b"", (err or b"").decode(errors="replace")

    async def run_command(self, *args: str) -> tuple[int, bytes, str]:
        """runc with ``args`` (after ``--root``): its exit code, output and error text."""
        return await self._run(*args)

    async def update(
        self, cid: str, *, memory: int | None = None, cpu_shares: int | None = None,
        pids_limit: int | None = None, cpu_quota: int | None = None,
        cpu_period: int | None = None,
    ) -> None:  # fmt: skip
        """``runc update``: new limits for a running container's cgroup (v1 or v2)."""
        args = []
        if cpu_period is not None:
            args += ["--cpu-period", str(cpu_period)]
        if cpu_quota is not None:
            args += ["--cpu-quota", str(cpu_quota)]
        if memory is not None:
            args += ["--memory", str(memory)]
        if cpu_shares is not None:
            args += ["--cpu-share", str(cpu_shares)]
        if pids_limit is not None:
            args += ["--pids-limit", str(pids_limit)]
        if args:
            await self._check("update", *args, cid)

    async def _check(self, *args: str, tolerate_gone: bool = False) -> bytes:
        code, out, err = await self._run(*args)
        if code != 0:
            if tolerate_gone and any(s in err for s in _GONE):
                return b""
            raise RuncError(self._argv(*args), code, err)
        return out

    async def create(
        self,
        cid: str,
        bundle: Path,
        *,
        pid_file: Path,
        stdin: int | None,
        stdout: int | None,
        stderr: int | None,
    ) -> int:
        """``runc create``: the container waits at its first instruction until ``start``.

        The given fds become the container process's stdio (runc's pass-through
        mode). Returns the container's init pid.
        """
        # runc's own messages go to a log file, never into the container's stderr.
        log_path = bundle / "runc.log"
        log_path.unlink(missing_ok=True)
        proc = await asyncio.create_subprocess_exec(
            self.binary, "--root", str(self.root),
            "--log", str(log_path), "--log-format", "json",
            "create", "--bundle", str(bundle), "--pid-file", str(pid_file), cid,
            stdin=stdin, stdout=stdout, stderr=stderr,
        )  # fmt: skip
        code = await proc.wait()
        if code != 0:
            log = log_path.read_text(errors="replace") if log_path.exists() else ""
            raise RuncError(self._argv("create", cid), code, _runc_log_message(log))
        return int(pid_file.read_text())

    async def run(
        self,
        cid: str,
        bundle: Path,
        *,
        stdin: int | None,
        stdout: int | None,
        stderr: int | None,
    ) -> int:
        """``runc run --keep``: create, start and wait in one runc process.

        Returns the container's exit code (128+N when signal N killed it). The
        container stays, stopped, so its cgroup can still be read: ``delete`` it.
        """
        log_path = bundle / "runc.log"
        proc = await asyncio.create_subprocess_exec(
            self.binary, "--root", str(self.root),
            "--log", str(log_path), "--log-format", "json",
            "run", "--keep", "--bundle", str(bundle), cid,
            stdin=stdin if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=stdout if stdout is not None else asyncio.subprocess.DEVNULL,
            stderr=stderr if stderr is not None else asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        code = await proc.wait()
        if code != 0 and log_path.exists():
            message = _runc_log_message(log_path.read_text(errors="replace"))
            if message:  # runc itself failed, before or instead of running the process
                raise RuncError(self._argv("run", cid), code, message)
        return code

    async def start(self, cid: str, pid: int = 0) -> None:
        """Run the process of a created container (``pid``: its init, when known).

        What ``runc start`` does, without a runc process (about 10 ms of a fresh call):
        a created container's init waits to open runc's ``exec.fifo`` for writing; a
        reader lets it write one byte and exec the process (which closes its end), and
        the fifo is then removed, which is what makes runc report the container
        running. Without the fifo or the init's pid, or with another runtime (crun's
        start writes to its fifo), the runtime's own ``start`` does it.
        """
        fifo = self.root / cid / EXEC_FIFO
        if pid <= 0 or not self.reads_exec_fifo:
            await self._check("start", cid)
            return
        try:
            fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:  # not created by this runc, or started already
            await self._check("start", cid)
            return
        try:
            data = await _await_exec(fd, pid)
        finally:
            os.close(fd)
        if not data:
            raise RuncError(self._argv("start", cid), 1, "container process is already dead")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(fifo)

    async def state(self, cid: str) -> dict[str, Any] | None:
        code, out, err = await self._run("state", cid)
        if code != 0:
            if any(s in err for s in _GONE):
                return None
            raise RuncError(self._argv("state", cid), code, err)
        state: dict[str, Any] = json.loads(out)
        return state

    async def list_all(self) -> list[dict[str, Any]]:
        out = await self._check("list", "--format", "json")
        items: list[dict[str, Any]] = json.loads(out or b"null") or []
        return items

    async def kill(self, cid: str, signal: str = "KILL", *, all_processes: bool = False) -> None:
        args = ["kill", *(["--all"] if all_processes else []), cid, signal]
        await self._check(*args, tolerate_gone=True)

    async def delete(self, cid: str, *, force: bool = False) -> None:
        await self._check("delete", *(["--force"] if force else []), cid, tolerate_gone=True)

    async def pause(self, cid: str) -> None:
        await self._check("pause", cid)

    async def resume(self, cid: str) -> None:
        await self._check("resume", cid)

    async def exec(
        self,
        cid: str,
        process_spec: Path,
        *,
        stdin: int | None,
        stdout: int | None,
        stderr: int | None,
    ) -> asyncio.subprocess.Process:
        """``runc exec`` of a process spec; the returned process exits with the command's code."""
        return await asyncio.create_subprocess_exec(
            *self._argv("exec", "--process", str(process_spec), cid),
            stdin=stdin, stdout=stdout, stderr=stderr,
        )  # fmt: skip


async def _await_exec(fd: int, pid: int) -> bytes:
    """What the init writes to the exec fifo, read until it closes its end by exec'ing
    the process; b"" when the init died instead (looked at every 0.1 s, as runc does)."""
    loop = asyncio.get_running_loop()
    readable = asyncio.Event()
    loop.add_reader(fd, readable.set)
    data = b""
    try:
        while True:
            try:
                await asyncio.wait_for(readable.wait(), 0.1)
            except TimeoutError:
                if not init_waits(pid):
                    with contextlib.suppress(BlockingIOError):
                        data += os.read(fd, 4096)  # it may have run and ended meanwhile
                    return data
                continue
            readable.clear()
            try:
                chunk = os.read(fd, 4096)
            except BlockingIOError:
                continue
            if not chunk:  # the writer has closed: exec'd (with data), or died (without)
                return data
            data += chunk
    finally:
        loop.remove_reader(fd)


def init_waits(pid: int) -> bool:
    """Whether ``pid`` is still runc's init waiting to exec: not a zombie, and not some
    other process that took its pid after it died."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return False
    name_ends = stat.rfind(b")")
    name, state = stat[stat.find(b"(") + 1 : name_ends], stat[name_ends + 2 : name_ends + 3]
    return name == RUNC_INIT and state != b"Z"


def _runc_log_message(log: str) -> str:
    """The error lines of runc's JSON log, or the raw text."""
    messages = []
    for line in log.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            messages.append(line)
            continue
        if entry.get("level") in ("error", "fatal"):
            messages.append(entry.get("msg", ""))
    return "; ".join(m for m in messages if m) or log.strip()
