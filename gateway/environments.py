"""Environment routes: throwaway containers for tests, on a lease the client can extend."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway.http import ApiError, json_object, read_json
from gateway.state import Gateway, gateway_of
from pool.contract.errors import InvalidSpec
from pool.contract.specs import parse_environment, parse_ttl


def lease_view(lease: dict[str, Any]) -> dict[str, Any]:
    now = time.time()
    return {
        **lease,
        "created": _iso(lease["created"]),
        "expires_at": _iso(lease["expires_at"]),
        "expires_in": max(0.0, round(lease["expires_at"] - now, 3)),
    }


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


async def _lease(gw: Gateway, env_id: str) -> dict[str, Any]:
    lease = await gw.pool.lease(env_id)
    if lease is None:
        raise ApiError(404, "not_found", f"no environment {env_id!r}")
    return lease


async def create(request: Request) -> JSONResponse:
    """Answers once the environment is ready: ``{id, ip, ports, expires_at}``."""
    gw = gateway_of(request)
    body = json_object(await read_json(request))
    try:
        spec = parse_environment(body)
    except InvalidSpec as exc:
        raise ApiError(400, "invalid_spec", str(exc)) from None
    node = await gw.pick_node(spec.node)
    lease = await gw.command("env.create", body, node=node, timeout=spec.wait.timeout + 60)
    return JSONResponse(lease_view(lease), 201)


async def list_environments(request: Request) -> JSONResponse:
    gw = gateway_of(request)
    return JSONResponse([lease_view(lease) for lease in await gw.pool.leases()])


async def get_environment(request: Request) -> JSONResponse:
    gw = gateway_of(request)
    return JSONResponse(lease_view(await _lease(gw, request.path_params["id"])))


async def extend(request: Request) -> JSONResponse:
    """``{"ttl": "10m"}``: the lease now ends that long from now."""
    gw = gateway_of(request)
    env_id = request.path_params["id"]
    body = json_object(await read_json(request))
    if set(body) != {"ttl"}:
        raise ApiError(400, "bad_request", f'expected {{"ttl": DURATION}}, got {sorted(body)}')
    try:
        ttl = parse_ttl(body["ttl"])
    except InvalidSpec as exc:
        raise ApiError(400, "invalid_spec", str(exc)) from None
    lease = await _lease(gw, env_id)
    lease["expires_at"] = time.time() + ttl
    if not await gw.pool.renew(env_id, lease):  # the reaper removed it meanwhile
        raise ApiError(404, "not_found", f"no environment {env_id!r}")
    return JSONResponse(lease_view(lease))


async def delete(request: Request) -> JSONResponse:
    gw = gateway_of(request)
    env_id = request.path_params["id"]
    lease = await _lease(gw, env_id)
    node = (await gw.nodes()).get(lease["node"])
    if node is None or not node["live"]:
        raise ApiError(
            503, "node_down",
            f"node {lease['node']} that runs environment {env_id} is down; "
            "it removes the environment when it is back and the lease has run out",
        )  # fmt: skip
    result = await gw.command("env.remove", {"id": env_id}, node=lease["node"], timeout=60)
    return JSONResponse({"id": env_id, "deleted": True, "containers": result["removed"]})


routes = [
    Route("/system/environments", list_environments, methods=["GET"]),
    Route("/system/environments", create, methods=["POST"]),
    Route("/system/environments/{id}", get_environment, methods=["GET"]),
    Route("/system/environments/{id}", extend, methods=["PATCH"]),
    Route("/system/environments/{id}", delete, methods=["DELETE"]),
]
