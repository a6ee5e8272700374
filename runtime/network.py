"""Container networking on scow's own bridges, through netlink (pyroute2).

How it works, for a container with id ``ID``:

1. each bridge (scow's default ``scow0``, or one per user-defined network, named from
   its id) is created once, with the subnet's ``.1`` as its own address (the
   containers' gateway) and a MAC of its own;
2. a named netns ``scow-ID[:12]`` is made (a bind mount under /run/netns), once;
3. for each network the container is on, a veth pair is made: the host end
   (``svID[:10]`` for the first, ``svID[:10].N`` for the N-th) on that network's
   bridge, the peer created straight inside the netns, renamed ``ethN``, given its
   address from that network's IPAM and a MAC made from it; the host forgets any
   neighbour entry for that address left by its previous owner;
4. on scow's default bridge the container gets a default route via the bridge; on a
   user-defined network only the network's own subnet, so no packet for another
   network leaves the container, whatever the host forwards;
5. runc joins the netns by path (config.json ``linux.namespaces``).

Teardown walks back from the id alone: delete every host veth whose name starts with
``svID[:10]`` (their peers go with them), remove the netns, release the container's
address in every network's IPAM. ``none`` networking never gets here: runc makes a
private netns with only loopback.

The bridges have no NAT and no forwarding to the outside: containers reach the other
members of their networks and the host's bridge addresses, nothing else.

Every call here blocks on netlink, and pyroute2's synchronous API refuses to run
on a thread whose event loop is running: async callers use ``asyncio.to_thread``.
"""

from __future__ import annotations

import contextlib
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


def veth_name(cid: str, index: int = 0) -> str:
    return f"sv{cid[:10]}" if index == 0 else f"sv{cid[:10]}.{index}"


def _peer_name(cid: str, index: int) -> str:
    return f"sp{cid[:10]}{index}"


def user_bridge_name(network_id: str) -> str:
    """The bridge of a user-defined network, from its id (at most 15 characters)."""
    return f"scn{network_id[:10]}"


def container_mac(ip: IPv4Address) -> str:
    """A container's MAC from its address, as Docker makes them (02:42 and the address).

    >>> container_mac(IPv4Address("10.213.0.2"))
    '02:42:0a:d5:00:02'
    """
    return ":".join(f"{b:02x}" for b in (0x02, 0x42, *ip.packed))


@dataclass(frozen=True)
class Endpoint:
    netns_path: str
    ip: IPv4Address
    gateway: IPv4Address
    prefixlen: int
    interface: str
    mac: str


class BridgeNetwork:
    """One bridge and its subnet. ``default_route``: containers route everything through
    it (scow's default bridge), or reach only its subnet (user-defined networks)."""

    def __init__(
        self, state_dir: Path, name: str, subnet: IPv4Network, *, default_route: bool = True
    ) -> None:
        if len(name) > 15:
            raise NetworkError(f"bridge name {name!r} is longer than 15 characters")
        self.name = name
        self.subnet = subnet
        self.default_route = default_route
        self.ipam = Ipam(state_dir / "network" / f"{name}.json", subnet)

    @property
    def gateway(self) -> IPv4Address:
        return self.ipam.gateway

    def exists(self) -> bool:
        with IPRoute() as ipr:
            return bool(ipr.link_lookup(ifname=self.name))

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
        _delete_link(self.name)

    def attach(
        self, cid: str, *, index: int = 0, isolated: bool = False, ip: str = ""
    ) -> Endpoint:
        """Put the container on this bridge as interface ``eth<index>`` (its netns is made
        when missing); on failure that interface and its address are not left.

        An ``isolated`` port of the bridge forwards only to the bridge itself (the
        host), never to another isolated port: containers so attached cannot reach
        each other. ``ip``: the address wanted (taken: an error), else one from IPAM.
        """
        address = self.ipam.allocate(cid, want=ip)
        ns = netns_name(cid)
        host_end, peer, inside = veth_name(cid, index), _peer_name(cid, index), f"eth{index}"
        mac = container_mac(address)
        try:
            ensure_netns(ns)
            with IPRoute() as ipr:
                bridge = ipr.link_lookup(ifname=self.name)
                if not bridge:
                    raise NetworkError(f"bridge {self.name} does not exist")
                ipr.link("add", ifname=host_end, kind="veth",
                         peer={"ifname": peer, "net_ns_fd": ns})  # fmt: skip
                host = ipr.link_lookup(ifname=host_end)[0]
                ipr.link("set", index=host, master=bridge[0], state="up")
                if isolated:
                    ipr.brport("set", index=host, isolated=1)
                # The host may still hold a neighbour entry for this address from its
                # last owner (another MAC): drop it, or connections stall until it ages.
                try:
                    ipr.neigh("del", dst=str(address), ifindex=bridge[0])
                except NetlinkError as exc:
                    if exc.code not in (errno.ENOENT, errno.ESRCH):
                        raise
            with IPRoute(netns=ns) as inner:
                link = inner.link_lookup(ifname=peer)[0]
                inner.link("set", index=link, ifname=inside, address=mac)
                inner.addr("add", index=link, address=str(address),
                           prefixlen=self.subnet.prefixlen)  # fmt: skip
                inner.link("set", index=link, state="up")
                inner.link("set", index=inner.link_lookup(ifname="lo")[0], state="up")
                if self.default_route:
                    inner.route("add", dst="default", gateway=str(self.gateway))
        except (NetlinkError, OSError) as exc:
            self.detach_interface(cid, index)
            raise NetworkError(f"cannot attach container {cid[:12]} to {self.name}: {exc}") from exc
        except NetworkError:
            self.detach_interface(cid, index)
            raise
        return Endpoint(str(NETNS_DIR / ns), address, self.gateway, self.subnet.prefixlen,
                        inside, mac)  # fmt: skip

    def detach_interface(self, cid: str, index: int) -> None:
        """Take the container's ``eth<index>`` off this bridge and release its address;
        its netns stays. Whatever is already gone is fine."""
        _delete_link(veth_name(cid, index))
        self.ipam.release(cid)

    def detach(self, cid: str) -> None:
        """Remove the container's veth, netns and lease; whatever is already gone is fine."""
        detach_all(cid)
        self.ipam.release(cid)


