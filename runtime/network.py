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

Teardown walks back from the id alone: remove the netns (the kernel deletes the veth
pairs whose peers were in it), release the container's address in every network's
IPAM; the reaper also deletes any host veth still named ``svID[:10]``. ``none``
networking never gets here: runc makes a private netns with only loopback.

The bridges have no NAT and no forwarding to the outside: containers reach the other
members of their networks and the host's bridge addresses, nothing else.

Every call here blocks on netlink, and pyroute2's synchronous API refuses to run
on a thread whose event loop is running: async callers use ``asyncio.to_thread``.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import TypeVar

import pyroute2.config
from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from runtime.errors import NetworkError
from runtime.ipam import Ipam
from runtime.rootfs import mount, unmount

# scow never asks pyroute2 for its netns helpers (see ``netns_socket``), which fork a
# child and SIGTERM it when done. Should a pyroute2 path fork one anyway: a forked
# child keeps our Python signal handlers and shares asyncio's signal wakeup fd, so a
# SIGTERM landing before it exits reached the parent's event loop as if the parent
# had been asked to stop. With this, the child takes SIGTERM with the default action.
pyroute2.config.disable_mp_signal = True

NETNS_DIR = Path("/run/netns")
CLONE_NEWNET = 0x40000000
MS_BIND, MS_REC, MS_SHARED = 0x1000, 0x4000, 1 << 20
_libc = ctypes.CDLL(None, use_errno=True)
_netns_dir_shared = threading.Lock()
_netns_dir_ready: list[bool] = []
T = TypeVar("T")


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
        inner_socket: socket.socket | None = None
        try:
            inner_socket = netns_socket(ns)
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
            with IPRoute(use_socket=inner_socket) as inner:
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
        finally:
            if inner_socket is not None:
                inner_socket.close()
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


def netns_socket(name: str) -> socket.socket:
    """A netlink (route) socket inside the named netns, which is made when missing.

    Namespaces belong to a thread, not a process: a thread of its own joins (or
    unshares into) the netns, binds a new one under /run/netns as ``ip netns add``
    does, opens the socket there and ends, so no other thread ever runs in a
    container's netns. pyroute2's ``netns.create`` and ``IPRoute(netns=...)`` fork a
    child for each instead: from a process of a node's size (~150 MiB) that cost 17 ms
    apiece; the thread takes under 1 ms.
    """
    path = NETNS_DIR / name

    def inside() -> socket.socket:
        try:
            os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
        except FileExistsError:  # made earlier (another network of the same container)
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                _check(_libc.setns(fd, CLONE_NEWNET), f"cannot enter netns {name}")
            finally:
                os.close(fd)
        else:
            try:
                _check(_libc.unshare(CLONE_NEWNET), f"cannot make netns {name}")
                mount("/proc/thread-self/ns/net", path, "none", MS_BIND)
            except OSError:
                os.unlink(path)
                raise
        # SOCK_DGRAM: what asyncio (under pyroute2) takes; netlink treats it as raw.
        return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, 0)

    _share_netns_dir()
    return _on_a_thread_of_its_own(inside)


def _share_netns_dir() -> None:
    """/run/netns as ``ip netns`` keeps it: a mount point with shared propagation, so a
    netns bound under it is seen (and unbound) in every mount namespace made since."""
    with _netns_dir_shared:
        if _netns_dir_ready:
            return
        NETNS_DIR.mkdir(mode=0o755, exist_ok=True)
        try:
            mount("", NETNS_DIR, "none", MS_SHARED | MS_REC)
        except OSError as exc:
            if exc.errno != errno.EINVAL:  # EINVAL: not a mount point yet
                raise
            mount(str(NETNS_DIR), NETNS_DIR, "none", MS_BIND | MS_REC)
            mount("", NETNS_DIR, "none", MS_SHARED | MS_REC)
        _netns_dir_ready.append(True)


def _on_a_thread_of_its_own(work: Callable[[], T]) -> T:
    done: list[T] = []
    failed: list[BaseException] = []

    def run() -> None:
        try:
            done.append(work())
        except BaseException as exc:  # handed to the caller below
            failed.append(exc)

    thread = threading.Thread(target=run, name="scow-netns", daemon=True)
    thread.start()
    thread.join()
    if failed:
        raise failed[0]
    return done[0]


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _delete_link(name: str) -> None:
    with IPRoute() as ipr:
        try:
            ipr.link("del", ifname=name)
        except NetlinkError as exc:
            if exc.code != errno.ENODEV:
                raise


def detach_all(cid: str, *, reaping: bool = False) -> None:
    """Container ``cid``'s netns gone, and with it every veth pair whose peer was in it;
    the addresses are released by each network's IPAM (``release_everywhere``).

    The kernel dismantles a netns nobody holds in a work queue of its own, many at a
    time: its veth pairs go a moment later (33 ms p50 here) instead of each delete
    waiting out an RCU grace period (27 ms apiece, on the teardown's thread).
    The reaper (``reaping``, no record to go by) also deletes every link still named
    for the container: what it finds may belong to a netns something still holds.
    """
    remove_netns(netns_name(cid))
    if reaping:
        prefix = veth_name(cid)
        with IPRoute() as ipr:
            names = [link.get_attr("IFLA_IFNAME") for link in ipr.get_links()]
        for name in names:
            if name == prefix or name.startswith(prefix + "."):
                _delete_link(name)


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
    path = NETNS_DIR / name
    unmount(path)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


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
