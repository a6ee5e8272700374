"""Environment commands on a node: make one ready and lease it, remove one."""

from __future__ import annotations

import json
import secrets
from typing import Any

import redis.asyncio as aioredis

from images.store import ImageStore
from pool import environments as leases
from pool.commands import Command, CommandError, Handler, required
from pool.contract import keys
from pool.contract.specs import parse_environment
from runtime.engine import Runtime


class EnvironmentCommands:
    def __init__(
        self, runtime: Runtime, images: ImageStore, redis: aioredis.Redis, node_id: str,
        max_environments: int,
    ) -> None:  # fmt: skip
        self.runtime, self.images, self.redis, self.node_id = runtime, images, redis, node_id
        self.max_environments = max_environments  # on this node at once

    @property
    def commands(self) -> dict[str, Handler]:
        return {"env.create": self.create, "env.remove": self.remove}

    async def create(self, cmd: Command) -> Any:
        spec = parse_environment(cmd.args)
        held = sum(1 for r in self.runtime.containers() if r.labels.get("scow.role") == leases.ROLE)
        if held >= self.max_environments:
            raise CommandError("too_many", f"this node holds {held} environments, its limit: "
                               "remove one, or let its lease run out")  # fmt: skip
        image = self.images.get(spec.image)
        lease_id = secrets.token_hex(8)
        record = await self.runtime.create(
            image.run_config, self.images.layer_dirs(image), leases.run_options(spec, lease_id),
            image=spec.image,
        )  # fmt: skip
        try:
            record = await self.runtime.start(record.id)
            await leases.wait_ready(self.runtime, record, spec.wait)
            lease = leases.lease_json(record, spec, self.node_id)
            await self.redis.hset(keys.ENVIRONMENTS, lease_id, json.dumps(lease))
        except BaseException:
            await self.runtime.remove(record.id, force=True, volumes=True)
            raise
        return lease

    async def remove(self, cmd: Command) -> Any:
        lease_id = required(cmd.args, "id")
        found = [r for r in self.runtime.containers()
                 if r.labels.get("scow.environment") == lease_id]  # fmt: skip
        for record in found:
            await self.runtime.remove(record.id, force=True, volumes=True)
        await self.redis.hdel(keys.ENVIRONMENTS, lease_id)
        return {"id": lease_id, "removed": len(found)}
