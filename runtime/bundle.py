"""A container's bundle laid out, from its record: the rootfs (an overlay of the image's
layers under skeletons of the mount points it needs), its volumes seeded from the
image, its secrets, its network endpoint, its /etc files and runc's config.json.

Everything laid out here is found again from the container's id by the teardown.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import os
import resource
import secrets
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from runtime.cgroups import Cgroups
from runtime.etcfiles import own_resolv_conf, resolv_conf
from runtime.network import NETNS_DIR, BridgeNetwork, Networks, netns_name
from runtime.oci import Mount, make_config
from runtime.records import ContainerPaths, ContainerRecord, NetworkEndpoint, write_private
from runtime.rootdir import RootDir
from runtime.rootfs import make_skeleton, mount_overlay
from runtime.secrets import TARGETS as SECRET_TARGETS
from runtime.secrets import mount_secrets
from runtime.users import resolve_user
from runtime.volumes import VolumeStore, seed_new_volumes, volume_mounts


class Bundles:
    def __init__(
        self, containers: Path, skeletons: Path, volumes: VolumeStore, networks: Networks,
        cgroups: Cgroups, init_binary: str | None,
    ) -> None:  # fmt: skip
        self.containers, self.skeletons = containers, skeletons
        self.volumes, self.networks, self.cgroups = volumes, networks, cgroups
        self.init_binary = init_binary

    def base_skeleton(self, layers: Sequence[Path]) -> Path:
        """The mount points every container of these layers needs, made once per image.

        Per image, not global: overlayfs takes a directory's owner and mode from
        the topmost layer that has it, so the skeleton copies the image's own
        (a world-writable /tmp must stay so).
        """
        key = hashlib.sha256("\0".join(map(str, layers)).encode()).hexdigest()[:24]
        path = self.skeletons / key
        if not (path / "etc" / "hostname").exists():
            tmp = path.with_name(f"{key}.{secrets.token_hex(4)}")
            make_skeleton(tmp, [], layers)
            # What it was made for: the reaper removes it once those layers are gone.
            write_private(tmp.with_name(tmp.name + ".layers"), "\n".join(map(str, layers)), 0o600)
            os.replace(tmp.with_name(tmp.name + ".layers"), path.with_name(key + ".layers"))
            try:
                tmp.rename(path)
            except OSError:
                shutil.rmtree(tmp)  # another create for this image made it first
        return path

    async def attach(
        self, cid: str, net: BridgeNetwork, index: int, *, name: str, network_id: str = "",
        aliases: tuple[str, ...] = (), ip: str = "", isolated: bool = False,
    ) -> NetworkEndpoint:  # fmt: skip
        """Container ``cid`` on ``net`` as ``eth<index>`` (its bridge made when missing)."""
        await asyncio.to_thread(self.networks.ensure, net)
        endpoint = await asyncio.to_thread(
            functools.partial(net.attach, cid, index=index, isolated=isolated, ip=ip)
        )
        return NetworkEndpoint(
            network=name, bridge=net.name, subnet=str(net.subnet), ip=str(endpoint.ip),
            gateway=str(endpoint.gateway), interface=endpoint.interface, mac=endpoint.mac,
            network_id=network_id, aliases=aliases,
        )  # fmt: skip

    async def lay_out(
        self,
        record: ContainerRecord,
        layers: Sequence[Path],
        sources: list[ContainerRecord],
        hosts: Callable[[ContainerRecord], str],
        secret_values: Mapping[str, bytes],
    ) -> ContainerRecord:
        """The record with what was made for it: its networks, volumes and phase times.

        ``hosts`` gives its /etc/hosts once its addresses are known (links and the
        other members of its networks are the runtime's to know)."""
        cid, opts, paths = record.id, record.options, ContainerPaths(self.containers / record.id)
        clock = time.perf_counter()
        mounts, volumes, anonymous, unseeded = volume_mounts(self.volumes, record, sources)
        extra_points = [m.destination for m in mounts] + list(opts.tmpfs)
        if secret_values:
            extra_points += SECRET_TARGETS
        lowers = [self.base_skeleton(layers), *layers]
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
            seeded = [(name, target) for name, target in volumes if name not in unseeded]
            await asyncio.to_thread(seed_new_volumes, image_root, seeded, self.volumes)
        if secret_values:
            mounts += mount_secrets(paths.secrets, secret_values, user.uid, user.gid)

        phases = {"rootfs": time.perf_counter() - clock}
        clock = time.perf_counter()
        endpoints: list[NetworkEndpoint] = []
        if opts.network == "bridge":
            endpoints.append(await self.attach(cid, self.networks.default, 0, name="bridge",
                                               isolated=opts.isolated))  # fmt: skip
        for a in opts.attachments:
            net = self.networks.user(a.bridge, a.subnet)
            endpoints.append(await self.attach(
                cid, net, len(endpoints), name=a.network, network_id=a.network_id,
                aliases=a.aliases, ip=a.ip))  # fmt: skip
        netns_path = str(NETNS_DIR / netns_name(cid)) if endpoints else None
        record = record.evolve(ip=endpoints[0].ip if endpoints else "",
                               endpoints=tuple(endpoints))  # fmt: skip
        if opts.dns or opts.dns_search or opts.dns_options:
            resolver = own_resolv_conf(opts.dns, opts.dns_search, opts.dns_options)
        elif opts.network == "host":
            resolver = _read_text(Path("/etc/resolv.conf"))
        else:
            resolver = resolv_conf(_read_text(Path("/etc/resolv.conf")))
        etc = {"hosts": hosts(record), "resolv.conf": resolver,
               "hostname": record.hostname + "\n"}  # fmt: skip
        rw = "ro" if opts.read_only else "rw"
        for fname, text in etc.items():
            write_private(paths.root / fname, text, 0o644)  # the container's user reads them
            mounts.append(Mount(f"/etc/{fname}", str(paths.root / fname), "bind", ("rbind", rw)))
        phases["netns"] = time.perf_counter() - clock
        config = make_config(
            record.image_config, opts, user=user, hostname=record.hostname,
            rootfs=paths.rootfs, cgroups_path=self.cgroups.path_for(cid),
            extra_mounts=mounts, netns_path=netns_path, init_binary=self.init_binary,
            nofile_hard=resource.getrlimit(resource.RLIMIT_NOFILE)[1],
        )  # fmt: skip
        write_private(paths.bundle / "config.json", json.dumps(config, indent=1), 0o600)
        return record.evolve(volumes=tuple(volumes), anonymous_volumes=tuple(anonymous),
                             phases=phases)  # fmt: skip


def _read_text(path: Path) -> str:
    """A host file of the operator's (/etc/resolv.conf), never one from an image."""
    try:
        return path.read_text(errors="replace")
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return ""
