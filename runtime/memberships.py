"""Containers on user-defined networks: joining and leaving them while they run, and
the /etc/hosts through which the members of a network know each other.

Names are in hosts files, not an embedded DNS server: each container's /etc/hosts is
rewritten in place (it is bind-mounted) whenever a member of one of its networks comes,
goes, or changes its names. So no resolver runs beside the containers, nothing listens
on their networks for a hostile container to probe, and a read-only rootfs changes
nothing; getaddrinfo (glibc, musl, Go, Node's lookup) reads it first. What it does not
do: a program that asks DNS itself (nslookup, dig) does not see the members, and
several containers with one alias resolve to the first of them, not in turn.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import replace

from runtime.bundle import Bundles
from runtime.errors import Conflict, NotFound
from runtime.etcfiles import hosts_file
from runtime.network import Networks
from runtime.records import ContainerRecord, ContainerStore, write_private
from runtime.spec import Attachment


class Memberships:
    def __init__(
        self, store: ContainerStore, networks: Networks, bundles: Bundles,
        events: Callable[[str, ContainerRecord], None],
    ) -> None:  # fmt: skip
        self.store, self.networks, self.bundles, self.events = store, networks, bundles, events

    async def connect(self, ref: str, attachment: Attachment) -> ContainerRecord:
        """Put a container on one more user-defined network (``docker network connect``):
        a new interface in its netns, at once, whatever its state."""
        record = self.store.find(ref)
        if record.options.network in ("none", "host"):
            raise Conflict(f"container {record.name} is on network {record.options.network}: "
                           "it cannot join another network")  # fmt: skip
        if any(e.network == attachment.network for e in record.endpoints):
            raise Conflict(f"container {record.name} is already on network {attachment.network}")
        used = {int(e.interface.removeprefix("eth")) for e in record.endpoints
                if e.interface.removeprefix("eth").isdigit()}  # fmt: skip
        index = next(i for i in range(len(used) + 1) if i not in used)
        net = self.networks.user(attachment.bridge, attachment.subnet)
        endpoint = await self.bundles.attach(
            record.id, net, index, name=attachment.network, network_id=attachment.network_id,
            aliases=attachment.aliases, ip=attachment.ip,
        )  # fmt: skip
        latest = self.store.load(record.id) or record
        options = replace(latest.options, attachments=(*latest.options.attachments, attachment))
        record = latest.evolve(endpoints=(*latest.endpoints, endpoint), options=options,
                               ip=latest.ip or endpoint.ip)  # fmt: skip
        self.store.save(record)
        self.refresh_hosts({attachment.network})
        self.events("connect", record)
        return record

    async def disconnect(self, ref: str, network: str) -> ContainerRecord:
        """Take a container off a network: its interface there goes, its address too."""
        record = self.store.find(ref)
        found = [e for e in record.endpoints if e.network == network]
        if not found:
            raise Conflict(f"container {record.name} is not on network {network}")
        endpoint = found[0]
        index = int(endpoint.interface.removeprefix("eth") or 0)
        net = (self.networks.default if endpoint.bridge == self.networks.default.name
               else self.networks.user(endpoint.bridge, endpoint.subnet))  # fmt: skip
        await asyncio.to_thread(net.detach_interface, record.id, index)
        latest = self.store.load(record.id) or record
        endpoints = tuple(e for e in latest.endpoints if e.network != network)
        options = replace(
            latest.options,
            attachments=tuple(a for a in latest.options.attachments if a.network != network),
        )
        record = latest.evolve(endpoints=endpoints, options=options,
                               ip=endpoints[0].ip if endpoints else "")  # fmt: skip
        self.store.save(record)
        self.refresh_hosts({network} | {e.network for e in endpoints})
        self.events("disconnect", record)
        return record

    def network_members(self, network_id: str) -> list[ContainerRecord]:
        """The containers on the user-defined network ``network_id``."""
        return [r for r in self.store.all()
                if any(e.network_id == network_id for e in r.endpoints)]  # fmt: skip

    def hosts_text(self, record: ContainerRecord) -> str:
        """Container ``record``'s /etc/hosts: itself, its links (each alias), and every
        member of its user-defined networks by name, aliases, short id and host name (as
        Docker's DNS answers them on such a network; kept current
        as members come and go: ``refresh_hosts``)."""
        links = []
        for ref, alias in record.options.links:
            try:
                linked = self.store.find(ref)
            except NotFound:
                continue  # removed since: its names go
            if linked.ip:
                links.append((linked.ip, alias or linked.name, linked.name))
        members: list[tuple[str, list[str]]] = []
        mine = {e.network for e in record.endpoints if e.network_id}
        if mine:
            others = [r for r in self.store.all() if r.id != record.id and r.status != "creating"]
            for r in [record, *others]:
                for e in r.endpoints:
                    if e.network in mine:
                        members.append((e.ip, [r.name, *e.aliases, r.id[:12], r.hostname]))
        gateway = record.endpoints[0].gateway if record.endpoints else ""
        for name, address in record.options.extra_hosts:  # --add-host
            if address == "host-gateway":  # Docker's word for the host, as seen from here
                if not gateway:
                    continue
                address = gateway
            members.append((address, [name]))
        return hosts_file(record.ip, record.hostname, links, members)

    def refresh_hosts(self, networks: set[str]) -> None:
        """Rewrite, in place (each is bind-mounted into its container), the /etc/hosts of
        every container on one of ``networks``."""
        for r in self.store.all():
            if r.status == "creating" or not any(e.network in networks for e in r.endpoints):
                continue
            with contextlib.suppress(FileNotFoundError):  # removed meanwhile
                write_private(self.store.paths(r.id).root / "hosts", self.hosts_text(r), 0o644)

