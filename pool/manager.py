"""The pool manager: one per node, and its composition root.

It makes the node's parts and hands each what it uses, no more: the functions'
workers (functions.py, worker.py) with their warm pools; the replier, which
answers calls (replies.py); the take-over of dead nodes' calls (takeover.py);
the supervisor of containers that outlive a command (supervisor.py); and the
node commands (commands/), read and answered by the command server. It runs
their loops, heartbeats into ``nodes``, reaps expired environments and serves
metrics; a stop claims no more work, finishes what is in flight and removes every
function container.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import redis.asyncio as aioredis

from images.store import ImageStore
from pool.commands import Command, CommandServer, Handler
from pool.commands.attach import AttachCommands
from pool.commands.containers import ContainerCommands
from pool.commands.copies import CopyCommands
from pool.commands.environments import EnvironmentCommands
from pool.commands.execs import ExecCommands
from pool.commands.images import ImageCommands
from pool.commands.networks import NetworkCommands
from pool.commands.volumes import VolumeCommands
from pool.contract import keys, outbound
from pool.contract.config import DEFAULTS
from pool.contract.connect import another
from pool.contract.outage import Outage, cancellation_requested
from pool.downloads import fetcher
from pool.environments import reap_expired
from pool.events import EventSink
from pool.functions import Functions
from pool.health import HealthChecks
from pool.httpclient import Connections
from pool.metrics import NodeMetrics
from pool.registries import Registries
from pool.replies import Replier
from pool.restarts import Restarts
from pool.supervisor import Supervisor
from pool.takeover import TakeOver
from pool.worker import FunctionWorker, WorkerParts
from runtime.engine import Runtime
from runtime.records import ContainerRecord

log = logging.getLogger("scow.pool")


READERS = 65536  # connections for blocking reads: one per function being read


def reads_client(redis: aioredis.Redis) -> aioredis.Redis:
    """A client on the same Redis for the functions' blocking reads (XREADGROUP BLOCK
    holds its connection for up to a second): a pool of their own, so that a node with
    many functions never starves its heartbeat, replies and commands of a connection
    (redis-py's default pool holds 100; a node with 200 functions was taken for dead)."""
    reads: aioredis.Redis = another(redis, READERS)
    return reads


class PoolManager:
    def __init__(
        self,
        redis: aioredis.Redis,
        runtime: Runtime,
        images: ImageStore,
        *,
        node_id: str | None = None,
        create_slots: int | None = None,
        sync_every: float = 0.5,
        metrics_port: int | None = None,
        response_limit: int = DEFAULTS.response_limit,
        max_environments: int = DEFAULTS.max_environments,
        callback_allow: str | None = None,
        insecure_registries: Iterable[str] = (),
    ) -> None:
        self.redis, self.runtime, self.images = redis, runtime, images
        self.node_id = node_id or f"{socket.gethostname()}-{secrets.token_hex(4)}"
        self.sync_every = sync_every
        self.metrics = NodeMetrics()
        self.metrics_port = metrics_port  # None: no /metrics listener (tests read the registry)
        self.stopping = asyncio.Event()  # commands that follow or wait end when it is set
        self.events = EventSink(redis)
        allow = os.environ.get("SCOW_CALLBACK_ALLOW", "") if callback_allow is None else (
            callback_allow)  # fmt: skip
        self.replier = Replier(redis, outbound.Allow.parse(allow))
        self.http = Connections()  # to function containers (the callbacks have their own)
        self.registries = Registries(insecure_registries, self._stored_login)
        self.peers: dict[str, dict[str, Any]] = {}  # the other live nodes, as last heard
        self.reads = reads_client(redis)
        handling: set[bytes] = set()
        parts = WorkerParts(
            node_id=self.node_id, redis=redis, reads=self.reads, runtime=runtime, images=images,
            replier=self.replier, metrics=self.metrics, http=self.http,
            response_limit=response_limit,
            slots=asyncio.Semaphore(create_slots or max(2, (os.cpu_count() or 1) * 2)),
            handling=handling, stopping=self.stopping, draining=collections.Counter(),
            registries=self.registries, others_serve=self._others_serve,
        )  # fmt: skip
        self.functions = Functions(parts)
        self.take_over = TakeOver(redis, self.node_id, self.functions, self.replier, handling)
        health = HealthChecks(runtime, self._container_event)
        self.supervisor = Supervisor(runtime, redis, self.node_id,
                                     Restarts(runtime, on_start=health.watch), health)  # fmt: skip
        self.environments = EnvironmentCommands(runtime, images, redis, self.node_id,
                                                max_environments)  # fmt: skip
        handlers: dict[str, Handler] = {
            "node.info": self._node_info,
            **ImageCommands(images, runtime, self.events, fetcher(self.replier.callback_allow),
                            self.registries).commands,
            **ContainerCommands(runtime, images, self.supervisor).commands,
            **AttachCommands(runtime, self.supervisor).commands,
            **ExecCommands(runtime, redis, self.node_id, self.supervisor).commands,
            **CopyCommands(runtime).commands,
            **VolumeCommands(runtime).commands,
            **NetworkCommands(runtime).commands,
            **self.environments.commands,
        }
        self.commands = CommandServer(redis, self.node_id, handlers, self.stopping)
        self._tasks: list[asyncio.Task[None]] = []
        self.draining = False
        self._counted = (-1e9, 0)  # (when, how many) of _docker_containers
        self._stop: asyncio.Event | None = None
        self._drainer: asyncio.Task[None] | None = None

    # What tests and `scow top` look at.

    @property
    def workers(self) -> dict[str, FunctionWorker]:
        return self.functions.workers

    async def sync_functions(self) -> None:
        await self.functions.sync()

    @property
    def max_environments(self) -> int:
        return self.environments.max_environments

    @max_environments.setter
    def max_environments(self, value: int) -> None:
        self.environments.max_environments = value

    @property
    def callback_allow(self) -> outbound.Allow:
        return self.replier.callback_allow

    @callback_allow.setter
    def callback_allow(self, value: outbound.Allow) -> None:
        self.replier.callback_allow = value

    def _docker_containers(self) -> int:
        """How many containers of the Docker API and environments this node has (how a node
        is chosen for a new one: the fewest); counted from the records when one came or
        went, and every 10 s."""
        now = time.monotonic()
        if now - self._counted[0] > 10:
            count = sum(1 for r in self.runtime.store.all()
                        if r.labels.get("scow.role") != "function")  # fmt: skip
            self._counted = (now, count)
        return self._counted[1]

    async def _drain(self) -> None:
        """Take no new calls, finish those in flight, then stop (as on SIGTERM): its warm
        capacity goes, and the other nodes' pools grow with the calls they now take."""
        self.draining = True
        log.info("node %s: draining", self.node_id)
        for task in self._tasks:
            if task.get_name() in ("sync_functions", "take_over"):
                task.cancel()
        await self.functions.stop_reading()
        while any(w.inflight for w in self.functions.workers.values()):
            await asyncio.sleep(0.1)
        log.info("node %s: drained, stopping", self.node_id)
        if self._stop is not None:
            self._stop.set()

    def _others_serve(self, function: str) -> bool:
        """Whether another node, live at the last heartbeat, serves ``function`` now."""
        for node, info in self.peers.items():
            pool = (info.get("functions") or {}).get(function) or {}
            if node != self.node_id and pool.get("state", "ready") == "ready":
                return True
        return False

    async def _stored_login(self, registry: str) -> str:
        """What docker login kept for ``registry`` (for pulls nobody is there to log in)."""
        raw = await self.redis.hget(keys.LOGINS, registry)
        return raw.decode() if isinstance(raw, bytes) else ""

    def _container_event(self, action: str, record: ContainerRecord) -> None:
        if action in ("create", "destroy") and record.labels.get("scow.role") != "function":
            self._counted = (-1e9, self._counted[1])  # counted again at the next heartbeat
        self.events.container(action, record)
        self.supervisor.changed(action, record)

    async def _node_info(self, cmd: Command) -> Any:
        return {"node": self.node_id, "host": socket.gethostname(), "pid": os.getpid(),
                "cgroups": self.runtime.cgroups.version, "time": time.time(),
                "functions": self.functions.sizes()}  # fmt: skip

    # -- life -------------------------------------------------------------------------

    async def start(self) -> None:
        if self.metrics_port is not None:
            self.metrics_port = await asyncio.to_thread(self.metrics.serve, self.metrics_port)
        self.events.start()
        self.runtime.on_event = self._container_event
        await self.runtime.open()
        await self.runtime.reap()
        # Function containers of this node's previous life: their pipes and pools are gone.
        for record in self.runtime.containers():
            if record.labels.get("scow.role") == "function":
                await self.runtime.destroy(record.id)
        await self.supervisor.reconcile()
        await self.replier.open()
        await self._heartbeat_once()
        await self.commands.open()
        await self.functions.sync()
        loops: list[tuple[str, Callable[[], Awaitable[object]], float]] = [
            ("heartbeat", self._heartbeat_once, keys.HEARTBEAT_EVERY),
            ("sync_functions", self.functions.sync, self.sync_every),
            ("take_over", self.take_over.once, 1.0),
            ("shrink", self.functions.shrink, 1.0),
            ("reap_environments", self._reap_environments, 1.0),
            ("commands", self.commands.read_once, 0.0),
        ]
        for name, step, every in loops:
            self._tasks.append(asyncio.create_task(_forever(name, step, every), name=name))

    async def stop(self) -> None:
        """Claim no more work, finish what is in flight, remove every function container."""
        self.stopping.set()
        # First of all: no call is taken from here on; the ones taken are finished below.
        await self.functions.stop_reading()
        for task in self._tasks:
            task.cancel()
        # Bounded all the same: a shutdown must never hang on one stuck loop.
        _, stuck = await asyncio.wait(self._tasks, timeout=5)
        for task in stuck:
            log.warning("loop %s did not stop within 5s of being cancelled", task.get_name())
        await self.commands.finish()
        await self.supervisor.close()
        await self.functions.stop()
        await self.replier.close()
        self.http.close()
        await self.reads.aclose()
        await self.events.close()
        self.metrics.close()
        # Kept while Docker containers (which outlive their node) are in it.
        self.runtime.cgroups.remove_parent_if_empty()
        with contextlib.suppress(aioredis.RedisError):
            await self.redis.hdel(keys.NODES, self.node_id)
            await self.redis.hdel(keys.DRAINING, self.node_id)

    async def run(self, stop: asyncio.Event) -> None:
        self._stop = stop  # a drain sets it once the node is idle
        await self.start()
        try:
            await stop.wait()
        finally:
            await self.stop()

    # -- loops ------------------------------------------------------------------------

    async def _heartbeat_once(self) -> None:
        pools = self.functions.sizes()
        self.metrics.pools((name, {**p, "warm": p["ready"]}) for name, p in pools.items())
        info = {
            "heartbeat": time.time(), "pid": os.getpid(), "host": socket.gethostname(),
            "functions": pools, "latency": self.metrics.percentiles(),
            "metrics": f"127.0.0.1:{self.metrics_port}" if self.metrics_port else "",
            "containers": self._docker_containers(), "draining": self.draining,
            "load": round(os.getloadavg()[0] / (os.cpu_count() or 1), 3),
            "bridge": self.runtime.config.bridge, "subnet": str(self.runtime.config.subnet),
        }  # fmt: skip
        clock = time.perf_counter()
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(keys.NODES, self.node_id, json.dumps(info))
            pipe.hgetall(keys.NODES)
            pipe.hexists(keys.DRAINING, self.node_id)
            for name in pools:
                pipe.xlen(keys.calls_key(name))
            _, nodes, drain, *lengths = await pipe.execute()
        if drain and not self.draining:
            self._drainer = asyncio.create_task(self._drain(), name="drain")
        now = time.time()
        self.peers = {}
        for node, raw in nodes.items():
            peer = json.loads(raw)
            if now - float(peer.get("heartbeat", 0)) < keys.HEARTBEAT_STALE:
                self.peers[node.decode() if isinstance(node, bytes) else node] = peer
        self.metrics.redis_rtt.set(time.perf_counter() - clock)
        for name, length in zip(pools, lengths, strict=True):
            self.metrics.queue.labels(name).set(length)

    async def _reap_environments(self) -> None:
        await reap_expired(self.runtime, self.redis, self.node_id)


async def _forever(name: str, step: Callable[[], Awaitable[object]], every: float) -> None:
    """Run a loop body every ``every`` seconds; a failure is logged and retried, never fatal.

    A cancellation is checked after every step too: redis-py can absorb one.
    """
    outage = Outage(log, name)
    while True:
        try:
            await step()
            outage.succeeded()
        except asyncio.CancelledError:
            raise
        except (aioredis.RedisError, OSError) as exc:
            outage.failed(exc)
        except Exception:  # a bug: said loudly, and the loop goes on (a dead heartbeat
            # loop would have this node's calls taken over while it runs them)
            outage.bug()
        if cancellation_requested():
            raise asyncio.CancelledError
        await asyncio.sleep(max(every, keys.RETRY_EVERY) if outage.ongoing else every)
