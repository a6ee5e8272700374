"""Function routes, shaped like OpenFaaS's: deploy, update, list, inspect, scale, delete."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway.http import ApiError, json_object, read_json
from gateway.state import Gateway, gateway_of
from pool.contract import messages
from pool.contract.errors import InvalidSpec
from pool.contract.references import registry_of
from pool.contract.specs import FunctionSpec, parse_spec

DEPLOY_WAIT = 300.0  # a deploy from a registry answers once a node pulled it, or after this


def spec_json(spec: FunctionSpec) -> dict[str, Any]:
    """The spec as deploy takes it, so that it round-trips."""
    return {
        "name": spec.name, "image": spec.image, "protocol": spec.protocol, "port": spec.port,
        "command": list(spec.command) if spec.command is not None else None,
        "env": list(spec.env), "workdir": spec.workdir, "user": spec.user,
        "memory": spec.memory, "cpu_shares": spec.cpu_shares, "pids": spec.pids,
        "timeout": spec.timeout, "max_invocations": spec.max_invocations,
        "idle_ttl": spec.idle_ttl, "concurrency": spec.concurrency,
        "pool": {"min": spec.pool_min, "max": spec.pool_max}, "read_only": spec.read_only,
        "auth": spec.auth, "labels": dict(spec.labels), "secrets": list(spec.secrets),
    }  # fmt: skip


async def function_status(gw: Gateway, specs: list[FunctionSpec]) -> list[dict[str, Any]]:
    """Specs with OpenFaaS's status fields: replicas, availableReplicas, invocationCount."""
    nodes = [n for n in (await gw.nodes()).values() if n["live"]]
    counts = await gw.pool.invocations([s.name for s in specs])
    out = []
    for spec, count in zip(specs, counts, strict=True):
        pools = [n.get("functions", {}).get(spec.name, {}) for n in nodes]
        out.append({
            **spec_json(spec),
            "replicas": spec.pool_min,
            "availableReplicas": sum(p.get("ready", 0) + p.get("busy", 0) for p in pools),
            "invocationCount": count,
            "queueLength": await gw.pool.queue_length(spec.name),
        })  # fmt: skip
    return out


def _parse(data: Any) -> FunctionSpec:
    data = dict(json_object(data))
    # OpenFaaS's names for the same fields, for its clients.
    if "service" in data and "name" not in data:
        data["name"] = data.pop("service")
    if "envVars" in data and "env" not in data:
        data["env"] = data.pop("envVars")
    try:
        return parse_spec(data)
    except InvalidSpec as exc:
        raise ApiError(400, "invalid_spec", str(exc)) from None


async def _pinned(gw: Gateway, spec: FunctionSpec, auth: str) -> FunctionSpec:
    """A spec whose image is in a registry, pinned to the digest its tag has now (every node
    pulls that digest, whenever it makes the function's pool)."""
    if not registry_of(spec.image) or "@" in spec.image:
        return spec
    live = [n for n, info in (await gw.nodes()).items() if info["live"]]
    if not live:
        raise ApiError(503, "no_node", "deploy: no node is up to ask the registry")
    found = await gw.command("registry.resolve", {"ref": spec.image, "auth": auth},
                             node=live[0], timeout=60)  # fmt: skip
    return replace(spec, image=f"{found['name']}@{found['digest']}")


async def _nodes_without(gw: Gateway, spec: FunctionSpec) -> list[str]:
    """The live nodes that lack a local image; refused when no node has it (a registry
    image is pulled by each node: none lacks it)."""
    if registry_of(spec.image):
        return []
    live = [n for n, info in (await gw.nodes()).items() if info["live"]]
    lacking = []
    for node in live:
        found = await gw.command("image.has", {"ref": spec.image}, node=node, timeout=10)
        if not found["id"]:
            lacking.append(node)
    if live and len(lacking) == len(live):
        raise ApiError(400, "no_image", f"image {spec.image!r} is not in the store: build it "
                       "first, or deploy it from a registry (HOST:PORT/repo:tag)")  # fmt: skip
    return lacking


