"""A Redis client of a URL: one Redis (``redis://``, ``rediss://``, ``unix://``), or a
Redis Cluster (``redis+cluster://HOST:PORT[,HOST:PORT...]``: any of its nodes, the
others are found from them). Every key the contract uses carries a hash tag, so the
same code runs on both (see ``keys``)."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster

from pool.contract.errors import InvalidSpec

CLUSTER = "redis+cluster://"
CLUSTER_WAITERS = 4096  # connections per shard of a client that would wait on one Redis


def is_cluster(url: str) -> bool:
    return url.startswith(CLUSTER)


def cluster_nodes(url: str) -> list[ClusterNode]:
    """The nodes a ``redis+cluster://`` URL names.

    >>> [(n.host, n.port) for n in cluster_nodes("redis+cluster://10.0.0.1:7000,h:7001/0")]
    [('10.0.0.1', 7000), ('h', 7001)]
    """
    hosts = url.removeprefix(CLUSTER).split("/", 1)[0]
    nodes = []
    for entry in filter(None, hosts.split(",")):
        host, sep, port = entry.rpartition(":")
        if not sep or not port.isdigit() or not host:
            raise InvalidSpec("redis url", url, "expected redis+cluster://HOST:PORT[,HOST:PORT]")
        nodes.append(ClusterNode(host, int(port)))
    if not nodes:
        raise InvalidSpec("redis url", url, "expected redis+cluster://HOST:PORT[,HOST:PORT]")
    return nodes


def connect(
    url: str, *, max_connections: int | None = None, blocking: bool = False, **options: Any
) -> Any:
    """A client of ``url`` (``aioredis.Redis``, or ``RedisCluster``, which speaks the same
    commands; ``aclose()`` closes either with its connections). ``max_connections`` caps
    its pool (per shard on a Cluster); ``blocking``: a caller past it waits for a
    connection (up to 10 s) instead of failing (one Redis)."""
    if is_cluster(url):
        # redis-py's cluster client cannot wait for a connection (past its cap it fails):
        # a cap that callers would wait at becomes a wide one, below Redis's maxclients.
        cap = max(max_connections or 0, CLUSTER_WAITERS) if blocking else max_connections
        return RedisCluster(startup_nodes=cluster_nodes(url), max_connections=cap or 2**31,
                            **options)  # fmt: skip
    if blocking:
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=max_connections or 50, timeout=10, **options)  # fmt: skip
        return aioredis.Redis.from_pool(pool)  # owns it: aclose() closes it
    if max_connections is not None:
        options["max_connections"] = max_connections
    return aioredis.Redis.from_url(url, **options)


def another(client: Any, max_connections: int) -> Any:
    """A second client like ``client``, with a pool of its own (for blocking reads)."""
    if isinstance(client, RedisCluster):
        known = client.get_nodes() or client.nodes_manager.startup_nodes.values()
        nodes = [ClusterNode(n.host, n.port) for n in known]
        return RedisCluster(startup_nodes=nodes, max_connections=max_connections)
    pool = client.connection_pool
    # from_pool: the client owns its pool, and closing it closes the pool's connections.
    return aioredis.Redis.from_pool(aioredis.ConnectionPool(
        connection_class=pool.connection_class, max_connections=max_connections,
        **pool.connection_kwargs))  # fmt: skip
