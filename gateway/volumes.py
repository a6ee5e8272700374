"""Volume routes, as the Docker Engine API has them."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.http import docker_filters, read_optional_json
from gateway.state import Gateway

TIMEOUT = 60.0


def _gw(request: Request) -> Gateway:
    gw: Gateway = request.app.state.gw
    return gw


async def list_volumes(request: Request) -> JSONResponse:
    filters = docker_filters(request.query_params.get("filters", ""))
    return JSONResponse(await _gw(request).command("volume.list", {"filters": filters},
                                                   timeout=TIMEOUT))  # fmt: skip


async def create(request: Request) -> JSONResponse:
    body = await read_optional_json(request)
    args = {"name": body.get("Name") or "", "driver": body.get("Driver") or "local",
            "labels": body.get("Labels") or {}}  # fmt: skip
    return JSONResponse(await _gw(request).command("volume.create", args, timeout=TIMEOUT), 201)


async def inspect(request: Request) -> JSONResponse:
    name = request.path_params["name"]
    return JSONResponse(await _gw(request).command("volume.inspect", {"name": name},
                                                   timeout=TIMEOUT))  # fmt: skip


async def remove(request: Request) -> Response:
    force = request.query_params.get("force", "") in ("1", "true")
    await _gw(request).command("volume.remove", {"name": request.path_params["name"],
                                                 "force": force}, timeout=TIMEOUT)  # fmt: skip
    return Response(status_code=204)


async def prune(request: Request) -> JSONResponse:
    filters = docker_filters(request.query_params.get("filters", ""))
    everything = filters.get("all", ["false"])[0] in ("1", "true")
    return JSONResponse(await _gw(request).command("volume.prune", {"all": everything},
                                                   timeout=TIMEOUT))  # fmt: skip


routes = [
    Route("/volumes", list_volumes, methods=["GET"]),
    Route("/volumes/create", create, methods=["POST"]),
    Route("/volumes/prune", prune, methods=["POST"]),
    Route("/volumes/{name}", inspect, methods=["GET"]),
    Route("/volumes/{name}", remove, methods=["DELETE"]),
]
