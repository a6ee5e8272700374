"""The functions a node serves: one worker each, kept in step with what is deployed.

``sync`` starts a worker for each new function, replaces the worker of one whose
spec (or the value of a secret it is given) changed, resizes one only scaled (its
warm instances kept), and stops the worker of one deleted, every half second.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from pool.contract import keys
from pool.contract.specs import FunctionSpec
from pool.worker import FunctionWorker, WorkerParts


def _only_sizes_differ(old: FunctionSpec, new: FunctionSpec) -> bool:
    return replace(old, pool_min=new.pool_min, pool_max=new.pool_max) == new


class Functions:
    def __init__(self, parts: WorkerParts) -> None:
        self.parts = parts
        self.workers: dict[str, FunctionWorker] = {}
        self._retiring: set[asyncio.Future[None]] = set()  # workers being stopped by sync

    async def sync(self) -> None:
        """Start, replace and stop workers to match the deployed functions (and the values
        of the secrets they are given: a changed secret replaces the function's pool)."""
        redis = self.parts.redis
        raw = await redis.hgetall(keys.FUNCTIONS)
        specs = {s.name: s for s in (FunctionSpec.from_json(v) for v in raw.values())}
        names = sorted({n for s in specs.values() for n in s.secrets})
        values = await redis.hmget(keys.SECRETS, names) if names else []
        known = dict(zip(names, values, strict=True))
        given = {name: {n: known[n] for n in s.secrets} for name, s in specs.items()}
        for name in list(self.workers):
            worker = self.workers[name]
            new = specs.get(name)
            same_secrets = new is not None and given[name] == worker.given
            if new is not None and new == worker.spec and same_secrets:
                continue
            if new is not None and same_secrets and _only_sizes_differ(worker.spec, new):
                worker.resize(new)  # scaling keeps the warm instances
                continue
            # Shielded and tracked: a node stopping meanwhile cancels this loop, and the
            # worker, no longer in self.workers, would leave its containers.
            retiring = asyncio.ensure_future(self.workers.pop(name).stop())
            self._retiring.add(retiring)
            retiring.add_done_callback(self._retiring.discard)
            await asyncio.shield(retiring)
            if new is None:
                self.parts.metrics.forget(name)
        for name, spec in specs.items():
            if name not in self.workers:
                worker = FunctionWorker(spec, given[name], self.parts)
                self.workers[name] = worker
                worker.start()

    async def shrink(self) -> None:
        for worker in list(self.workers.values()):
            await worker.pool.shrink()

    def sizes(self) -> dict[str, dict[str, Any]]:
        """Each function's pool on this node, as the heartbeat and `scow top` show it."""
        out = {}
        for name, w in self.workers.items():
            decided = w.pool.decide()
            out[name] = {
                "ready": len(w.pool.ready), "busy": w.pool.busy, "creating": w.pool.creating,
                "draining": self.parts.draining[name], "target": decided.size,
                "rule": decided.rule, "rate": round(decided.rate, 2),
                "make_seconds": round(decided.make_seconds, 4), "state": w.state,
            }  # fmt: skip
        return out

    async def stop_reading(self) -> None:
        await asyncio.gather(*(w.stop_reading() for w in self.workers.values()))

    async def stop(self) -> None:
        await asyncio.gather(*(w.stop() for w in self.workers.values()), *self._retiring)
        self.workers.clear()
