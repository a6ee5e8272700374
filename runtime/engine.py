"""The runtime: image layers plus run options in, a running limited container out.

``Runtime`` composes the pieces, one family of side effects each: overlay mounts
(rootfs.py), runc (runc.py), conmon and exits (monitor.py), cgroups
(cgroups.py), netns/veth/IPAM (network.py), published ports (portproxy.py),
volumes (volumes.py), records on disk (records.py).

Setup order for a container, and teardown (``destroy``) in reverse, from its id
alone: record -> rootfs -> volumes -> network -> config.json -> runc create ->
port proxy. A create that fails anywhere is undone by the same ``destroy``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import os
import resource
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

from runtime import logs as logfiles
from runtime.cgroups import DEFAULT_ROOT, Cgroups, CgroupStats
from runtime.errors import Conflict, InvalidOption, NotFound
from runtime.etcfiles import hosts_file, resolv_conf
from runtime.monitor import Conmon, ExitStatus, ExitWatcher, become_subreaper
from runtime.network import (
    BridgeNetwork,
    remove_netns,
    scow_netns,
)
from runtime.oci import Mount, make_config
from runtime.ports import bind_ports, orphan_proxies, spawn_proxy, stop_proxy
from runtime.records import (
    ContainerPaths,
    ContainerRecord,
    ContainerStore,
    PublishedPort,
    StdioMode,
)
from runtime.rootdir import RootDir
from runtime.rootfs import changes, is_mounted, make_skeleton, mount_overlay, unmount
from runtime.runc import Runc
from runtime.secrets import TARGETS as SECRET_TARGETS
from runtime.secrets import mount_secrets, unmount_secrets
from runtime.spec import NAME_RE, ImageConfig, Port, RunOptions
from runtime.users import resolve_user
from runtime.volumes import VolumeStore, seed_new_volumes, volume_mounts

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
        self.exits = ExitWatcher()
        self._conmon: Conmon | None = None
        self._bridge_ready = False
        self._proxies: dict[str, subprocess.Popen[bytes]] = {}
        # Told of each lifecycle event (create, start, oom, die, destroy), as Docker
        # reports them; it must not block (the pool manager queues them for Redis).
        self.on_event: Callable[[str, ContainerRecord], None] = lambda action, record: None

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

    def _base_skeleton(self, layers: Sequence[Path]) -> Path:
        """The mount points every container of these layers needs, made once per image.

        Per image, not global: overlayfs takes a directory's owner and mode from
        the topmost layer that has it, so the skeleton copies the image's own
        (a world-writable /tmp must stay so).
        """
        key = hashlib.sha256("\0".join(map(str, layers)).encode()).hexdigest()[:24]
        path = self.config.state_dir / "skeletons" / key
        if not (path / "etc" / "hostname").exists():
            tmp = path.with_name(f"{key}.{secrets.token_hex(4)}")
            make_skeleton(tmp, [], layers)
            # What it was made for: the reaper removes it once those layers are gone.
            _write(tmp.with_name(tmp.name + ".layers"), "\n".join(map(str, layers)), 0o600)
            os.replace(tmp.with_name(tmp.name + ".layers"), path.with_name(key + ".layers"))
            try:
                tmp.rename(path)
            except OSError:
                shutil.rmtree(tmp)  # another create for this image made it first
        return path

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
        links = [(self.store.find(ref), alias) for ref, alias in opts.links.items()]
        for linked, _ in links:
            if not linked.ip:
                raise InvalidOption("link", linked.name, "that container is not on the bridge")
        ports = list(opts.ports)
        if opts.publish_all:
            taken = {p.container_port for p in ports}
            for exposed in image_config.exposed_ports:
                number = int(exposed.partition("/")[0])
                if number not in taken:
                    ports.append(Port(container_port=number))
        name = opts.name or f"scow-{cid[:12]}"
        sockets = bind_ports(ports)
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
                record = await self._lay_out(record, layers, sources, links, secret_values)
            except BaseException:
                await self.destroy(cid)
                raise
        except BaseException:
            for sock, _ in sockets:
                sock.close()
            raise
        return record, sockets

    async def _lay_out(
        self,
        record: ContainerRecord,
        layers: Sequence[Path],
        sources: list[ContainerRecord],
        links: list[tuple[ContainerRecord, str]],
        secret_values: Mapping[str, bytes],
    ) -> ContainerRecord:
        cid, opts, paths = record.id, record.options, self.paths(record.id)
        clock = time.perf_counter()
        mounts, volumes, anonymous = volume_mounts(self.volumes, record, sources)
        extra_points = [m.destination for m in mounts] + list(opts.tmpfs)
        if secret_values:
            extra_points += SECRET_TARGETS
        lowers = [self._base_skeleton(layers), *layers]
        if extra_points:
            make_skeleton(paths.skeleton, extra_points, layers)
            lowers.insert(0, paths.skeleton)
        if opts.read_only:
            await asyncio.to_thread(mount_overlay, paths.rootfs, lowers)
        else:
            paths.upper.mkdir(mode=0o755)  # the merged root takes the upperdir's mode
            paths.work.mkdir(mode=0o700)
            await asyncio.to_thread(mount_overlay, paths.rootfs, lowers, paths.upper, paths.work)
        with RootDir(paths.rootfs) as image_root:  # the image's files, never the host's
            user = resolve_user(
                opts.user or record.image_config.user,
                image_root.read_text("/etc/passwd"),
                image_root.read_text("/etc/group"),
            )
            await asyncio.to_thread(seed_new_volumes, image_root, volumes, self.volumes)
        if secret_values:
            mounts += mount_secrets(paths.secrets, secret_values, user.uid, user.gid)

        phases = {"rootfs": time.perf_counter() - clock}
        clock = time.perf_counter()
        netns_path = None
        ip = ""
        if opts.network == "bridge":
            if not self._bridge_ready:
                await asyncio.to_thread(self.network.ensure_bridge)
                self._bridge_ready = True
            endpoint = await asyncio.to_thread(
                functools.partial(self.network.attach, cid, isolated=opts.isolated)
            )
            netns_path, ip = endpoint.netns_path, str(endpoint.ip)
        link_rows = [(r.ip, alias or r.name, r.name) for r, alias in links]
        etc = {
            "hosts": hosts_file(ip, record.hostname, link_rows),
            "resolv.conf": _read_text(Path("/etc/resolv.conf"))
            if opts.network == "host"
            else resolv_conf(_read_text(Path("/etc/resolv.conf"))),
            "hostname": record.hostname + "\n",
        }
        rw = "ro" if opts.read_only else "rw"
        for fname, text in etc.items():
            _write(paths.root / fname, text, 0o644)  # the container's user reads them
            mounts.append(Mount(f"/etc/{fname}", str(paths.root / fname), "bind", ("rbind", rw)))
        phases["netns"] = time.perf_counter() - clock
        config = make_config(
            record.image_config, opts, user=user, hostname=record.hostname,
            rootfs=paths.rootfs, cgroups_path=self.cgroups.path_for(cid),
            extra_mounts=mounts, netns_path=netns_path, init_binary=self.config.init_binary,
            nofile_hard=resource.getrlimit(resource.RLIMIT_NOFILE)[1],
        )  # fmt: skip
        _write(paths.bundle / "config.json", json.dumps(config, indent=1), 0o600)
        record = record.evolve(ip=ip, volumes=tuple(volumes), anonymous_volumes=tuple(anonymous))
        if anonymous:
            self.store.save(record)  # so that a crash from here on still finds them
        return record.evolve(phases=phases)

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
            pid, monitor_pid = await self._monitored_create(cid)
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
                PublishedPort(port.container_port, port.host_ip, s.getsockname()[1])
                for s, port in sockets
            )
            proxy = spawn_proxy(cid, ip, sockets)
            self._proxies[cid] = proxy
            record = record.evolve(ports=published, proxy_pid=proxy.pid)
        self.store.save(record)
        return record

    async def _monitored_create(self, cid: str) -> tuple[int, int]:
        """``runc create`` under conmon, which keeps the log and the exit code; (init, conmon)."""
        paths = self.paths(cid)
        pid, monitor_pid = await self.conmon.create(
            cid, paths.bundle, log_path=paths.log, exit_dir=paths.exit_dir,
            pid_file=paths.pid_file, conmon_pid_file=paths.monitor_pid_file,
            socket_dir=self.config.run_dir / "conmon",
        )  # fmt: skip
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

    async def revive(self, ref: str) -> ContainerRecord:
        """Start an exited container again (``docker start``/``restart``): a new init in
        the same rootfs, network and ports; its log goes on where it ended."""
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
        pid, monitor_pid = await self._monitored_create(cid)
        record = record.evolve(
            status="created", pid=pid, monitor_pid=monitor_pid, exit_code=None,
            oom_killed=False, finished_at=0.0,
        )  # fmt: skip
        self.store.save(record)
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
        self,
        ref: str,
        argv: Sequence[str],
        *,
        env: Sequence[str] = (),
        user: str = "",
        workdir: str = "",
        stdin: bool = False,
    ) -> AsyncIterator[asyncio.subprocess.Process]:
        """A command running in a running container, its stdio as pipes (stdin only when
        asked for). Leaving the block kills what is left of it."""
        record = self.get(ref)
        if record.status != "running":
            raise Conflict(f"container {record.name} is not running")
        if not argv:
            raise InvalidOption("command", "", "exec needs a command")
        paths = self.paths(record.id)
        process: dict[str, Any] = json.loads((paths.bundle / "config.json").read_text())["process"]
        process["args"] = list(argv)
        process["env"] = [*process["env"], *env]
        if workdir:
            process["cwd"] = workdir
        if user:
            with RootDir(paths.rootfs) as image_root:  # the container's files, never the host's
                u = resolve_user(
                    user, image_root.read_text("/etc/passwd"), image_root.read_text("/etc/group")
                )
            process["user"] = {"uid": u.uid, "gid": u.gid}
        spec = paths.root / f"exec-{secrets.token_hex(4)}.json"
        _write(spec, json.dumps(process), 0o600)
        proc = None
        try:
            proc = await self.runc.exec(
                record.id, spec,
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )  # fmt: skip
            yield proc
        finally:
            if proc is not None and proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
            spec.unlink(missing_ok=True)

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
        paths = self.paths(cid)
        if record is not None and record.status in ("running", "paused"):
            self.on_event("die", record)  # killed by this removal
        if record is not None and record.proxy_pid:
            stop_proxy(record.proxy_pid, cid, self._proxies.pop(cid, None))
        await self.runc.delete(cid, force=True)
        for name in [record.name] if record else self.store.names_of(cid):
            self.store.release_name(name, cid)
        pids = (record.pid, record.monitor_pid) if record else _pids_from_files(paths)
        for pid in pids:
            if pid:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(self.exits.watch(pid)), 5)
                self.exits.forget(pid)
        if record is None or record.options.network == "bridge":
            await asyncio.to_thread(self.network.detach, cid)
        if paths.rootfs.exists() or is_mounted(paths.rootfs):
            await asyncio.to_thread(unmount, paths.rootfs)
        if paths.secrets.exists():
            unmount_secrets(paths.secrets)
        self.cgroups.remove(cid)
        _remove_entry(self.config.run_dir / "conmon" / cid)  # conmon's link to the bundle
        aside = self.store.set_aside(cid)
        if aside is not None:
            await asyncio.to_thread(shutil.rmtree, aside)
        if record is not None:
            self.on_event("destroy", record)
        if remove_volumes and record is not None:
            for name in record.anonymous_volumes:
                with contextlib.suppress(NotFound):
                    self.volumes.remove(name, in_use_by=self.volume_users(name))

    def _remove_unused_skeletons(self) -> None:
        """Skeletons of images whose layers are gone (removed images), and strays."""
        root = self.config.state_dir / "skeletons"
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

    def volume_users(self, name: str) -> list[str]:
        return [r.name for r in self.store.all() if any(v == name for v, _ in r.volumes)]

    async def reap(self) -> list[str]:
        """Remove what a crashed owner left: containers half-created, or with no record.

        Run when the owner starts, before it creates anything. Containers with a
        complete record are kept: they survive restarts of their owner.
        """
        kept = {r.id for r in self.store.all() if r.status != "creating"}
        found = set(self.store.ids()) | self.cgroups.ids()
        found |= {c["id"] for c in await self.runc.list_all()}
        found |= set(self.network.ipam.leases().values())
        reaped = sorted(found - kept)
        for cid in reaped:
            await self.destroy(cid)
        for pid, cid in orphan_proxies(kept):
            stop_proxy(pid, cid)
        # netns and veths carry only a prefix of the id: remove the ones nobody owns.
        owners = {cid[:12] for cid in kept}
        for ns in scow_netns():
            if ns.removeprefix("scow-") not in owners:
                await asyncio.to_thread(remove_netns, ns)
        if self.store.names.is_dir():
            for link in self.store.names.iterdir():
                if os.readlink(link) not in kept:  # claimed by a create that never finished
                    link.unlink()
        for aside in self.store.set_aside_dirs():
            await asyncio.to_thread(shutil.rmtree, aside, True)
        conmon_dir = self.config.run_dir / "conmon"
        if conmon_dir.is_dir():  # links conmon left for containers gone (before this fix too)
            for entry in conmon_dir.iterdir():
                if entry.name not in kept:
                    _remove_entry(entry)
        await asyncio.to_thread(self._remove_unused_skeletons)
        self.cgroups.remove_parent_if_empty()
        return reaped


def _read_text(path: Path) -> str:
    """A host file of the operator's (/etc/resolv.conf), never one from an image."""
    try:
        return path.read_text(errors="replace")
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return ""


def _write(path: Path, text: str, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, mode)


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
