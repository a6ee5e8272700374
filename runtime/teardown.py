"""A container taken apart from its id alone, in the reverse order of its setup: port
proxy, runc, names, processes, network, rootfs, secrets, cgroup, conmon's link, and
its directory; and the reaper, which does that for whatever a crashed owner left.

Each step tolerates what is already gone, so a teardown cut short is finished by the
next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
from collections.abc import Callable
from ipaddress import IPv4Network
from pathlib import Path

from runtime.cgroups import Cgroups
from runtime.errors import NotFound
from runtime.ipam import Ipam
from runtime.monitor import ExitWatcher
from runtime.network import (
    detach_all,
    lease_owners,
    release_everywhere,
)
from runtime.ports import orphan_proxies, stop_proxy
from runtime.records import ContainerPaths, ContainerRecord, ContainerStore
from runtime.rootfs import is_mounted, unmount
from runtime.runc import Runc
from runtime.secrets import unmount_secrets
from runtime.volumes import VolumeStore


class Teardown:
    def __init__(
        self, *, store: ContainerStore, runc: Runc, exits: ExitWatcher, state_dir: Path,
        cgroups: Cgroups, volumes: VolumeStore, run_dir: Path, skeletons: Path,
        proxies: dict[str, subprocess.Popen[bytes]],
        events: Callable[[str, ContainerRecord], None],
    ) -> None:  # fmt: skip
        self.store, self.runc, self.exits, self.state_dir = store, runc, exits, state_dir
        self.cgroups, self.volumes = cgroups, volumes
        self.run_dir, self.skeletons = run_dir, skeletons
        self.proxies, self.events = proxies, events

    async def destroy(self, cid: str, *, remove_volumes: bool = False) -> None:
        """Remove everything container ``cid`` has, from its id alone. Idempotent."""
        record = self.store.load(cid)
        paths = self.store.paths(cid)
        if record is not None and record.status in ("running", "paused"):
            self.events("die", record)  # killed by this removal
        if record is not None and record.proxy_pid:
            stop_proxy(record.proxy_pid, cid, self.proxies.pop(cid, None))
        await self.runc.delete(cid, force=True)
        for name in [record.name] if record else self.store.names_of(cid):
            self.store.release_name(name, cid)
        pids = (record.pid, record.monitor_pid) if record else _pids_from_files(paths)
        for pid in pids:
            if pid:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(self.exits.watch(pid)), 5)
                self.exits.forget(pid)
        if record is None or record.endpoints or record.options.network == "bridge":
            await asyncio.to_thread(self._detach, cid, record)
        if paths.rootfs.exists() or is_mounted(paths.rootfs):
            await asyncio.to_thread(unmount, paths.rootfs)
        if paths.secrets.exists():
            unmount_secrets(paths.secrets)
        self.cgroups.remove(cid)
        _remove_entry(self.run_dir / "conmon" / cid)  # conmon's link to the bundle
        aside = self.store.set_aside(cid)
        if aside is not None:
            await asyncio.to_thread(shutil.rmtree, aside)
        if record is not None:
            self.events("destroy", record)
        if remove_volumes and record is not None:
            for name in record.anonymous_volumes:
                with contextlib.suppress(NotFound):
                    self.volumes.remove(name, in_use_by=self.store.volume_users(name))

    def _detach(self, cid: str, record: ContainerRecord | None) -> None:
        """Its veths and netns, and its addresses: in its networks' IPAM, or (no record
        left to say which) in every network's."""
        if record is None or not record.endpoints:  # or a record older than endpoints
            detach_all(cid, reaping=record is None)
            release_everywhere(self.state_dir, cid)
            return
        detach_all(cid)
        for e in record.endpoints:
            ipam = Ipam(self.state_dir / "network" / f"{e.bridge}.json", IPv4Network(e.subnet))
            ipam.release(cid)

    def _remove_unused_skeletons(self) -> None:
        """Skeletons of images whose layers are gone (removed images), and strays."""
        root = self.skeletons
        if not root.is_dir():
            return
        for entry in root.iterdir():
            if entry.suffix == ".layers":
                continue
            listed = entry.with_name(entry.name + ".layers")
            try:
                layers = listed.read_text().splitlines()
            except FileNotFoundError:
                layers = []
            if not layers or not all(Path(p).is_dir() for p in layers):
                shutil.rmtree(entry, ignore_errors=True)
                listed.unlink(missing_ok=True)

    async def reap(self) -> list[str]:
        """Remove what a crashed owner left: containers half-created, or with no record.

        Run when the owner starts, before it creates anything. Containers with a
        complete record are kept: they survive restarts of their owner.
        """
        kept = {r.id for r in self.store.all() if r.status != "creating"}
        found = set(self.store.ids()) | self.cgroups.ids()
        found |= {c["id"] for c in await self.runc.list_all()}
        found |= lease_owners(self.state_dir)
        reaped = sorted(found - kept)
        for cid in reaped:
            await self.destroy(cid)
        for pid, cid in orphan_proxies(kept, self.state_dir):
            stop_proxy(pid, cid)
        # A netns is reaped with its container (its IPAM lease or record names it): another
        # node on this machine has netns of its own, which are not ours to take.
        if self.store.names.is_dir():
            for link in self.store.names.iterdir():
                if os.readlink(link) not in kept:  # claimed by a create that never finished
                    link.unlink()
        for aside in self.store.set_aside_dirs():
            await asyncio.to_thread(shutil.rmtree, aside, True)
        conmon_dir = self.run_dir / "conmon"
        if conmon_dir.is_dir():  # links conmon left for containers gone (before this fix too)
            for entry in conmon_dir.iterdir():
                if entry.name not in kept:
                    _remove_entry(entry)
        await asyncio.to_thread(self._remove_unused_skeletons)
        self.cgroups.remove_parent_if_empty()
        return reaped


def _remove_entry(path: Path) -> None:
    """A link, file or directory at ``path``, gone; already gone is fine."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        pass


def _pids_from_files(paths: ContainerPaths) -> tuple[int, ...]:
    """The init and conmon pids of a container whose record is gone (for the reaper)."""
    pids = []
    for path in (paths.pid_file, paths.monitor_pid_file):
        with contextlib.suppress(FileNotFoundError, ValueError):
            pids.append(int(path.read_text()))
    return tuple(pids)
