"""The runtime: image layers plus run options in, a running limited container out.

``Runtime`` composes the pieces, one family of side effects each: the bundle's
layout (bundle.py: overlay mounts, volumes, secrets, networks, config.json), runc
(runc.py), conmon, exits and attach sockets (monitor.py), cgroups (cgroups.py),
published ports (ports.py), exec (execs.py), records on disk (records.py), user-defined
networks' members (memberships.py) and the teardown (teardown.py). This module is the
lifecycle: create, start, wait, stop, update, remove, and the ways into a running
container (exec, attach, resize).

Setup order for a container, and teardown (``destroy``) in reverse, from its id
alone: record -> rootfs -> volumes -> network -> config.json -> runc create ->
port proxy. A create that fails anywhere is undone by the same ``destroy``.

Longer than the ~400 lines a module here usually keeps to: the lifecycle is one state
machine over one record (creating, created, running, paused, exited), and its
transitions read best side by side.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

from runtime import logs as logfiles
from runtime.bundle import Bundles
from runtime.cgroups import DEFAULT_ROOT, Cgroups, CgroupStats
from runtime.errors import Conflict, InvalidOption, NotFound, RuncError
from runtime.execs import exec_process, exec_terminal
from runtime.memberships import Memberships
from runtime.monitor import (
    Conmon,
    ExitStatus,
    ExitWatcher,
    attach_socket,
    become_subreaper,
    resize,
)
from runtime.network import BridgeNetwork, Networks
from runtime.ports import bind_ports, spawn_proxy
from runtime.records import (
    ContainerPaths,
    ContainerRecord,
    ContainerStore,
    PublishedPort,
    StdioMode,
    write_private,
)
from runtime.rootdir import RootDir
from runtime.rootfs import changes, is_mounted
from runtime.runc import Runc
from runtime.spec import NAME_RE, ImageConfig, Port, RunOptions
from runtime.teardown import Teardown
from runtime.volumes import VolumeStore

DEFAULT_LOG_SIZE_MAX = 16 << 20


@dataclass(frozen=True)
class RuntimeConfig:
    state_dir: Path
    run_dir: Path
    bridge: str  # the containers' bridge and its subnet (scow's defaults: pool.contract.config)
    subnet: IPv4Network
    runc: str = "runc"
    conmon: str = "conmon"
    cgroup_root: Path = DEFAULT_ROOT
    cgroup_parent: str = "scow"
    init_binary: str | None = shutil.which("tini-static") or shutil.which("tini")
    # A container's log is cut back to nothing past this size (conmon's --log-size-max):
    # a container writing without end never fills the disk. 0: no limit.
    log_size_max: int = DEFAULT_LOG_SIZE_MAX


@dataclass(frozen=True)
class Stdio:
    """The caller's fds for a ``pipes`` container (None: /dev/null)."""

    stdin: int | None = None
    stdout: int | None = None
    stderr: int | None = None


