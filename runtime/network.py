"""Container networking on scow's own bridge, through netlink (pyroute2).

How it works, for a container with id ``ID``:

1. the bridge (its name and subnet from the host's configuration; the gateway is ``.1``
   of the subnet) is created once;
2. a named netns ``scow-ID[:12]`` is made (a bind mount under /run/netns);
3. a veth pair is made with the host end ``svID[:10]`` on the bridge and the peer
   created straight inside the netns, where it is renamed ``eth0``, given the
   address from IPAM and a default route via the bridge's address; the host
   forgets any neighbour entry for that address left by its previous owner;
4. runc joins the netns by path (config.json ``linux.namespaces``).

Teardown walks back from the id alone: delete the host veth (its peer goes with
it), remove the netns, release the address. ``none`` networking never gets here:
runc makes a private netns with only loopback.

The bridge has no NAT and no forwarding to the outside: containers reach each
other and the host's bridge address, nothing else.

Every call here blocks on netlink, and pyroute2's synchronous API refuses to run
on a thread whose event loop is running: async callers use ``asyncio.to_thread``.
"""

from __future__ import annotations

import errno
import hashlib
import os
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pyroute2.config
from pyroute2 import IPRoute, netns
from pyroute2.netlink.exceptions import NetlinkError

from runtime.errors import NetworkError
from runtime.ipam import Ipam

# pyroute2 forks a child for netns work and SIGTERMs it when done. A forked child
# keeps our Python signal handlers and shares asyncio's signal wakeup fd, so that
# SIGTERM, landing before the child exits, reached the parent's event loop as if
# the parent had been asked to stop (the pool manager then shut down). With this,
# the child takes SIGTERM with the default action and just dies.
pyroute2.config.disable_mp_signal = True

NETNS_DIR = Path("/run/netns")


def netns_name(cid: str) -> str:
    return f"scow-{cid[:12]}"


def veth_name(cid: str) -> str:
    return f"sv{cid[:10]}"


def _peer_name(cid: str) -> str:
    return f"sp{cid[:10]}"


@dataclass(frozen=True)
class Endpoint:
    netns_path: str
    ip: IPv4Address
    gateway: IPv4Address
    prefixlen: int


class BridgeNetwork:
    def __init__(
        self, state_dir: Path, name: str, subnet: IPv4Network
    ) -> None:
        if len(name) > 15:
            raise NetworkError(f"bridge name {name!r} is longer than 15 characters")
        self.name = name
        self.subnet = subnet
        self.ipam = Ipam(state_dir / "network" / f"{name}.json", subnet)

    @property
    def gateway(self) -> IPv4Address:
        return self.ipam.gateway

    def ensure_bridge(self) -> None:
        with IPRoute() as ipr:
            if not ipr.link_lookup(ifname=self.name):
                try:
                    ipr.link("add", ifname=self.name, kind="bridge")
                except NetlinkError as exc:
                    if exc.code != errno.EEXIST:  # another process made it just now
                        raise NetworkError(f"cannot create bridge {self.name}: {exc}") from exc
            idx = ipr.link_lookup(ifname=self.name)[0]
            # A bridge without a MAC of its own takes its lowest port's, so it changed as
            # containers came and went; containers kept sending replies to the old one
            # (their ARP entry) and the host's connections stalled for seconds.
            mac = bridge_mac(self.name)
            if ipr.get_links(idx)[0].get_attr("IFLA_ADDRESS") != mac:
                ipr.link("set", index=idx, address=mac)
            have = {a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(index=idx, family=2)}
            if str(self.gateway) not in have:
                try:
                    ipr.addr(
                        "add", index=idx, address=str(self.gateway),
                        prefixlen=self.subnet.prefixlen,
                    )  # fmt: skip
                except NetlinkError as exc:
                    if exc.code != errno.EEXIST:
                        raise NetworkError(f"cannot address bridge {self.name}: {exc}") from exc
            ipr.link("set", index=idx, state="up")

    def remove_bridge(self) -> None:
        with IPRoute() as ipr:
            try:
                ipr.link("del", ifname=self.name)
            except NetlinkError as exc:
                if exc.code != errno.ENODEV:
                    raise

    def attach(self, cid: str, *, isolated: bool = False) -> Endpoint:
        """Make the container's netns and veth; on failure nothing is left.

        An ``isolated`` port of the bridge forwards only to the bridge itself (the
        host), never to another isolated port: containers so attached cannot reach
        each other.
        """
        ip = self.ipam.allocate(cid)
        ns = netns_name(cid)
        try:
            netns.create(ns)
            with IPRoute() as ipr:
                bridge = ipr.link_lookup(ifname=self.name)
                if not bridge:
                    raise NetworkError(f"bridge {self.name} does not exist")
                ipr.link(
                    "add", ifname=veth_name(cid), kind="veth",
                    peer={"ifname": _peer_name(cid), "net_ns_fd": ns},
                )  # fmt: skip
                host = ipr.link_lookup(ifname=veth_name(cid))[0]
                ipr.link("set", index=host, master=bridge[0], state="up")
                if isolated:
                    ipr.brport("set", index=host, isolated=1)
                # The host may still hold a neighbour entry for this address from its
                # last owner (another MAC): drop it, or connections stall until it ages.
                try:
                    ipr.neigh("del", dst=str(ip), ifindex=bridge[0])
                except NetlinkError as exc:
                    if exc.code not in (errno.ENOENT, errno.ESRCH):
                        raise
            with IPRoute(netns=ns) as inner:
                peer = inner.link_lookup(ifname=_peer_name(cid))[0]
                inner.link("set", index=peer, ifname="eth0")
                inner.addr("add", index=peer, address=str(ip), prefixlen=self.subnet.prefixlen)
                inner.link("set", index=peer, state="up")
                inner.link("set", index=inner.link_lookup(ifname="lo")[0], state="up")
                inner.route("add", dst="default", gateway=str(self.gateway))
        except (NetlinkError, OSError) as exc:
            self.detach(cid)
            raise NetworkError(f"cannot attach container {cid[:12]} to {self.name}: {exc}") from exc
        except NetworkError:
            self.detach(cid)
            raise
        return Endpoint(str(NETNS_DIR / ns), ip, self.gateway, self.subnet.prefixlen)

    def detach(self, cid: str) -> None:
        """Remove the container's veth, netns and lease; whatever is already gone is fine."""
        with IPRoute() as ipr:
            try:
                ipr.link("del", ifname=veth_name(cid))
            except NetlinkError as exc:
                if exc.code != errno.ENODEV:
                    raise
        remove_netns(netns_name(cid))
        self.ipam.release(cid)


def bridge_mac(name: str) -> str:
    """A fixed, locally administered unicast MAC for the bridge ``name``.

    >>> bridge_mac("scow0")
    '02:28:0e:7c:7f:cb'
    """
    digest = hashlib.sha256(f"scow-bridge:{name}".encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x02, *digest[:5]))


def remove_netns(name: str) -> None:
    try:
        netns.remove(name)
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.EINVAL):
            raise


def scow_netns() -> set[str]:
    """Names of scow's netns on this host (for the reaper)."""
    try:
        return {n for n in os.listdir(NETNS_DIR) if n.startswith("scow-")}
    except FileNotFoundError:
        return set()
