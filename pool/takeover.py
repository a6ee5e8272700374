"""Calls outlive the node that took them: every node looks at the entries still pending
in every function's stream, and claims and runs those held by a node whose heartbeat
has gone stale (or by an earlier life of itself). An entry delivered too often (it
keeps killing nodes) goes to ``dead`` with an error instead.
"""

from __future__ import annotations

import json
import time

import redis.asyncio as aioredis

from pool.contract import keys
from pool.contract.messages import CallRequest, CallResult
from pool.functions import Functions
from pool.replies import Replier


async def live_nodes(redis: aioredis.Redis) -> set[str]:
    now = time.time()
    live = set()
    for node, info in (await redis.hgetall(keys.NODES)).items():
        if now - json.loads(info)["heartbeat"] < keys.HEARTBEAT_STALE:
            live.add(node.decode())
    return live


class TakeOver:
    def __init__(
        self, redis: aioredis.Redis, node_id: str, functions: Functions, replier: Replier,
        handling: set[bytes],
    ) -> None:  # fmt: skip
        self.redis, self.node_id, self.functions = redis, node_id, functions
        self.replier, self.handling = replier, handling
        # Since when this node has seen Redis without a break (None: it has not, or it
        # was just away): until every node had time to heartbeat since, none is dead.
        self._watching_since: float | None = None

    async def once(self) -> int:
        """Claim calls pending with dead nodes (or with an earlier life of this one)."""
        try:
            return await self._take_over()
        except (aioredis.RedisError, OSError):
            self._watching_since = None
            raise

    async def _take_over(self) -> int:
        live = await live_nodes(self.redis)
        now = time.monotonic()
        if self._watching_since is None:
            self._watching_since = now
        # Just after a start, or after Redis was away, every heartbeat may look stale:
        # other nodes are taken for dead only once each had time to send one since.
        judging = now - self._watching_since >= keys.HEARTBEAT_STALE
        claimed = 0
        for name, worker in list(self.functions.workers.items()):
            key = keys.calls_key(name)
            try:
                pending = await self.redis.xpending_range(key, keys.GROUP, "-", "+", 100)
            except aioredis.ResponseError:
                continue
            for entry in pending:
                consumer = entry["consumer"].decode()
                if entry["message_id"] in self.handling:
                    continue  # this process runs it now: never a take-over from oneself
                if consumer != self.node_id and (consumer in live or not judging):
                    continue  # a live node's (ours, not handled, are an earlier life's)
                got = await self.redis.xclaim(
                    key, keys.GROUP, self.node_id, min_idle_time=500,
                    message_ids=[entry["message_id"]],
                )  # fmt: skip
                for entry_id, fields in got:
                    if fields is None:
                        continue  # deleted meanwhile
                    claimed += 1
                    if entry["times_delivered"] + 1 > keys.MAX_DELIVERIES:
                        await self._dead_letter(key, entry_id, fields)
                    else:
                        worker.run(entry_id, fields)
            if not judging:
                continue
            for consumer in await self.redis.xinfo_consumers(key, keys.GROUP):
                cname = consumer["name"].decode()
                if cname not in live and cname != self.node_id and not consumer["pending"]:
                    await self.redis.xgroup_delconsumer(key, keys.GROUP, cname)
        return claimed

    async def _dead_letter(self, key: str, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        req = CallRequest.from_fields(fields)
        await self.redis.xadd(keys.DEAD, {**fields, b"stream": key.encode()}, maxlen=10_000)
        result = CallResult.failure(
            req.id, 502, "dead_letter",
            f"the call was delivered {keys.MAX_DELIVERIES} times and its node died each time",
            node=self.node_id,
        )  # fmt: skip
        await self.replier.reply(req, result, ack=(key, entry_id))
