"""Container routes: the Docker Engine API's, for the docker CLI, docker-py and ``scow``
(exec and ``docker cp`` are in ``execs`` and ``archive``).

Each handler checks its input and sends one node command to the node that has
the container (from the ``containers`` map in Redis; any node for a create).
The node answers in scow's words (``ContainerInfo`` and plain records); Docker's
shapes are made here, in ``shapes``, and its streams in ``nodes.frames``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from gateway.docker import shapes
from gateway.docker.networks import placed_spec
from gateway.docker.nodes import (
    COMMAND_TIMEOUT,
    FOLLOW_TIMEOUT,
    command,
    containers_everywhere,
    flag,
    frames,
    terminal_size,
)
from gateway.docker.requests import Unsupported, create_request, update_request
from gateway.http import (
    ApiError,
    docker_filters,
    json_object,
    query,
    read_json,
)
from gateway.state import gateway_of
from pool.contract.errors import InvalidSpec
from pool.contract.messages import ContainerInfo


def _since(value: str, what: str) -> float:
    """Docker's time arguments: Unix seconds (fractions allowed) or RFC 3339."""
    if not value:
        return 0.0
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise ApiError(400, "bad_request", f"invalid {what} {value!r}: a Unix time") from None


def _matches(info: ContainerInfo, filters: dict[str, list[str]]) -> bool:
    try:
        return shapes.matches(info, filters)
    except InvalidSpec as exc:
        raise ApiError(400, "bad_request", str(exc)) from None


async def create(request: Request) -> JSONResponse:
    body = json_object(await read_json(request))
    name = request.query_params.get("name", "")
    try:
        spec = create_request(body, name)
    except Unsupported as exc:
        raise ApiError(501, "not_implemented", str(exc)) from None
    except InvalidSpec as exc:
        raise ApiError(400, "invalid", str(exc)) from None
    gw = gateway_of(request)
    spec, node = await placed_spec(gw, spec)
    result = await gw.command("container.create", {"spec": spec.to_json()}, node=node,
                              timeout=COMMAND_TIMEOUT)  # fmt: skip
    return JSONResponse({"Id": result["id"], "Warnings": []}, 201)


async def list_containers(request: Request) -> JSONResponse:
    """Every live node's containers, newest first."""
    gw = gateway_of(request)
    filters = docker_filters(request.query_params.get("filters", ""))
    everything = flag(request, "all") or bool(filters.get("status"))
    found = [info for _, info in await containers_everywhere(gw, everything)
             if _matches(info, filters)]  # fmt: skip
    merged = sorted((shapes.summary_json(i) for i in found), key=lambda r: -r["Created"])
    limit = request.query_params.get("limit", "")
    if limit.lstrip("-").isdigit() and int(limit) > 0:
        merged = merged[: int(limit)]
    return JSONResponse(merged)


async def inspect(request: Request) -> JSONResponse:
    return JSONResponse(shapes.inspect_json(ContainerInfo.from_json(
        await command(request, "container.inspect"))))  # fmt: skip


def _no_content(result: dict[str, Any]) -> Response:
    return Response(status_code=204 if result.get("modified", True) else 304)


async def start(request: Request) -> Response:
    return _no_content(await command(request, "container.start"))


def _timeout(request: Request) -> dict[str, Any]:
    value = request.query_params.get("t") or request.query_params.get("timeout")
    if value is None:
        return {}
    if not value.lstrip("-").isdigit():
        raise ApiError(400, "bad_request", f"invalid timeout {value!r}: whole seconds")
    return {"t": max(int(value), 0)}


async def stop(request: Request) -> Response:
    args = _timeout(request)
    return _no_content(await command(request, "container.stop", args,
                                      timeout=COMMAND_TIMEOUT + args.get("t", 10)))  # fmt: skip


async def restart(request: Request) -> Response:
    args = _timeout(request)
    await command(request, "container.restart", args,
                   timeout=COMMAND_TIMEOUT + args.get("t", 10))  # fmt: skip
    return Response(status_code=204)


async def kill(request: Request) -> Response:
    await command(request, "container.kill", {"signal": request.query_params.get("signal", "")})
    return Response(status_code=204)


async def remove(request: Request) -> Response:
    args = {"force": flag(request, "force"), "v": flag(request, "v")}
    await command(request, "container.remove", args)
    return Response(status_code=204)


async def wait(request: Request) -> Response:
    """Headers at once, the exit code when it comes: ``docker run`` starts the container
    only after its wait request has been answered that far."""
    condition = request.query_params.get("condition", "not-running")
    if condition not in ("not-running", "next-exit", "removed"):
        raise ApiError(400, "bad_request", f"invalid condition {condition!r}")
    await command(request, "container.inspect")  # no such container: a 404, not a 200

    async def result() -> AsyncIterator[bytes]:
        try:
            done = await command(request, "container.wait", {"condition": condition},
                                  timeout=FOLLOW_TIMEOUT)  # fmt: skip
            status: dict[str, Any] = {"StatusCode": done["code"], "Error": None}
        except ApiError as exc:
            status = {"StatusCode": -1, "Error": {"Message": exc.message}}
        yield json.dumps(status).encode() + b"\n"

    return StreamingResponse(result(), media_type="application/json")


