"""``docker cp``: a path's stat, a tar of it out of a container, a tar into one.

The node reads and writes the container's files through its root (no link in the
container leads out); the stat goes back in Docker's header, its mode in Go's bits.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from gateway.docker import shapes
from gateway.docker.nodes import FOLLOW_TIMEOUT, command, node_of
from gateway.http import query, read_body
from gateway.state import gateway_of


def _stat_header(info: dict[str, Any]) -> dict[str, str]:
    return {"X-Docker-Container-Path-Stat": base64.b64encode(json.dumps(info).encode()).decode()}


async def archive_head(request: Request) -> Response:
    path = query(request, "path", "names the path in the container")
    info = shapes.path_stat_json(await command(request, "archive.stat", {"path": path}))
    return Response(status_code=200, headers=_stat_header(info))


async def archive_get(request: Request) -> Response:
    path = query(request, "path", "names the path in the container")
    info = shapes.path_stat_json(await command(request, "archive.stat", {"path": path}))
    gw = gateway_of(request)
    node = await node_of(gw, request.path_params["id"])
    args = {"id": request.path_params["id"], "path": path}
    archive = gw.output("archive.get", args, node=node, timeout=FOLLOW_TIMEOUT)
    return StreamingResponse(archive, media_type="application/x-tar", headers=_stat_header(info))


async def archive_put(request: Request) -> Response:
    path = query(request, "path", "names the directory in the container")
    archive = await read_body(request, gateway_of(request).config.build_limit)
    await command(request, "archive.put", {"path": path}, blob=archive)
    return Response(status_code=200)


routes = [
    Route("/containers/{id}/archive", archive_head, methods=["HEAD"]),
    Route("/containers/{id}/archive", archive_get, methods=["GET"]),
    Route("/containers/{id}/archive", archive_put, methods=["PUT"]),
]
