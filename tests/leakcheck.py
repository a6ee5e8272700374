"""A pytest plugin that fails the session when a test leaves host resources behind.

It snapshots what scow could leak before the session and after every test:
runc containers under the test runc roots, mounts under temp dirs or named for
scow, cgroups, netns and links named for scow, and child processes. Whatever a
test added and did not remove is reported against that test, and anything still
there when the session ends fails it (exit status 1), so CI goes red.

It also hashes the host's runc binary (sha256) before the session and after
every test: a container that wrote through to the binary that ran it (as in
CVE-2019-5736) fails the session, named against the test that did it.

Fixtures that own a long-lived process (the session's redis-server) register its
pid with ``allow_pid``; tests that create runc roots register them with
``watch_runc_root``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
from collections.abc import Generator, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

CGROUP_ROOT = Path("/sys/fs/cgroup")
NETNS_DIR = Path("/run/netns")
# Host-side and peer veth names are s[vp]<hex id>; the bridge and anything else is scow*.
LINK_RE = re.compile(r"^(scow.*|s[vp][0-9a-f]{6,}.*|scn[0-9a-f]{10})$")  # bridges, veths


@dataclass(frozen=True)
class Snapshot:
    runc: frozenset[str] = frozenset()
    mounts: frozenset[str] = frozenset()
    cgroups: frozenset[str] = frozenset()
    netns: frozenset[str] = frozenset()
    links: frozenset[str] = frozenset()
    processes: frozenset[str] = frozenset()

    def added_since(self, before: Snapshot) -> dict[str, list[str]]:
        """Resources present now and not in ``before``, by kind (kinds with none omitted)."""
        out: dict[str, list[str]] = {}
        for kind in ("runc", "mounts", "cgroups", "netns", "links", "processes"):
            new = sorted(getattr(self, kind) - getattr(before, kind))
            if new:
                out[kind] = new
        return out


def _runc_containers(roots: Iterable[Path]) -> set[str]:
    found = set()
    for root in roots:
        try:
            found.update(f"{root}/{name}" for name in os.listdir(root))
        except FileNotFoundError:
            continue
    return found


def _mounts(prefixes: Iterable[str]) -> set[str]:
    found = set()
    prefixes = tuple(prefixes)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].replace("\\040", " ")
            if "scow" in point or (prefixes and point.startswith(prefixes)):
                found.add(point)
    return found


def _cgroups(root: Path = CGROUP_ROOT, max_depth: int = 5) -> set[str]:
    found: set[str] = set()

    def walk(path: Path, depth: int) -> None:
        try:
            entries = list(os.scandir(path))
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            return
        for entry in entries:
            if not entry.is_dir(follow_symlinks=False):
                continue
            if "scow" in entry.name:
                found.add(entry.path)
                walk(Path(entry.path), depth + 1)
            elif depth < max_depth:
                walk(Path(entry.path), depth + 1)

    walk(root, 0)
    return found


def _netns() -> set[str]:
    try:
        return {n for n in os.listdir(NETNS_DIR) if "scow" in n}
    except FileNotFoundError:
        return set()


def _links() -> set[str]:
    return {n for n in os.listdir("/sys/class/net") if LINK_RE.match(n)}


def _processes(allowed: set[int]) -> set[str]:
    found = set()
    for child in psutil.Process().children(recursive=True):
        if child.pid in allowed:
            continue
        try:
            found.add(f"{child.pid} {' '.join(child.cmdline())[:120]}")
        except psutil.ZombieProcess:
            found.add(f"{child.pid} <zombie: a child nobody reaped>")
        except psutil.NoSuchProcess:
            continue
    return found


def _sha256(path: str | None) -> str:
    if path is None:
        return ""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class LeakCheck:
    mount_prefixes: list[str] = field(default_factory=list)
    runc_roots: set[Path] = field(default_factory=set)
    allowed_pids: set[int] = field(default_factory=set)
    baseline: Snapshot = field(default_factory=Snapshot)
    start: Snapshot = field(default_factory=Snapshot)
    by_test: list[tuple[str, dict[str, list[str]]]] = field(default_factory=list)
    runc_path: str | None = None
    runc_sha256: str = ""
    runc_changed_by: str = ""

    def snapshot(self) -> Snapshot:
        return Snapshot(
            runc=frozenset(_runc_containers(self.runc_roots)),
            mounts=frozenset(_mounts(self.mount_prefixes)),
            cgroups=frozenset(_cgroups()),
            netns=frozenset(_netns()),
            links=frozenset(_links()),
            processes=frozenset(_processes(self.allowed_pids)),
        )


_check = LeakCheck()


def allow_pid(pid: int) -> None:
    """A fixture-owned process that outlives single tests (it must be gone by session end)."""
    _check.allowed_pids.add(pid)


def disallow_pid(pid: int) -> None:
    _check.allowed_pids.discard(pid)


def watch_runc_root(root: Path) -> None:
    _check.runc_roots.add(root)


def watch_mounts_under(prefix: Path) -> None:
    _check.mount_prefixes.append(str(prefix))


def pytest_sessionstart(session: pytest.Session) -> None:
    _check.start = _check.baseline = _check.snapshot()
    # The variable points the check at another file: its own test changes one.
    _check.runc_path = os.environ.get("SCOW_LEAKCHECK_RUNC") or shutil.which("runc")
    _check.runc_sha256 = _sha256(_check.runc_path)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    yield
    now = _check.snapshot()
    added = now.added_since(_check.baseline)
    if added:
        _check.by_test.append((item.nodeid, added))
    _check.baseline = now
    if not _check.runc_changed_by and _sha256(_check.runc_path) != _check.runc_sha256:
        _check.runc_changed_by = item.nodeid


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _check.allowed_pids.clear()
    left = _check.snapshot().added_since(_check.start)
    lines = []
    if _check.runc_changed_by:
        lines.append(f"RUNC CHANGED: the sha256 of {_check.runc_path} is not what it was "
                     f"before the session; first seen after {_check.runc_changed_by}")  # fmt: skip
    if not left and not lines:
        return
    if left:
        lines.append("LEAK CHECK FAILED: tests left these behind:")
    for kind, names in left.items():
        lines.extend(f"  {kind}: {name}" for name in names)
    for nodeid, added in _check.by_test:
        for kind, names in added.items():
            still = [n for n in names if n in left.get(kind, [])]
            if still:
                lines.append(f"  first seen after {nodeid}: {kind} {', '.join(still)}")
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    text = "\n".join(lines)
    if reporter is not None:
        reporter.write_line(text, red=True, bold=True)
    else:
        print(text)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


# Below a state dir and a run dir, what holds one entry per container, exec, build or
# archive in progress: empty once everything was removed.
PER_CONTAINER = ("run/runc", "run/conmon", "state/containers", "state/names", "state/tmp",
                 "state/images/tmp", "state/skeletons-tmp")  # fmt: skip


def scow_leftovers(state: Path, run: Path) -> list[str]:
    """What scow left under ``state`` and ``run`` that only a container in use may hold."""
    bases = {"state": state, "run": run}
    left = []
    for rel in PER_CONTAINER:
        top, _, sub = rel.partition("/")
        path = bases[top] / sub
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            left += [str(path / name) for name in os.listdir(path)]
    return sorted(left)
