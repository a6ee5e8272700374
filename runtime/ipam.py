"""Addresses for containers on the bridge, from one subnet, kept in a file.

Leases survive restarts (a JSON file under the state dir) and are taken under an
exclusive flock, so concurrent processes on one node never hand out one address
twice. Allocation continues after the last address given, wrapping around, so a
just-released address is not reused at once (stale ARP entries, late packets).
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from runtime.errors import NetworkError


class AddressPoolExhausted(NetworkError):
    def __init__(self, subnet: IPv4Network) -> None:
        super().__init__(f"no free address left in {subnet}")


class Ipam:
    def __init__(self, path: Path, subnet: IPv4Network) -> None:
        self.path = path
        self.subnet = subnet
        self.gateway = next(subnet.hosts())

    @contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                data = json.loads(self.path.read_text())
            except FileNotFoundError:
                data = {}
            if data.get("subnet") != str(self.subnet):
                data = {"subnet": str(self.subnet), "last": str(self.gateway), "leases": {}}
            before = json.dumps(data, sort_keys=True)
            yield data
            if json.dumps(data, sort_keys=True) != before:
                tmp = self.path.with_suffix(".tmp")
                tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
                os.replace(tmp, self.path)

    @classmethod
    def from_file(cls, path: Path) -> Ipam | None:
        """The IPAM kept in ``path``, with the subnet it was kept for (None: unreadable)."""
        try:
            return cls(path, IPv4Network(json.loads(path.read_text())["subnet"]))
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return None

    def allocate(self, owner: str, want: str = "") -> IPv4Address:
        """An address for ``owner``; the same one again if it already holds one. ``want``:
        that address, or an error naming it when it is taken or outside the subnet."""
        with self._locked() as data:
            leases: dict[str, str] = data["leases"]
            for ip, who in leases.items():
                if who == owner:
                    return IPv4Address(ip)
            if want:
                address = IPv4Address(want)
                if (address not in self.subnet or address == self.gateway
                        or address in (self.subnet.network_address,
                                       self.subnet.broadcast_address)):  # fmt: skip
                    raise NetworkError(f"address {want} is not one of {self.subnet}'s "
                                       "addresses for containers")  # fmt: skip
                if want in leases:
                    raise NetworkError(f"address {want} is already in use")
                leases[want] = owner
                return address
            first = int(self.gateway) + 1
            last = int(self.subnet.broadcast_address) - 1
            size = last - first + 1
            start = int(IPv4Address(data["last"])) + 1
            for i in range(size):
                candidate = IPv4Address(first + (start - first + i) % size)
                if str(candidate) not in leases:
                    leases[str(candidate)] = owner
                    data["last"] = str(candidate)
                    return candidate
            raise AddressPoolExhausted(self.subnet)

    def release(self, owner: str) -> None:
        """Drop every lease of ``owner``; none is fine."""
        with self._locked() as data:
            data["leases"] = {ip: who for ip, who in data["leases"].items() if who != owner}

    def leases(self) -> dict[str, str]:
        """Address -> owner."""
        with self._locked() as data:
            return dict(data["leases"])
