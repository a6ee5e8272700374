"""Registry routes: ``docker pull`` and ``docker push`` of ``HOST[:PORT]/repo:tag`` through
scow, and ``docker login`` (``POST /auth``).

A pull goes to every live node (a container may be placed on any of them), the
progress of the first streamed to the client in Docker's JSON shape, the others'
outcome said at the end. A push goes from a node that has the image. The client's
credentials come in ``X-Registry-Auth`` and go to the node as they came; a login that
the registry accepts is also kept in Redis (``logins``), for the nodes' pulls of
functions' images later, when no client is there to give them.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.docker.progress import Lines, error_line, progress_response
from gateway.http import ApiError, json_object, read_json
from gateway.state import Gateway, gateway_of

PULL_TIMEOUT = 3600.0
COMMAND_TIMEOUT = 60.0


async def _live(gw: Gateway) -> list[str]:
    live = [node for node, info in (await gw.nodes()).items() if info["live"]]
    if not live:
        raise ApiError(503, "no_node", "no node is up to reach the registry")
    return live


async def _json_progress(
    gw: Gateway, name: str, args: dict[str, Any], node: str, others: list[str]
) -> Response:
    """Run ``name`` on ``node`` (and on ``others``, quietly), streaming the first's progress
    lines (JSON objects) as they come; a failure before the first line is a proper error
    status, after it a line with ``error``, as dockerd does."""
    lines: Lines = asyncio.Queue()

    async def progress(line: str) -> None:
        await lines.put(line.encode() + b"\n")

    async def elsewhere(other: str) -> str:
        try:
            await gw.command(name, args, node=other, timeout=PULL_TIMEOUT)
        except ApiError as exc:
            return f"node {other}: {exc.message}"
        return ""

    async def run() -> None:
        quiet = [asyncio.create_task(elsewhere(o)) for o in others]
        try:
            await gw.command(name, args, node=node, timeout=PULL_TIMEOUT, progress=progress)
            failures = [f for f in await asyncio.gather(*quiet) if f]
            if failures:
                await lines.put(error_line("; ".join(failures)))
        except ApiError as exc:
            for task in quiet:
                task.cancel()
            await lines.put(exc)
        finally:
            await lines.put(None)

    return await progress_response(lines, asyncio.create_task(run()))


async def pull(request: Request, ref: str) -> Response:
    """``POST /images/create?fromImage=HOST/repo&tag=T``: on every live node."""
    gw = gateway_of(request)
    first, *others = await _live(gw)
    args = {"ref": ref, "auth": request.headers.get("x-registry-auth", "")}
    return await _json_progress(gw, "image.pull", args, first, others)


async def push(request: Request) -> Response:
    """``POST /images/{name}/push?tag=T``: the local image ``name:T`` to the registry in
    its name, from a node that has it."""
    gw = gateway_of(request)
    name = request.path_params["name"]
    tag = request.query_params.get("tag") or "latest"
    ref = f"{name}:{tag}" if "@" not in name else name
    holder = ""
    for node in await _live(gw):
        found = await gw.command("image.has", {"ref": ref}, node=node, timeout=COMMAND_TIMEOUT)
        if found["id"]:
            holder = node
            break
    if not holder:
        raise ApiError(404, "not_found", f"No such image: {ref}")
    args = {"ref": ref, "target": ref, "auth": request.headers.get("x-registry-auth", "")}
    return await _json_progress(gw, "image.push", args, holder, [])


async def login(request: Request) -> JSONResponse:
    """``docker login``: the credentials are tried on the registry by a node, and kept."""
    gw = gateway_of(request)
    body = json_object(await read_json(request))
    server = str(body.get("serveraddress") or "")
    server = server.removeprefix("https://").removeprefix("http://").rstrip("/")
    if not server or "/" in server:
        raise ApiError(400, "bad_request", f"invalid serveraddress {server!r}: HOST[:PORT]")
    given = {k: body[k] for k in ("username", "password", "identitytoken") if body.get(k)}
    auth = base64.urlsafe_b64encode(json.dumps(given).encode()).decode()
    node, *_ = await _live(gw)
    await gw.command("registry.login", {"server": server, "auth": auth}, node=node,
                     timeout=COMMAND_TIMEOUT)  # fmt: skip
    await gw.pool.keep_login(server, auth)
    return JSONResponse({"Status": "Login Succeeded", "IdentityToken": ""})


routes = [
    Route("/auth", login, methods=["POST"]),
    Route("/images/{name:path}/push", push, methods=["POST"]),
]