def ensure_netns(name: str) -> None:
    if not (NETNS_DIR / name).exists():
        with contextlib.suppress(FileExistsError):  # made just now by another attach
            netns.create(name)


def _delete_link(name: str) -> None:
    with IPRoute() as ipr:
        try:
            ipr.link("del", ifname=name)
        except NetlinkError as exc:
            if exc.code != errno.ENODEV:
                raise


def detach_all(cid: str, interfaces: int | None = None) -> None:
    """Every host veth of container ``cid`` and its netns, gone (their peers go with them);
    the addresses are released by each network's IPAM (``release_everywhere``).

    ``interfaces``: how many it has, when its record says; else (the reaper) every link
    named for it is looked for."""
    if interfaces is not None:
        names = [veth_name(cid, i) for i in range(max(interfaces, 1))]
    else:
        prefix = veth_name(cid)
        with IPRoute() as ipr:
            names = [link.get_attr("IFLA_IFNAME") for link in ipr.get_links()]
        names = [n for n in names if n == prefix or n.startswith(prefix + ".")]
    for name in names:
        _delete_link(name)
    remove_netns(netns_name(cid))


def release_everywhere(state_dir: Path, cid: str) -> None:
    """Release ``cid``'s addresses in every network's IPAM on this node."""
    for path in sorted((state_dir / "network").glob("*.json")):
        with_subnet = Ipam.from_file(path)
        if with_subnet is not None:
            with_subnet.release(cid)


def lease_owners(state_dir: Path) -> set[str]:
    """Every owner of an address in any network's IPAM on this node (for the reaper)."""
    owners: set[str] = set()
    for path in sorted((state_dir / "network").glob("*.json")):
        ipam = Ipam.from_file(path)
        if ipam is not None:
            owners |= set(ipam.leases().values())
    return owners


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


class Networks:
    """The node's bridges: scow's default one, and one per user-defined network, made
    when a container first joins it."""

    def __init__(self, state_dir: Path, default: BridgeNetwork) -> None:
        self.state_dir, self.default = state_dir, default
        self._user: dict[str, BridgeNetwork] = {}
        self._ready: set[str] = set()  # bridges this process has made or seen made

    def user(self, bridge: str, subnet: str) -> BridgeNetwork:
        """A user-defined network's bridge (containers on it reach only its subnet)."""
        net = self._user.get(bridge)
        if net is None or str(net.subnet) != subnet:
            net = BridgeNetwork(self.state_dir, bridge, IPv4Network(subnet), default_route=False)
            self._user[bridge] = net
        return net

    def ensure(self, net: BridgeNetwork) -> None:
        if net.name not in self._ready:
            net.ensure_bridge()
            self._ready.add(net.name)

    def remove(self, bridge: str) -> None:
        """A user-defined network's bridge and its addresses, gone (its containers are)."""
        if bridge == self.default.name:
            raise NetworkError("scow's default bridge is not removed")
        _delete_link(bridge)
        self._ready.discard(bridge)
        self._user.pop(bridge, None)
        for suffix in (".json", ".lock", ".tmp"):
            (self.state_dir / "network" / f"{bridge}{suffix}").unlink(missing_ok=True)

    def user_bridges(self) -> set[str]:
        """The bridges of user-defined networks on this host (made by this or another node)."""
        with IPRoute() as ipr:
            names = [link.get_attr("IFLA_IFNAME") for link in ipr.get_links()]
        return {n for n in names if n.startswith("scn")}