async def logs(request: Request) -> Response:
    q = request.query_params
    args = {
        "stdout": flag(request, "stdout"), "stderr": flag(request, "stderr"),
        "follow": flag(request, "follow"), "timestamps": flag(request, "timestamps"),
        "tail": q.get("tail", "all"), "since": _since(q.get("since", ""), "since"),
        "until": _since(q.get("until", ""), "until"),
    }  # fmt: skip
    if not args["stdout"] and not args["stderr"]:
        raise ApiError(400, "bad_request", "choose at least one of ?stdout=1 and ?stderr=1")
    return await frames(request, "container.logs", args,
                         options={"timestamps": bool(args["timestamps"])})  # fmt: skip


async def attach(request: Request) -> Response:
    """The container's output (and, with ``stdin``, its input) over a hijacked connection;
    the client's ``detachKeys`` end it and leave the container running."""
    stdin = flag(request, "stdin")
    args = {"stdout": flag(request, "stdout"), "stderr": flag(request, "stderr"),
            "stream": flag(request, "stream"), "logs": flag(request, "logs"), "stdin": stdin}
    return await frames(request, "container.attach", args, stdin=stdin,
                        detach_keys=request.query_params.get("detachKeys", ""))  # fmt: skip


async def resize(request: Request) -> Response:
    await command(request, "container.resize", terminal_size(request))
    return Response(status_code=200)


async def update(request: Request) -> JSONResponse:
    """``docker update``: memory, cpu shares, pids limit and restart policy."""
    body = json_object(await read_json(request))
    try:
        changes = update_request(body)
    except Unsupported as exc:
        raise ApiError(501, "not_implemented", str(exc)) from None
    except InvalidSpec as exc:
        raise ApiError(400, "invalid", str(exc)) from None
    await command(request, "container.update", {"changes": changes})
    return JSONResponse({"Warnings": []})


async def top(request: Request) -> JSONResponse:
    return JSONResponse(shapes.top_json(await command(request, "container.top")))


async def changes(request: Request) -> JSONResponse:
    return JSONResponse(shapes.changes_json(await command(request, "container.changes")))


async def stats(request: Request) -> Response:
    """One sample, or (``stream``, the default) one per second until the client leaves."""
    first = shapes.stats_json(await command(request, "container.stats"))
    if not flag(request, "stream", True) or flag(request, "one-shot"):
        return JSONResponse({**first, "precpu_stats": {}})

    async def samples() -> AsyncIterator[bytes]:
        previous = first
        while True:
            await asyncio.sleep(1.0)
            try:
                current = shapes.stats_json(await command(request, "container.stats"))
            except ApiError:
                return  # the container is gone: the stream ends
            current["precpu_stats"] = previous["cpu_stats"]
            yield json.dumps(current).encode() + b"\n"
            previous = current

    return StreamingResponse(samples(), media_type="application/json")


async def rename(request: Request) -> Response:
    await command(request, "container.rename", {"name": query(request, "name", "the new name")})
    return Response(status_code=204)


async def pause(request: Request) -> Response:
    await command(request, "container.pause")
    return Response(status_code=204)


async def unpause(request: Request) -> Response:
    await command(request, "container.unpause")
    return Response(status_code=204)


async def prune(request: Request) -> JSONResponse:
    filters = docker_filters(request.query_params.get("filters", ""))
    gw = gateway_of(request)
    by_node: dict[str, list[str]] = {}
    for node, info in await containers_everywhere(gw, True):
        if info.status == "exited" and _matches(info, filters):
            by_node.setdefault(node, []).append(info.id)
    removed: list[str] = []
    for node, ids in by_node.items():
        done = await gw.command("container.prune", {"ids": ids}, node=node,
                                timeout=COMMAND_TIMEOUT)  # fmt: skip
        removed += done["removed"]
    return JSONResponse({"ContainersDeleted": removed, "SpaceReclaimed": 0})


routes = [
    Route("/containers/create", create, methods=["POST"]),
    Route("/containers/json", list_containers, methods=["GET"]),
    Route("/containers/prune", prune, methods=["POST"]),
    Route("/containers/{id}/json", inspect, methods=["GET"]),
    Route("/containers/{id}/start", start, methods=["POST"]),
    Route("/containers/{id}/stop", stop, methods=["POST"]),
    Route("/containers/{id}/restart", restart, methods=["POST"]),
    Route("/containers/{id}/kill", kill, methods=["POST"]),
    Route("/containers/{id}/wait", wait, methods=["POST"]),
    Route("/containers/{id}/logs", logs, methods=["GET"]),
    Route("/containers/{id}/attach", attach, methods=["POST"]),
    Route("/containers/{id}/top", top, methods=["GET"]),
    Route("/containers/{id}/changes", changes, methods=["GET"]),
    Route("/containers/{id}/stats", stats, methods=["GET"]),
    Route("/containers/{id}/rename", rename, methods=["POST"]),
    Route("/containers/{id}/pause", pause, methods=["POST"]),
    Route("/containers/{id}/unpause", unpause, methods=["POST"]),
    Route("/containers/{id}/resize", resize, methods=["POST"]),
    Route("/containers/{id}/update", update, methods=["POST"]),
    Route("/containers/{id}", remove, methods=["DELETE"]),
]
