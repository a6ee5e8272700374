"""A container's cgroup: usage, peak, OOM kills and CPU throttling, and cleanup.

runc creates the cgroup and writes the limits from config.json (memory, cpu
shares, pids; on cgroup v2 it converts shares to cpu.weight itself). This module
reads what happened and removes what a crashed owner left behind.

How it works: every container's cgroup is ``/<parent>/<id>``, absolute, so it is
the same path in each hierarchy.

- cgroup v2 (unified, ``cgroup.controllers`` at the root): one directory with
  memory.current, memory.peak, memory.events (``oom_kill N``), cpu.stat
  (usage_usec, nr_throttled, throttled_usec) and pids.current.
- cgroup v1, and hybrid hosts (v1 controllers plus a v2 mount at ``unified``):
  a directory per controller: memory/ (memory.usage_in_bytes,
  memory.max_usage_in_bytes, memory.oom_control with ``oom_kill N``),
  cpuacct/cpuacct.usage (ns), cpu/cpu.stat (nr_throttled, throttled_time ns),
  pids/pids.current. runc also makes the path in every other hierarchy; removal
  walks them all.
"""

from __future__ import annotations

import errno
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from runtime.errors import CgroupError

DEFAULT_ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class CgroupStats:
    memory_bytes: int = 0
    memory_peak_bytes: int = 0
    oom_kills: int = 0
    cpu_usage_ns: int = 0
    throttled_periods: int = 0
    throttled_ns: int = 0
    pids: int = 0
    pids_refused: int = 0  # forks refused at the pids limit


def _read(path: Path | str) -> str:
    """A cgroup file's text ('' when the cgroup is gone). With os calls, not pathlib's
    buffered text file: these are read around every call, and they are one page."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return ""
    try:
        return os.read(fd, 65536).decode(errors="replace")
    except OSError:
        return ""
    finally:
        os.close(fd)


def _read_int(path: Path | str) -> int:
    text = _read(path).strip()
    return int(text) if text.isdigit() else 0


def _keyed(path: Path | str) -> dict[str, int]:
    """Files of ``key value`` lines (memory.events, cpu.stat, memory.oom_control)."""
    out = {}
    for line in _read(path).splitlines():
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            out[key] = int(value)
    return out


class Cgroups:
    def __init__(self, root: Path = DEFAULT_ROOT, parent: str = "scow") -> None:
        self.root = root
        self.parent = parent.strip("/")
        self.version: Literal["v1", "v2"] = "v2" if (root / "cgroup.controllers").exists() else "v1"

    def path_for(self, cid: str) -> str:
        """The OCI ``linux.cgroupsPath`` for a container id."""
        return f"/{self.parent}/{cid}"

    def _hierarchies(self) -> list[Path]:
        if self.version == "v2":
            return [self.root]
        try:
            entries = sorted(os.scandir(self.root), key=lambda e: e.name)
        except FileNotFoundError:
            return []
        return [Path(e.path) for e in entries if e.is_dir(follow_symlinks=False)]

    def _dir(self, controller: str, cid: str) -> Path:
        base = self.root if self.version == "v2" else self.root / controller
        return base / self.parent / cid

    def stats(self, cid: str) -> CgroupStats:
        if self.version == "v2":
            d = self._dir("", cid)
            cpu = _keyed(d / "cpu.stat")
            return CgroupStats(
                memory_bytes=_read_int(d / "memory.current"),
                memory_peak_bytes=_read_int(d / "memory.peak"),
                oom_kills=_keyed(d / "memory.events").get("oom_kill", 0),
                cpu_usage_ns=cpu.get("usage_usec", 0) * 1000,
                throttled_periods=cpu.get("nr_throttled", 0),
                throttled_ns=cpu.get("throttled_usec", 0) * 1000,
                pids=_read_int(d / "pids.current"),
                pids_refused=_keyed(d / "pids.events").get("max", 0),
            )
        mem = self._dir("memory", cid)
        cpu = _keyed(self._dir("cpu", cid) / "cpu.stat")
        return CgroupStats(
            memory_bytes=_read_int(mem / "memory.usage_in_bytes"),
            memory_peak_bytes=_read_int(mem / "memory.max_usage_in_bytes"),
            oom_kills=_keyed(mem / "memory.oom_control").get("oom_kill", 0),
            cpu_usage_ns=_read_int(self._dir("cpuacct", cid) / "cpuacct.usage"),
            throttled_periods=cpu.get("nr_throttled", 0),
            throttled_ns=cpu.get("throttled_time", 0),
            pids=_read_int(self._dir("pids", cid) / "pids.current"),
            pids_refused=_keyed(self._dir("pids", cid) / "pids.events").get("max", 0),
        )

    def cpu_usage(self, cid: str) -> tuple[int, int]:
        """(CPU used, CPU throttled) in ns: the two figures read around every call,
        without the rest of ``stats``."""
        if self.version == "v2":
            cpu = _keyed(f"{self.root}/{self.parent}/{cid}/cpu.stat")
            return cpu.get("usage_usec", 0) * 1000, cpu.get("throttled_usec", 0) * 1000
        used = _read_int(f"{self.root}/cpuacct/{self.parent}/{cid}/cpuacct.usage")
        throttled = _keyed(f"{self.root}/cpu/{self.parent}/{cid}/cpu.stat")
        return used, throttled.get("throttled_time", 0)

    def pids(self, cid: str) -> list[int]:
        """The processes in the container's cgroup (``docker top``)."""
        d = self._dir("", cid) if self.version == "v2" else self._dir("pids", cid)
        return [int(line) for line in _read(d / "cgroup.procs").split() if line.isdigit()]

    def exists(self, cid: str) -> bool:
        return any((h / self.parent / cid).is_dir() for h in self._hierarchies())

    def ids(self) -> set[str]:
        """Container ids that have a cgroup under our parent in any hierarchy."""
        found: set[str] = set()
        for h in self._hierarchies():
            try:
                found.update(e.name for e in os.scandir(h / self.parent) if e.is_dir())
            except (FileNotFoundError, NotADirectoryError):
                continue
        return found

    def remove(self, cid: str) -> None:
        """Remove the container's cgroup everywhere; already gone is fine.

        Processes still inside (a crashed runc) are killed first: a cgroup with
        members cannot be removed.
        """
        for h in self._hierarchies():
            path = h / self.parent / cid
            if not path.is_dir():
                continue
            self._kill_members(path)
            for attempt in range(50):
                try:
                    os.rmdir(path)
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:
                    if exc.errno != errno.EBUSY or attempt == 49:
                        raise CgroupError(str(path), "rmdir", exc.strerror or str(exc)) from exc
                    time.sleep(0.01)  # the last member is still exiting

    @staticmethod
    def _kill_members(path: Path) -> None:
        kill = path / "cgroup.kill"
        if kill.exists():
            try:
                kill.write_text("1")
                return
            except OSError:
                pass  # cgroup.kill is v2-only on newer kernels; fall back to signals below
        for pid in _read(path / "cgroup.procs").split():
            try:
                os.kill(int(pid), 9)
            except ProcessLookupError:
                continue

    def remove_parent_if_empty(self) -> None:
        for h in self._hierarchies():
            try:
                os.rmdir(h / self.parent)
            except OSError as exc:
                if exc.errno not in (errno.ENOENT, errno.EBUSY, errno.ENOTEMPTY):
                    raise
