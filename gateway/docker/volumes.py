"""Volume routes, as the Docker Engine API has them: the node answers with its volume
records, which become Docker's shapes (and are filtered) here."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.docker import shapes
from gateway.http import ApiError, docker_filters, read_optional_json
from gateway.state import gateway_of

TIMEOUT = 60.0



def _truth(values: list[str], what: str) -> bool:
    value = values[0].lower() if values else ""
    if value not in ("1", "true", "0", "false"):
        raise ApiError(400, "invalid", f"invalid filter {what}={value!r}: true or false")
    return value in ("1", "true")


def _matches(record: dict[str, Any], filters: dict[str, list[str]]) -> bool:
    for key in filters:
        if key not in ("dangling", "name", "label", "driver"):
            raise ApiError(400, "invalid", f"invalid filter {key!r}")
    if "dangling" in filters and record["dangling"] != _truth(filters["dangling"], "dangling"):
        return False
    if "name" in filters and not any(n in record["name"] for n in filters["name"]):
        return False
    if "driver" in filters and "local" not in filters["driver"]:
        return False
    return all(shapes.label_matches(record["labels"], want) for want in filters.get("label", ()))


async def list_volumes(request: Request) -> JSONResponse:
    filters = docker_filters(request.query_params.get("filters", ""))
    records = await gateway_of(request).command("volume.list", timeout=TIMEOUT)
    volumes = [shapes.volume_json(r) for r in records if _matches(r, filters)]
    return JSONResponse({"Volumes": volumes, "Warnings": []})


async def create(request: Request) -> JSONResponse:
    body = await read_optional_json(request)
    args = {"name": body.get("Name") or "", "driver": body.get("Driver") or "local",
            "labels": body.get("Labels") or {}}  # fmt: skip
    record = await gateway_of(request).command("volume.create", args, timeout=TIMEOUT)
    return JSONResponse(shapes.volume_json(record), 201)


async def inspect(request: Request) -> JSONResponse:
    name = request.path_params["name"]
    record = await gateway_of(request).command("volume.inspect", {"name": name}, timeout=TIMEOUT)
    return JSONResponse(shapes.volume_json(record))


async def remove(request: Request) -> Response:
    force = request.query_params.get("force", "") in ("1", "true")
    await gateway_of(request).command("volume.remove", {"name": request.path_params["name"],
                                                 "force": force}, timeout=TIMEOUT)  # fmt: skip
    return Response(status_code=204)


async def prune(request: Request) -> JSONResponse:
    filters = docker_filters(request.query_params.get("filters", ""))
    everything = _truth(filters.get("all", ["false"]), "all")
    done = await gateway_of(request).command("volume.prune", {"all": everything}, timeout=TIMEOUT)
    return JSONResponse({"VolumesDeleted": done["removed"], "SpaceReclaimed": 0})


routes = [
    Route("/volumes", list_volumes, methods=["GET"]),
    Route("/volumes/create", create, methods=["POST"]),
    Route("/volumes/prune", prune, methods=["POST"]),
    Route("/volumes/{name}", inspect, methods=["GET"]),
    Route("/volumes/{name}", remove, methods=["DELETE"]),
]