class Runtime:
    def __init__(self, config: RuntimeConfig) -> None:
        self.config = config
        self.store = ContainerStore(config.state_dir / "containers")
        self.volumes = VolumeStore(config.state_dir / "volumes")
        self.runc = Runc(config.run_dir / "runc", config.runc)
        self.cgroups = Cgroups(config.cgroup_root, config.cgroup_parent)
        self.network = BridgeNetwork(config.state_dir, config.bridge, config.subnet)
        self.networks = Networks(config.state_dir, self.network)
        self.exits = ExitWatcher()
        self._conmon: Conmon | None = None
        self._proxies: dict[str, subprocess.Popen[bytes]] = {}
        # Told of each lifecycle event (create, start, oom, die, destroy), as Docker
        # reports them; it must not block (the pool manager queues them for Redis).
        self.on_event: Callable[[str, ContainerRecord], None] = lambda action, record: None
        skeletons = config.state_dir / "skeletons"
        self.bundles = Bundles(self.store.root, skeletons, self.volumes, self.networks,
                               self.cgroups, config.init_binary)  # fmt: skip
        self.memberships = Memberships(self.store, self.networks, self.bundles,
                                       lambda action, record: self.on_event(action, record))
        self.teardown = Teardown(
            store=self.store, runc=self.runc, exits=self.exits, state_dir=config.state_dir,
            cgroups=self.cgroups, volumes=self.volumes, run_dir=config.run_dir,
            skeletons=skeletons, proxies=self._proxies,
            events=lambda action, record: self.on_event(action, record),
        )  # fmt: skip

    async def open(self) -> None:
        """Make the dirs and become the subreaper of container inits. Idempotent.

        The state and run dirs are root's alone (0700): below them are images' setuid
        files, containers' upperdirs and the API token, none of which a host user
        may reach.
        """
        for d in (self.config.state_dir, self.config.run_dir):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(d, 0o700)
        for d in (self.store.root, self.volumes.root, self.config.run_dir / "runc",
                  self.config.state_dir / "skeletons"):  # fmt: skip
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
        become_subreaper()

    @property
    def conmon(self) -> Conmon:
        if self._conmon is None:
            self._conmon = Conmon(self.config.runc, self.runc.root, self.config.conmon,
                                  log_size_max=self.config.log_size_max)  # fmt: skip
        return self._conmon

    def paths(self, cid: str) -> ContainerPaths:
        return self.store.paths(cid)

    # -- create ---------------------------------------------------------------------

    async def create(
        self,
        image_config: ImageConfig,
        layers: Sequence[Path],
        opts: RunOptions,
        *,
        image: str = "",
        stdio: StdioMode = "logs",
        pipes: Stdio | None = None,
        secrets: Mapping[str, bytes] | None = None,
    ) -> ContainerRecord:
        """Create a container ready for ``start``. On any error nothing is left behind.

        ``secrets`` (name -> value) become read-only files in the container (see
        secrets.py); they are kept nowhere else.
        """
        record, sockets = await self._prepare(
            image_config, layers, opts, image, stdio, secrets or {}
        )
        try:
            record = await self._spawn(record, sockets, pipes)
            self.on_event("create", record)
            if record.options.attachments:
                self.memberships.refresh_hosts({a.network for a in record.options.attachments})
            return record
        except BaseException:
            await self.destroy(record.id)
            raise
        finally:
            for sock, _ in sockets:
                sock.close()

    async def run(
        self,
        image_config: ImageConfig,
        layers: Sequence[Path],
        opts: RunOptions,
        *,
        image: str = "",
        pipes: Stdio | None = None,
    ) -> tuple[ContainerRecord, ExitStatus]:
        """Create, run to completion and remove a container, in one ``runc run``.

        The cheapest way to run something once (build steps, ``run --rm``): one
        runc process instead of create, start and delete. Its output goes to
        ``pipes``; it publishes no ports.
        """
        if opts.ports or opts.publish_all:
            raise InvalidOption("ports", opts.ports, "a container run to completion publishes none")
        record, _ = await self._prepare(image_config, layers, opts, image, "pipes", {})
        try:
            p = pipes or Stdio()
            clock = time.perf_counter()
            code = await self.runc.run(
                record.id, self.paths(record.id).bundle,
                stdin=p.stdin, stdout=p.stdout, stderr=p.stderr,
            )  # fmt: skip
            status = ExitStatus(code, self.cgroups.stats(record.id).oom_kills > 0)
            record = record.evolve(
                status="exited", exit_code=status.code, oom_killed=status.oom_killed,
                phases={**record.phases, "run": time.perf_counter() - clock},
            )  # fmt: skip
        finally:
            await self.destroy(record.id)
        return record, status

    async def _prepare(
        self,
        image_config: ImageConfig,
        layers: Sequence[Path],
        opts: RunOptions,
        image: str,
        stdio: StdioMode,
        secret_values: Mapping[str, bytes],
    ) -> tuple[ContainerRecord, list[tuple[socket.socket, Port]]]:
        """Check the input, then lay out the bundle: record, rootfs, volumes, network, config."""
        cid = secrets.token_hex(32)
        for layer in layers:
            if not Path(layer).is_dir():
                raise NotFound("layer", str(layer))
        for v in opts.volumes:
            if v.kind == "bind" and not os.path.exists(v.source):
                raise InvalidOption(
                    "volume", f"{v.source}:{v.target}", f"host path {v.source} does not exist"
                )
        sources = [self.store.find(ref) for ref in opts.volumes_from]
        for ref, _ in opts.links:
            linked = self.store.find(ref)
            if not linked.ip:
                raise InvalidOption("link", linked.name, "that container is on no network")
        ports = list(opts.ports)
        if opts.publish_all:
            taken = {p.container_port for p in ports}
            for exposed in image_config.exposed_ports:
                number = int(exposed.partition("/")[0])
                if number not in taken:
                    ports.append(Port(container_port=number))
        name = opts.name or f"scow-{cid[:12]}"
        bridge_ip = ""
        if ports:  # published on 127.0.0.1 and on the address of its first network's bridge
            first = self.network if opts.network == "bridge" else self.networks.user(
                opts.attachments[0].bridge, opts.attachments[0].subnet)  # fmt: skip
            await asyncio.to_thread(self.networks.ensure, first)
            bridge_ip = str(first.gateway)
        sockets = bind_ports(ports, bridge_ip)
        try:
            self.store.claim_name(name, cid)
            record = ContainerRecord(
                id=cid, name=name, created=time.time(), image=image,
                image_config=image_config, options=opts,
                layers=tuple(str(p) for p in layers), stdio=stdio,
                hostname=opts.hostname or cid[:12], labels=dict(opts.labels),
            )  # fmt: skip
            try:
                self.paths(cid).root.mkdir(mode=0o700, parents=True)
                self.store.save(record)
                record = await self.bundles.lay_out(record, layers, sources,
                                                    self.memberships.hosts_text,
                                                    secret_values)  # fmt: skip
                if record.anonymous_volumes:
                    self.store.save(record)  # so that a crash from here on still finds them
            except BaseException:
                await self.destroy(cid)
                raise
        except BaseException:
            for sock, _ in sockets:
                sock.close()
            raise
        return record, sockets

    async def _spawn(
        self,
        record: ContainerRecord,
        sockets: list[tuple[socket.socket, Port]],
        pipes: Stdio | None,
    ) -> ContainerRecord:
        """``runc create`` (through conmon for ``logs``), then the port proxy."""
        cid, paths, ip, phases = record.id, self.paths(record.id), record.ip, dict(record.phases)
        clock = time.perf_counter()
        if record.stdio == "logs":
            pid, monitor_pid = await self._monitored_create(cid, record.options)
        else:
            p = pipes or Stdio()
            pid = await self.runc.create(
                cid, paths.bundle, pid_file=paths.pid_file,
                stdin=p.stdin if p.stdin is not None else subprocess.DEVNULL,
                stdout=p.stdout if p.stdout is not None else subprocess.DEVNULL,
                stderr=p.stderr if p.stderr is not None else subprocess.DEVNULL,
            )  # fmt: skip
            monitor_pid = 0
            self.exits.watch(pid)
        phases["create"] = time.perf_counter() - clock
        record = record.evolve(status="created", pid=pid, monitor_pid=monitor_pid, phases=phases)
        if sockets:
            published = tuple(
                PublishedPort(port.container_port, port.host_ip, port.host_port, port.protocol)
                for _, port in sockets
            )
            proxy = spawn_proxy(cid, ip, sockets, self.config.state_dir)
            self._proxies[cid] = proxy
            record = record.evolve(ports=published, proxy_pid=proxy.pid)
        self.store.save(record)
        return record

    async def _monitored_create(self, cid: str, opts: RunOptions) -> tuple[int, int]:
        """``runc create`` under conmon, which keeps the log and the exit code; (init, conmon).

        A terminal's stdin is never closed by a client leaving (Docker keeps a TTY's open
        for the next ``attach``); a plain stdin is with ``stdin_once``."""
        paths = self.paths(cid)
        try:
            pid, monitor_pid = await self.conmon.create(
            cid, paths.bundle, log_path=paths.log, exit_dir=paths.exit_dir,
            pid_file=paths.pid_file, conmon_pid_file=paths.monitor_pid_file,
            socket_dir=self.config.run_dir / "conmon", terminal=opts.tty,
            stdin=opts.stdin_open,
            leave_stdin_open=opts.tty or (opts.stdin_open and not opts.stdin_once),
            )  # fmt: skip
        except RuncError:
            # conmon forked and then runc failed: it exits too, and as our child (we are
            # the subreaper) it must be reaped, not left a zombie.
            with contextlib.suppress(FileNotFoundError, ValueError):
                self.exits.watch(int(paths.monitor_pid_file.read_text()))
            raise
        self.exits.watch(monitor_pid)
        return pid, monitor_pid

    # -- lifecycle ------------------------------------------------------------------

    def get(self, ref: str) -> ContainerRecord:
        return self._refresh(self.store.find(ref))

    def containers(self) -> list[ContainerRecord]:
        return [self._refresh(r) for r in self.store.all()]

    async def start(self, ref: str) -> ContainerRecord:
        record = self.get(ref)
        if record.status != "created":
            raise Conflict(f"container {record.name} is {record.status}, not created")
        clock = time.perf_counter()
        await self.runc.start(record.id, record.pid)
        phases = {**record.phases, "start": time.perf_counter() - clock}
        record = record.evolve(status="running", started_at=time.time(), phases=phases)
        self.store.save(record)
        self.on_event("start", record)
        return record

    async def revive(
        self, ref: str, created: Callable[[ContainerRecord], Awaitable[None]] | None = None
    ) -> ContainerRecord:
        """Start an exited container again (``docker start``/``restart``): a new init in
        the same rootfs, network and ports; its log goes on where it ended. ``created`` is
        awaited between its creation and its start (clients attach to it then)."""
        record = self.get(ref)
        if record.status != "exited":
            raise Conflict(f"container {record.name} is {record.status}, not exited")
        if record.stdio != "logs":
            raise Conflict(f"container {record.name} cannot be started again")
        cid, paths = record.id, self.paths(record.id)
        await self.runc.delete(cid, force=True)
        for pid in (record.pid, record.monitor_pid):
            self.exits.forget(pid)
        shutil.rmtree(paths.exit_dir, ignore_errors=True)
        pid, monitor_pid = await self._monitored_create(cid, record.options)
        record = record.evolve(
            status="created", pid=pid, monitor_pid=monitor_pid, exit_code=None,
            oom_killed=False, finished_at=0.0,
        )  # fmt: skip
        self.store.save(record)
        if created is not None:
            await created(record)
        return await self.start(cid)

    async def wait(self, ref: str) -> ExitStatus:
        """Until the container's main process ends; its exit code and whether OOM killed it."""
        record = self.store.find(ref)
        watched = record.stdio == "pipes" and self.exits.watching(record.pid)
        if record.status == "exited" and record.exit_code is not None and not watched:
            return ExitStatus(record.exit_code, record.oom_killed)
        if record.stdio == "logs":
            await self.exits.watch(record.monitor_pid)
            code = _exit_file_code(self.paths(record.id))
        else:
            code = await self.exits.watch(record.pid)
        status = ExitStatus(
            code if code is not None else -1, self.cgroups.stats(record.id).oom_kills > 0
        )
        latest = self.store.load(record.id)
        if latest is not None:
            if latest.status != "exited":
                if status.oom_killed:
                    self.on_event("oom", latest)
                self.on_event("die", latest.evolve(exit_code=status.code))
            exited = latest.evolve(
                status="exited", exit_code=status.code, oom_killed=status.oom_killed,
                finished_at=time.time(),
            )  # fmt: skip
            with contextlib.suppress(FileNotFoundError):  # removed meanwhile: nothing to keep
                self.store.save(exited)
        return status

    async def kill(self, ref: str, sig: str = "KILL") -> None:
        record = self.get(ref)
        if record.status not in ("running", "paused"):
            raise Conflict(f"container {record.name} is not running")
        await self.runc.kill(record.id, sig)

    async def stop(self, ref: str, timeout: float = 10.0) -> ExitStatus:
        """The image's stop signal (SIGTERM by default), then SIGKILL after ``timeout``."""
        record = self.get(ref)
        if record.status in ("running", "paused"):
            if record.status == "paused":
                await self.runc.resume(record.id)
            sig = record.image_config.stop_signal.removeprefix("SIG") or "TERM"
            await self.runc.kill(record.id, sig)
            try:
                return await asyncio.wait_for(asyncio.shield(self.wait(record.id)), timeout)
            except TimeoutError:
                await self.runc.kill(record.id, "KILL", all_processes=True)
        return await self.wait(record.id)

    async def pause(self, ref: str) -> None:
        record = self.get(ref)
        await self.runc.pause(record.id)
        self.store.save(record.evolve(status="paused"))

    async def resume(self, ref: str) -> None:
        record = self.get(ref)
        await self.runc.resume(record.id)
        self.store.save(record.evolve(status="running"))

    def note(self, ref: str, **changes: Any) -> ContainerRecord:
        """Keep what the container's owner tracks with it (its health, restart count, a
        stop by hand) in its record; the record as saved."""
        record = self.store.find(ref)
        record = record.evolve(**changes)
        self.store.save(record)
        return record

    def rename(self, ref: str, name: str) -> ContainerRecord:
        record = self.store.find(ref)
        if not NAME_RE.match(name):
            raise InvalidOption("name", name, "use letters, digits, '_', '.' and '-' (max 128)")
        if name == record.name:
            return record
        old = record.name
        self.store.claim_name(name, record.id)
        record = record.evolve(name=name, options=replace(record.options, name=name))
        self.store.save(record)
        self.store.release_name(old, record.id)
        self.on_event("rename", record)
        if networks := {e.network for e in record.endpoints if e.network_id}:
            self.memberships.refresh_hosts(networks)  # its members know it by its new name
        return record

    async def remove(self, ref: str, *, force: bool = False, volumes: bool = False) -> None:
        record = self.get(ref)
        if record.status in ("running", "paused") and not force:
            raise Conflict(
                f"container {record.name} is {record.status}: stop it first or force removal"
            )
        await self.destroy(record.id, remove_volumes=volumes)

    @contextlib.asynccontextmanager
    async def exec_process(
        self, ref: str, argv: Sequence[str], *, env: Sequence[str] = (), user: str = "",
        workdir: str = "", stdin: bool = False,
    ) -> AsyncIterator[asyncio.subprocess.Process]:  # fmt: skip
        """A command running in a running container, its stdio as pipes (stdin only when
        asked for). Leaving the block kills what is left of it."""
        record = self.get(ref)
        if record.status != "running":
            raise Conflict(f"container {record.name} is not running")
        async with exec_process(self.runc, record, self.paths(record.id), argv, env=env,
                                user=user, workdir=workdir, stdin=stdin) as proc:  # fmt: skip
            yield proc

    async def exec_terminal(
        self, ref: str, argv: Sequence[str], *, env: Sequence[str] = (), user: str = "",
        workdir: str = "", size: tuple[int, int] = (0, 0),
    ) -> tuple[int, int]:  # fmt: skip
        """A command running in a running container in a terminal of its own: its pid (our
        child: ``wait_pid``) and the terminal's master fd, which the caller closes."""
        record = self.get(ref)
        if record.status != "running":
            raise Conflict(f"container {record.name} is not running")
        pid, master = await exec_terminal(
            self.runc, record, self.paths(record.id), self.config.run_dir / "consoles", argv,
            env=env, user=user, workdir=workdir, size=size,
        )  # fmt: skip
        self.exits.watch(pid)
        return pid, master

    async def wait_pid(self, pid: int) -> int:
        """The exit code of a process of ours in a container (an exec in a terminal)."""
        try:
            code = await self.exits.watch(pid)
        finally:
            self.exits.forget(pid)
        return code if code is not None else -1

    def attach_socket(self, ref: str) -> socket.socket:
        """A connection to the container's attach socket (see monitor.attach_socket): its
        output as it comes, and its stdin when it was created with one."""
        record = self.get(ref)
        if record.stdio != "logs" or record.status not in ("created", "running", "paused"):
            raise Conflict(f"container {record.name} is {record.status}: nothing to attach to")
        try:
            return attach_socket(self.paths(record.id).bundle)
        except OSError as exc:
            raise Conflict(f"container {record.name} cannot be attached to: {exc}") from None

    def resize(self, ref: str, rows: int, columns: int) -> None:
        """Resize the container's terminal."""
        record = self.get(ref)
        if not record.options.tty:
            raise Conflict(f"container {record.name} has no terminal")
        if record.status not in ("created", "running", "paused"):
            raise Conflict(f"container {record.name} is {record.status}")
        try:
            resize(self.paths(record.id).bundle, rows, columns)
        except OSError as exc:
            raise Conflict(f"cannot resize {record.name}'s terminal: {exc}") from None

    async def update(
        self, ref: str, *, memory: int | None = None, cpu_shares: int | None = None,
        pids_limit: int | None = None, cpu_quota: int | None = None,
        cpu_period: int | None = None, **kept: Any,
    ) -> ContainerRecord:  # fmt: skip
        """New limits for a container (applied at once when it runs, kept for its next
        start), and new values of what its owner keeps with it (``restart``...)."""
        record = self.get(ref)
        changes: dict[str, Any] = {**kept}
        if memory is not None:
            changes["memory"] = memory
        if cpu_shares is not None:
            changes["cpu_shares"] = cpu_shares
        if pids_limit is not None:
            changes["pids_limit"] = pids_limit
        if cpu_quota is not None:
            changes.update(cpu_quota=cpu_quota, cpu_period=cpu_period or 100_000)
        options = replace(record.options, **changes)  # checked by RunOptions itself
        if record.status in ("created", "running", "paused"):
            await self.runc.update(
                record.id, memory=memory, cpu_shares=cpu_shares, pids_limit=pids_limit,
                cpu_quota=cpu_quota, cpu_period=options.cpu_period if cpu_quota else None,
            )  # fmt: skip
        config_path = self.paths(record.id).bundle / "config.json"
        config = json.loads(config_path.read_text())
        limits = config["linux"]["resources"]
        limits["memory"]["limit"] = options.memory
        limits["cpu"]["shares"] = options.cpu_shares
        limits["pids"]["limit"] = options.pids_limit
        if options.cpu_quota:
            limits["cpu"].update(quota=options.cpu_quota, period=options.cpu_period or 100_000)
        write_private(config_path, json.dumps(config, indent=1), 0o600)
        record = self.store.load(record.id) or record
        record = record.evolve(options=options)
        self.store.save(record)
        return record

    async def exec(
        self,
        ref: str,
        argv: Sequence[str],
        *,
        env: Sequence[str] = (),
        user: str = "",
        workdir: str = "",
        stdin: bytes | None = None,
    ) -> tuple[int, bytes, bytes]:
        """Run a command in a running container; its exit code, stdout and stderr."""
        async with self.exec_process(
            ref, argv, env=env, user=user, workdir=workdir, stdin=stdin is not None
        ) as proc:
            out, err = await proc.communicate(stdin)
        return proc.returncode if proc.returncode is not None else -1, out, err

    def files(self, ref: str) -> RootDir:
        """The container's filesystem as the host sees it, for copying files in and out:
        its rootfs with its volumes, binds and /etc files where the container sees them,
        and its tmpfs mounts refused. The caller closes it."""
        record = self.store.find(ref)
        paths = self.paths(record.id)
        if not is_mounted(paths.rootfs):
            raise Conflict(f"container {record.name} has no root filesystem mounted")
        mounts: dict[str, Path] = {
            f"/etc/{name}": paths.root / name for name in ("hosts", "hostname", "resolv.conf")
        }
        for name, target in record.volumes:
            mounts[target] = self.volumes.get(name).path
        for v in record.options.volumes:
            if v.kind == "bind":
                mounts[v.target] = Path(v.source)
        hidden = ["/proc", "/sys", "/dev", *record.options.tmpfs]
        if record.options.read_only:
            hidden += ["/tmp", "/run"]
        return RootDir(paths.rootfs, mounts=mounts, hidden=hidden)

    def changes(self, ref: str) -> list[tuple[str, str]]:
        """What a writable container changed in its rootfs: (A|C|D, path)."""
        record = self.store.find(ref)
        if record.options.read_only:
            return []
        return changes(self.paths(record.id).upper, [Path(p) for p in record.layers])

    def stats(self, ref: str) -> CgroupStats:
        return self.cgroups.stats(self.store.find(ref).id)

    def logs_from(self, cid: str, offset: int) -> tuple[list[logfiles.LogLine], int]:
        """Log lines written since byte ``offset`` of container ``cid``'s log, and the new
        offset: for reading a long-lived container's log a piece at a time."""
        return logfiles.read_from(self.paths(cid).log, offset)

    def logs(self, ref: str, **options: Any) -> list[logfiles.LogLine]:
        return logfiles.read(self.paths(self.store.find(ref).id).log, **options)

    def _refresh(self, record: ContainerRecord) -> ContainerRecord:
        """Notice exits that happened while nobody was waiting (or we were restarted)."""
        if record.status not in ("running", "paused"):
            return record
        code: int | None
        if record.stdio == "logs":
            code = _exit_file_code(self.paths(record.id))
            if code is None:
                return record
        elif _alive(record.pid) or self.exits.watching(record.pid):
            # Running, or our child whose exit status the watcher holds (it may have
            # reaped it already): wait() records the real code, -1 here would hide it.
            return record
        else:
            code = None
        record = record.evolve(
            status="exited", exit_code=code if code is not None else -1,
            oom_killed=self.cgroups.stats(record.id).oom_kills > 0, finished_at=time.time(),
        )  # fmt: skip
        self.store.save(record)
        return record

    # -- teardown -------------------------------------------------------------------

    async def destroy(self, cid: str, *, remove_volumes: bool = False) -> None:
        """Remove everything container ``cid`` has, from its id alone. Idempotent."""
        record = self.store.load(cid)
        await self.teardown.destroy(cid, remove_volumes=remove_volumes)
        networks = {e.network for e in record.endpoints if e.network_id} if record else set()
        if networks:
            self.memberships.refresh_hosts(networks)

    def volume_users(self, name: str) -> list[str]:
        return self.store.volume_users(name)

    async def reap(self) -> list[str]:
        """Remove what a crashed owner left (see teardown.py); the ids of what went."""
        return await self.teardown.reap()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def _exit_file_code(paths: ContainerPaths) -> int | None:
    try:
        text = next(paths.exit_dir.iterdir()).read_text().strip()
    except (FileNotFoundError, StopIteration):
        return None
    return int(text) if text.lstrip("-").isdigit() else None
