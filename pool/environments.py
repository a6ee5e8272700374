"""Environments on a node: create, wait until ready, and reap when the lease runs out.

``create`` makes the container (writable rootfs, on the bridge, its ports
published on 127.0.0.1), waits until it is ready (a port accepts connections,
a log line matches, an HTTP path answers, or a command exits 0), writes its
lease into Redis, and answers with where to reach it. A lease is extended by
rewriting its expiry (the gateway does that directly). Each node's reaper
removes its own environments whose lease ran out or vanished, whether or not
a client is left to ask; the containers outlive restarts of their node.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from typing import Any

import httpx
import redis.asyncio as aioredis

from pool.contract import keys
from pool.contract.specs import EnvironmentSpec, Wait
from runtime.engine import Runtime
from runtime.errors import NotFound
from runtime.records import ContainerRecord
from runtime.spec import Port, RunOptions

# A container labelled as an environment but without a lease is removed once it is
# this old: its create either failed half-way or its lease was deleted.
UNLEASED_GRACE = 120.0
ROLE = "environment"


class NotReady(Exception):
    """The environment did not become ready: why, and whether it was a timeout."""

    def __init__(self, message: str, timed_out: bool) -> None:
        self.timed_out = timed_out
        super().__init__(message)


def run_options(spec: EnvironmentSpec, lease_id: str) -> RunOptions:
    return RunOptions(
        command=spec.command, env=spec.env, network="bridge", read_only=False,
        ports=tuple(Port(container_port=p) for p in spec.ports), memory=spec.memory,
        cpu_shares=spec.cpu_shares, init=True,
        labels={"scow.role": ROLE, "scow.environment": lease_id},
    )  # fmt: skip


def lease_json(record: ContainerRecord, spec: EnvironmentSpec, node: str) -> dict[str, Any]:
    now = time.time()
    return {
        "id": record.labels["scow.environment"], "container": record.id, "node": node,
        "image": spec.image, "ip": record.ip,
        "ports": {str(p.container_port): p.host_port for p in record.ports},
        "created": now, "expires_at": now + spec.ttl,
    }  # fmt: skip


async def wait_ready(runtime: Runtime, record: ContainerRecord, wait: Wait) -> None:
    """Until ``wait`` holds for the container; NotReady when it exits or time runs out."""
    if wait.kind == "none":
        return
    deadline = time.monotonic() + wait.timeout
    delay = 0.01
    async with httpx.AsyncClient(timeout=1.0) as http:
        while True:
            if await _ready_once(runtime, record, wait, http):
                return
            current = runtime.get(record.id)
            if current.status == "exited":
                tail = "\n".join(ln.text for ln in runtime.logs(record.id, tail=20))
                raise NotReady(
                    f"the container exited with code {current.exit_code} before it was ready"
                    + (f":\n{tail}" if tail else ""),
                    timed_out=False,
                )
            if time.monotonic() > deadline:
                raise NotReady(f"not ready within {wait.timeout:g}s ({_describe(wait)})", True)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.2)


async def _ready_once(
    runtime: Runtime, record: ContainerRecord, wait: Wait, http: httpx.AsyncClient
) -> bool:
    if wait.kind == "port":
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(record.ip, wait.port), 1)
        except (OSError, TimeoutError):
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True
    if wait.kind == "log":
        lines = await asyncio.to_thread(runtime.logs, record.id)
        return any(re.search(wait.pattern, ln.text) for ln in lines)
    if wait.kind == "http":
        try:
            response = await http.get(f"http://{record.ip}:{wait.port}{wait.pattern}")
        except httpx.HTTPError:
            return False
        return response.status_code < 400
    try:
        code, _, _ = await asyncio.wait_for(runtime.exec(record.id, wait.command), 10)
    except TimeoutError:
        return False
    return code == 0


def _describe(wait: Wait) -> str:
    if wait.kind == "port":
        return f"waiting for port {wait.port}"
    if wait.kind == "log":
        return f"waiting for a log line matching {wait.pattern!r}"
    if wait.kind == "http":
        return f"waiting for GET {wait.pattern} on port {wait.port}"
    return f"waiting for {' '.join(wait.command)!r} to exit 0"


async def leases(redis: aioredis.Redis) -> dict[str, dict[str, Any]]:
    raw = await redis.hgetall(keys.ENVIRONMENTS)
    return {k.decode(): json.loads(v) for k, v in raw.items()}


async def reap_expired(runtime: Runtime, redis: aioredis.Redis, node: str) -> list[str]:
    """Remove this node's environments whose lease ran out or is gone; their ids."""
    now = time.time()
    held = await leases(redis)
    mine = [r for r in runtime.containers() if r.labels.get("scow.role") == ROLE]
    removed = []
    for record in mine:
        lease_id = record.labels.get("scow.environment", "")
        lease = held.get(lease_id)
        expired = lease["expires_at"] <= now if lease else now - record.created > UNLEASED_GRACE
        if expired:
            with contextlib.suppress(NotFound):
                await runtime.remove(record.id, force=True, volumes=True)
            await redis.hdel(keys.ENVIRONMENTS, lease_id)
            removed.append(lease_id)
    present = {r.labels.get("scow.environment") for r in mine}
    for lease_id, lease in held.items():  # leases of containers this node no longer has
        if lease.get("node") == node and lease_id not in present:
            await redis.hdel(keys.ENVIRONMENTS, lease_id)
    return removed