async def _ready_somewhere(gw: Gateway, spec: FunctionSpec, wait: float) -> dict[str, Any]:
    """The nodes' states of the function, once one is ready (or ``wait`` seconds passed):
    ready, pulling its image, or failed (why)."""
    deadline = time.monotonic() + wait
    while True:
        states: dict[str, Any] = {"ready": [], "pulling": [], "failed": {}}
        for node, info in (await gw.nodes()).items():
            if not info["live"]:
                continue
            pool = (info.get("functions") or {}).get(spec.name)
            state = "pulling" if pool is None else str(pool.get("state", "ready"))
            if state in ("ready", "pulling"):
                states[state].append(node)
            else:
                states["failed"][node] = state
        if states["ready"] or not states["pulling"] or time.monotonic() > deadline:
            return states
        await asyncio.sleep(0.2)


async def list_functions(request: Request) -> JSONResponse:
    gw = gateway_of(request)
    return JSONResponse(await function_status(gw, await gw.pool.functions()))


async def _named(gw: Gateway, request: Request) -> FunctionSpec:
    name = request.path_params["name"]
    spec = await gw.pool.get(name)
    if spec is None:
        raise ApiError(404, "not_found", f"no function {name!r}")
    return spec


async def get_function(request: Request) -> JSONResponse:
    gw = gateway_of(request)
    spec = await _named(gw, request)
    return JSONResponse((await function_status(gw, [spec]))[0])


async def deploy(request: Request) -> JSONResponse:
    """POST creates (409 if it exists); PUT replaces (404 if it does not)."""
    gw = gateway_of(request)
    spec = _parse(await read_json(request))
    existing = await gw.pool.get(spec.name)
    if request.method == "POST" and existing is not None:
        raise ApiError(409, "exists", f"function {spec.name!r} exists: update it with PUT")
    if request.method == "PUT" and existing is None:
        raise ApiError(404, "not_found", f"no function {spec.name!r}: create it with POST")
    spec = await _pinned(gw, spec, request.headers.get("x-registry-auth", ""))
    lacking = await _nodes_without(gw, spec)
    known = set(await gw.pool.secret_names())
    missing = [n for n in spec.secrets if n not in known]
    if missing:
        raise ApiError(400, "no_secret", f"no secret {', '.join(map(repr, missing))}: "
                       "create it first (scow secret create)")  # fmt: skip
    await gw.pool.deploy(spec)
    action = "create" if existing is None else "update"
    await gw.pool.publish([messages.event("function", action, spec.name, {
        "image": spec.image, "name": spec.name})])  # fmt: skip
    status = 201 if existing is None else 200
    answer = (await function_status(gw, [spec]))[0]
    if registry_of(spec.image):
        answer["nodes"] = await _ready_somewhere(gw, spec, DEPLOY_WAIT)
    elif lacking:
        answer["nodes"] = {"lacking_image": lacking}
    return JSONResponse(answer, status)


async def delete_function(request: Request) -> JSONResponse:
    """OpenFaaS sends ``{"functionName": ...}``; ``?name=`` works too."""
    gw = gateway_of(request)
    name = request.query_params.get("name")
    if name is None:
        name = json_object(await read_json(request)).get("functionName")
    if not isinstance(name, str) or not name:
        raise ApiError(400, "bad_request", 'name the function: {"functionName": NAME} or ?name=')
    if not await gw.pool.remove(name):
        raise ApiError(404, "not_found", f"no function {name!r}")
    await gw.pool.publish([messages.event("function", "delete", name,
                                                            {"name": name})])  # fmt: skip
    return JSONResponse({"name": name, "deleted": True})


async def scale(request: Request) -> JSONResponse:
    """``{"replicas": N}``: keep N instances warm (pool.min); pool.max grows to fit."""
    gw = gateway_of(request)
    spec = await _named(gw, request)
    replicas = json_object(await read_json(request)).get("replicas")
    if isinstance(replicas, bool) or not isinstance(replicas, int) or not 0 <= replicas <= 1024:
        raise ApiError(400, "invalid_spec", f"invalid replicas {replicas!r}: expected 0 to 1024")
    scaled = replace(spec, pool_min=replicas, pool_max=max(spec.pool_max, replicas))
    await gw.pool.deploy(scaled)
    return JSONResponse((await function_status(gw, [scaled]))[0], 202)


routes = [
    Route("/system/functions", list_functions, methods=["GET"]),
    Route("/system/functions", deploy, methods=["POST", "PUT"]),
    Route("/system/functions", delete_function, methods=["DELETE"]),
    Route("/system/function/{name}", get_function, methods=["GET"]),
    Route("/system/scale-function/{name}", scale, methods=["POST"]),
]
