"""User-defined networks (``docker network create``): their records in Redis, kept by
``Networks``, which ``PoolClient.networks`` gives the gateway.

A network is a bridge of its own with a subnet of its own, chosen from the host's
pool of subnets (``HostConfig.network_pool``, a /24 each) or given by the client, and
never overlapping another network's or scow's default bridge's: the check and the
write are one script, so two gateways cannot hand out one subnet twice. Its
containers all run on one node (``node``, set when the first of them is made), the
one whose bridge they share: a network does not span machines.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import redis.asyncio as aioredis

from pool.contract.containers import NETWORK_NAME_RE
from pool.contract.errors import InvalidSpec
from pool.contract.keys import NETWORKS

BUILTIN = ("bridge", "host", "none")
DRIVERS = ("bridge",)
SUBNET_PREFIX = 24  # of a network whose subnet comes from the pool


class NetworkNotFound(LookupError):
    def __init__(self, ref: str) -> None:
        self.ref = ref
        super().__init__(f"network {ref} not found")


class NetworkConflict(Exception):
    """A name or subnet taken, a full pool, or a network still in use."""


@dataclass(frozen=True)
class NetworkSpec:
    id: str
    name: str
    subnet: str
    gateway: str
    driver: str = "bridge"
    internal: bool = False
    attachable: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)
    options: Mapping[str, str] = field(default_factory=dict)
    created: float = 0.0
    node: str = ""  # the node its containers run on; "" until its first container

    @property
    def bridge(self) -> str:
        """Its bridge's name (the runtime's ``user_bridge_name``: at most 15 characters)."""
        return f"scn{self.id[:10]}"

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "labels": dict(self.labels),
                           "options": dict(self.options)})  # fmt: skip

    @classmethod
    def from_json(cls, raw: bytes | str) -> NetworkSpec:
        d = json.loads(raw)
        return cls(**{k: v for k, v in d.items() if k in _FIELDS})


_FIELDS = set(NetworkSpec.__dataclass_fields__)


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NETWORK_NAME_RE.match(name):
        raise InvalidSpec("network name", name, "use letters, digits, '_', '.' and '-' "
                          "(at most 63, starting with a letter or digit)")  # fmt: skip
    if name in BUILTIN:
        raise InvalidSpec("network name", name, "is one of the built-in networks")
    return name


def _span(subnet: str) -> tuple[int, int]:
    net = ipaddress.IPv4Network(subnet)
    return int(net.network_address), int(net.broadcast_address)


# Add network ARGV[1] (its JSON with "subnet" left empty) with the first subnet of the
# candidates (pairs of first and last address, from ARGV[3]) that overlaps neither a
# network in KEYS[1] nor the reserved ranges (pairs from ARGV[2], a JSON list): its
# JSON as stored, or {'name'} when the name is taken, {'full'} when no candidate is free.
_CREATE = """#!lua
local new = cjson.decode(ARGV[1])
local taken = cjson.decode(ARGV[2])
local all = redis.call('HGETALL', KEYS[1])
for i = 2, #all, 2 do
  local n = cjson.decode(all[i])
  if n.name == new.name then return {'name'} end
  table.insert(taken, {tonumber(n.first), tonumber(n.last)})
end
local candidates = cjson.decode(ARGV[3])
for _, c in ipairs(candidates) do
  local free = true
  for _, t in ipairs(taken) do
    if c[1] <= t[2] and t[1] <= c[2] then free = false; break end
  end
  if free then
    new.first, new.last, new.subnet, new.gateway = c[1], c[2], c[3], c[4]
    local stored = cjson.encode(new)
    redis.call('HSET', KEYS[1], new.id, stored)
    return stored
  end
end
return {'full'}
"""

# Set network ARGV[1]'s node to ARGV[2] unless it has one of the live nodes ARGV[3] (a
# JSON list) already: the node it has then.
_PLACE = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return false end
local n = cjson.decode(raw)
if n.node ~= nil and n.node ~= '' then
  for _, live in ipairs(cjson.decode(ARGV[3])) do
    if live == n.node then return n.node end
  end
end
n.node = ARGV[2]
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(n))
return ARGV[2]
"""


