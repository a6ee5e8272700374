"""System routes: health, version, info, metrics, and the OpenAPI document."""

from __future__ import annotations

import platform
import time
from typing import Any

import redis.asyncio as aioredis
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway import __version__
from gateway.http import ApiError, cannot_reach_redis, error_response
from gateway.openapi import openapi
from gateway.state import gateway_of


async def healthz(request: Request) -> Response:
    gw = gateway_of(request)
    try:
        await gw.pool.ping()
    except (aioredis.ConnectionError, aioredis.TimeoutError, OSError) as exc:
        return error_response(503, "redis_unavailable", cannot_reach_redis(exc))
    return JSONResponse({"status": "ok"})


async def version(request: Request) -> JSONResponse:
    return JSONResponse({"version": __version__})


async def info(request: Request) -> JSONResponse:
    """OpenFaaS's shape (provider, version, arch) plus the nodes and their pools."""
    gw = gateway_of(request)
    nodes = await gw.nodes()
    functions = await gw.pool.functions()
    lengths = await gw.pool.queue_lengths([spec.name for spec in functions])
    return JSONResponse({
        "provider": {"provider": "scow", "orchestration": "scow",
                     "version": {"release": __version__}},
        "version": {"release": __version__},
        "arch": platform.machine(),
        "functions": len(functions),
        "queues": {spec.name: n for spec, n in zip(functions, lengths, strict=True)},
        "limits": {"body_bytes": gw.config.body_limit, "queue": gw.config.max_queue},
        "nodes": [
            {"id": node, "host": n.get("host", ""), "pid": n.get("pid", 0),
             "live": n["live"], "heartbeat_age": round(n["heartbeat_age"], 3),
             "functions": n.get("functions", {}), "latency": n.get("latency", {}),
             "metrics": n.get("metrics", "")}
            for node, n in sorted(nodes.items())
        ],
    })  # fmt: skip


def node_json(node: str, n: dict[str, Any]) -> dict[str, Any]:
    pools = n.get("functions", {}) or {}
    return {
        "id": node, "host": n.get("host", ""), "pid": n.get("pid", 0), "live": n["live"],
        "heartbeat_age": round(n["heartbeat_age"], 3), "draining": bool(n.get("draining")),
        "functions": len(pools), "warm": sum(int(p.get("ready", 0)) for p in pools.values()),
        "busy": sum(int(p.get("busy", 0)) for p in pools.values()),
        "containers": int(n.get("containers", 0)), "load": float(n.get("load", 0.0)),
        "bridge": n.get("bridge", ""), "subnet": n.get("subnet", ""),
    }  # fmt: skip


async def list_nodes(request: Request) -> JSONResponse:
    """The nodes: id, host, functions, warm containers, load, heartbeat, draining."""
    nodes = await gateway_of(request).nodes()
    return JSONResponse([node_json(node, n) for node, n in sorted(nodes.items())])


async def drain_node(request: Request) -> JSONResponse:
    """The node takes no new calls (nor containers), finishes what it runs, then exits."""
    gw = gateway_of(request)
    node = request.path_params["id"]
    nodes = await gw.nodes()
    if node not in nodes:
        raise ApiError(404, "not_found", f"no node {node!r} (scow node ls)")
    if not nodes[node]["live"]:
        raise ApiError(409, "conflict", f"node {node} is not live: there is nothing to drain")
    await gw.pool.drain(node)
    return JSONResponse(node_json(node, nodes[node]), 202)


async def metrics(request: Request) -> Response:
    gw = gateway_of(request)
    clock = time.perf_counter()
    nodes = await gw.nodes()
    gw.metrics.redis_rtt.set(time.perf_counter() - clock)
    gw.metrics.node_heartbeat_age.clear()  # nodes that left are gone from the gauge too
    for node, info in nodes.items():
        gw.metrics.node_heartbeat_age.labels(node).set(info["heartbeat_age"])
    return Response(generate_latest(gw.metrics.registry), media_type=CONTENT_TYPE_LATEST)


async def openapi_json(request: Request) -> JSONResponse:
    return JSONResponse(openapi(__version__))


routes = [
    Route("/healthz", healthz, methods=["GET", "HEAD"]),
    Route("/system/version", version, methods=["GET"]),
    Route("/system/info", info, methods=["GET"]),
    Route("/system/nodes", list_nodes, methods=["GET"]),
    Route("/system/nodes/{id}/drain", drain_node, methods=["POST"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/openapi.json", openapi_json, methods=["GET"]),
]
