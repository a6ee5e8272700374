"""User-defined networks on a node: containers join and leave them, their members are
listed, their bridges removed; in scow's words (the gateway keeps the networks' records
and makes Docker's shapes)."""

from __future__ import annotations

import asyncio
from typing import Any

from pool.commands import Command, CommandError, Handler, required
from pool.contract.containers import EndpointSpec
from runtime.engine import Runtime
from runtime.spec import Attachment


def member(record_id: str, name: str, endpoint: Any) -> dict[str, Any]:
    return {"id": record_id, "name": name, "ip": endpoint.ip, "mac": endpoint.mac,
            "subnet": endpoint.subnet, "aliases": list(endpoint.aliases)}  # fmt: skip


class NetworkCommands:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    @property
    def commands(self) -> dict[str, Handler]:
        return {"network.connect": self.connect, "network.disconnect": self.disconnect,
                "network.members": self.members, "network.remove": self.remove}  # fmt: skip

    async def connect(self, cmd: Command) -> Any:
        raw = cmd.args.get("endpoint")
        if not isinstance(raw, dict):
            raise CommandError("invalid", "argument 'endpoint' must be a network endpoint")
        e = EndpointSpec.from_json(raw)
        attachment = Attachment(e.network, e.network_id, e.bridge, e.subnet, e.aliases, e.ip)
        await self.runtime.memberships.connect(required(cmd.args, "id"), attachment)
        return {}

    async def disconnect(self, cmd: Command) -> Any:
        memberships = self.runtime.memberships
        await memberships.disconnect(required(cmd.args, "id"), required(cmd.args, "network"))
        return {}

    async def members(self, cmd: Command) -> Any:
        """The containers on network ``network_id``, with their address on it."""
        network_id = required(cmd.args, "network_id")
        out = []
        for r in self.runtime.memberships.network_members(network_id):
            for e in r.endpoints:
                if e.network_id == network_id:
                    out.append(member(r.id, r.name, e))
        return out

    async def remove(self, cmd: Command) -> Any:
        """The network's bridge on this node, gone; refused while a container is on it."""
        network_id, bridge = required(cmd.args, "network_id"), required(cmd.args, "bridge")
        users = [r.name for r in self.runtime.memberships.network_members(network_id)]
        if users:
            raise CommandError("conflict", f"network {cmd.args.get('name', network_id)} has "
                               f"active endpoints: {', '.join(users)}")  # fmt: skip
        await asyncio.to_thread(self.runtime.networks.remove, bridge)
        return {}