class Networks:
    """The user-defined networks' records (see the module's docstring)."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._create = redis.register_script(_CREATE)
        self._place = redis.register_script(_PLACE)

    async def all(self) -> list[NetworkSpec]:
        raw = await self.redis.hgetall(NETWORKS)
        return sorted((NetworkSpec.from_json(v) for v in raw.values()), key=lambda n: n.created)

    async def find(self, ref: str) -> NetworkSpec:
        """By id, name or unique id prefix, as Docker resolves them."""
        everything = await self.all()
        for n in everything:
            if ref in (n.id, n.name):
                return n
        matches = [n for n in everything if ref and n.id.startswith(ref)]
        if len(matches) == 1:
            return matches[0]
        raise NetworkNotFound(ref)

    async def create(
        self, name: str, *, pool: str, reserved: Iterable[str], subnet: str = "",
        gateway: str = "", internal: bool = False, attachable: bool = False,
        labels: Mapping[str, str] | None = None, options: Mapping[str, str] | None = None,
    ) -> NetworkSpec:  # fmt: skip
        """A new network with ``subnet``, or the first free /24 of ``pool``; never one
        that overlaps ``reserved`` (scow's default bridge) or another network."""
        check_name(name)
        if subnet:
            try:
                net = ipaddress.IPv4Network(subnet, strict=True)
            except ValueError as exc:
                raise InvalidSpec("subnet", subnet, str(exc)) from None
            if net.num_addresses < 4:
                raise InvalidSpec("subnet", subnet, "too small for a gateway and a container")
            first_host = next(net.hosts())
            if gateway and gateway != str(first_host):
                raise InvalidSpec("gateway", gateway, f"the gateway is the subnet's first "
                                  f"address here, {first_host}")  # fmt: skip
            candidates = [net]
        else:
            if gateway:
                raise InvalidSpec("gateway", gateway, "a gateway needs a subnet")
            candidates = list(ipaddress.IPv4Network(pool).subnets(new_prefix=SUBNET_PREFIX))
        spec = NetworkSpec(
            id=hashlib.sha256(secrets.token_bytes(32)).hexdigest(), name=name, subnet="",
            gateway="", internal=internal, attachable=attachable, labels=dict(labels or {}),
            options=dict(options or {}), created=time.time(),
        )  # fmt: skip
        taken = [list(_span(r)) for r in reserved]
        rows = [[int(c.network_address), int(c.broadcast_address), str(c), str(next(c.hosts()))]
                for c in candidates]  # fmt: skip
        result = await self._create(
            keys=[NETWORKS], args=[spec.to_json(), json.dumps(taken), json.dumps(rows)]
        )
        if isinstance(result, list):
            what = result[0].decode() if isinstance(result[0], bytes) else str(result[0])
            if what == "name":
                raise NetworkConflict(f"network with name {name} already exists")
            where = subnet or f"the pool {pool}"
            raise NetworkConflict(f"no free subnet for network {name}: {where} overlaps "
                                  "networks there are" if subnet else
                                  f"no free subnet left in {where}")  # fmt: skip
        return NetworkSpec.from_json(result)

    async def place(self, network: NetworkSpec, node: str, live: Iterable[str]) -> str:
        """The node the network's containers run on: its own while it is ``live``, else
        ``node`` from now on (a network's containers share one node's bridge)."""
        found = await self._place(keys=[NETWORKS], args=[network.id, node, json.dumps(list(live))])
        if found is None:
            raise NetworkNotFound(network.name)
        return found.decode() if isinstance(found, bytes) else str(found)

    async def remove(self, network: NetworkSpec) -> None:
        await self.redis.hdel(NETWORKS, network.id)


def as_attachment(
    network: NetworkSpec, aliases: Iterable[str] = (), ip: str = ""
) -> dict[str, Any]:
    """What a node is told of a network a container joins (an EndpointSpec's JSON)."""
    return {"network": network.name, "network_id": network.id, "bridge": network.bridge,
            "subnet": network.subnet, "aliases": list(aliases), "ip": ip}  # fmt: skip
