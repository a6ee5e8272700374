"""``docker exec``: create, start (streamed, with stdin when attached) and inspect.

The exec's record lives in Redis (written by the node that runs it), so any gateway
can start or inspect it and knows which node has its container.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.docker import shapes
from gateway.docker.nodes import COMMAND_TIMEOUT, frames, node_of, terminal_size
from gateway.http import ApiError, json_object, read_json, read_optional_json
from gateway.state import Gateway, gateway_of


async def exec_create(request: Request) -> JSONResponse:
    body = json_object(await read_json(request))
    gw = gateway_of(request)
    ref = request.path_params["id"]
    node = await node_of(gw, ref)
    result = await gw.command("exec.create", {"container": ref, "body": body}, node=node,
                              timeout=COMMAND_TIMEOUT)  # fmt: skip
    return JSONResponse({"Id": result["id"]}, 201)


async def _exec_state(gw: Gateway, exec_id: str) -> dict[str, Any]:
    state = await gw.pool.exec_state(exec_id)
    if state is None:
        raise ApiError(404, "not_found", f"no such exec instance: {exec_id}")
    return state


async def exec_start(request: Request) -> Response:
    gw = gateway_of(request)
    options = await read_optional_json(request)
    exec_id = request.path_params["exec_id"]
    state = await _exec_state(gw, exec_id)
    if options.get("Detach"):
        await gw.command("exec.start", {"id": exec_id, "detach": True}, node=state["node"],
                         timeout=COMMAND_TIMEOUT)  # fmt: skip
        return Response(status_code=200)
    args = {"id": exec_id, "node": state["node"]}
    config = state["config"]
    return await frames(request, "exec.start", args, stdin=config["stdin"],
                        detach_keys=config.get("detach_keys", ""))  # fmt: skip


async def exec_resize(request: Request) -> Response:
    gw = gateway_of(request)
    exec_id = request.path_params["exec_id"]
    state = await _exec_state(gw, exec_id)
    await gw.command("exec.resize", {"id": exec_id, **terminal_size(request)}, node=state["node"],
                     timeout=COMMAND_TIMEOUT)  # fmt: skip
    return Response(status_code=200)


async def exec_inspect(request: Request) -> JSONResponse:
    state = await _exec_state(gateway_of(request), request.path_params["exec_id"])
    return JSONResponse(shapes.exec_json(state))


routes = [
    Route("/containers/{id}/exec", exec_create, methods=["POST"]),
    Route("/exec/{exec_id}/start", exec_start, methods=["POST"]),
    Route("/exec/{exec_id}/json", exec_inspect, methods=["GET"]),
    Route("/exec/{exec_id}/resize", exec_resize, methods=["POST"]),
]
