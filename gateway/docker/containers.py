"""Container and exec routes: the Docker Engine API's, for the docker CLI, docker-py and
``scow``.

Each handler checks its input and sends one node command to the node that has
the container (from the ``containers`` map in Redis; any node for a create).
The node answers in scow's words (``ContainerInfo`` and plain records); Docker's
shapes are made here, in ``shapes``. Streams (logs, attach, exec) arrive as
output tagged with its stream, become Docker's multiplexed frames here
(``frames``) and go to the client as they come: on a hijacked connection
(``101 UPGRADED``) when the client asked for one, as the docker CLI does, or else
as a plain streamed body.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from gateway.docker import shapes
from gateway.docker.frames import framed
from gateway.docker.hijack import (
    MULTIPLEXED_STREAM,
    Hijacked,
    RawStream,
    can_hijack,
    hijack,
)
from gateway.docker.requests import Unsupported, create_request
from gateway.http import (
    ApiError,
    docker_filters,
    json_object,
    query,
    read_body,
    read_json,
    read_optional_json,
)
from gateway.state import Gateway
from pool.contract.errors import InvalidSpec
from pool.contract.messages import ContainerInfo

FOLLOW_TIMEOUT = 7 * 86400.0  # a followed stream ends with its container, not before
COMMAND_TIMEOUT = 120.0
STDIN_LIMIT = 64 << 20


def _gw(request: Request) -> Gateway:
    gw: Gateway = request.app.state.gw
    return gw


def _flag(request: Request, key: str, default: bool = False) -> bool:
    value = request.query_params.get(key)
    if value is None:
        return default
    return value.lower() in ("1", "true", "yes")


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


async def node_of(gw: Gateway, ref: str) -> str:
    """The node that has container ``ref`` (id, name or id prefix); "" (any node) when
    that is not known or the node is not live."""
    found = ""
    prefixed = []
    for cid, info in (await gw.pool.container_nodes()).items():
        if ref in (cid, info["name"]):
            found = str(info["node"])
            break
        if cid.startswith(ref):
            prefixed.append(str(info["node"]))
    else:
        found = prefixed[0] if len(prefixed) == 1 else ""
    if found and not (await gw.nodes()).get(found, {}).get("live"):
        return ""
    return found


async def _command(
    request: Request, name: str, args: dict[str, Any] | None = None, **kw: Any
) -> Any:
    gw = _gw(request)
    ref = request.path_params.get("id", "")
    node = await node_of(gw, ref) if ref else ""
    args = {"id": ref, **(args or {})} if ref else (args or {})
    kw.setdefault("timeout", COMMAND_TIMEOUT)
    return await gw.command(name, args, node=node, **kw)


async def containers_everywhere(
    gw: Gateway, everything: bool
) -> list[tuple[str, ContainerInfo]]:
    """Every live node's containers (all, or the running ones), with their node."""
    live = [node for node, info in (await gw.nodes()).items() if info["live"]]
    if not live:
        raise ApiError(503, "no_node", "container list: no node is up")
    parts = await asyncio.gather(*(
        gw.command("container.list", {"all": everything}, node=n, timeout=COMMAND_TIMEOUT)
        for n in live))  # fmt: skip
    return [(n, ContainerInfo.from_json(r)) for n, part in zip(live, parts, strict=True)
            for r in part]  # fmt: skip


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
    result = await _command(request, "container.create", {"spec": spec.to_json()})
    return JSONResponse({"Id": result["id"], "Warnings": []}, 201)


async def list_containers(request: Request) -> JSONResponse:
    """Every live node's containers, newest first."""
    gw = _gw(request)
    filters = docker_filters(request.query_params.get("filters", ""))
    everything = _flag(request, "all") or bool(filters.get("status"))
    found = [info for _, info in await containers_everywhere(gw, everything)
             if _matches(info, filters)]  # fmt: skip
    merged = sorted((shapes.summary_json(i) for i in found), key=lambda r: -r["Created"])
    limit = request.query_params.get("limit", "")
    if limit.lstrip("-").isdigit() and int(limit) > 0:
        merged = merged[: int(limit)]
    return JSONResponse(merged)


async def inspect(request: Request) -> JSONResponse:
    return JSONResponse(shapes.inspect_json(ContainerInfo.from_json(
        await _command(request, "container.inspect"))))  # fmt: skip


def _no_content(result: dict[str, Any]) -> Response:
    return Response(status_code=204 if result.get("modified", True) else 304)


async def start(request: Request) -> Response:
    return _no_content(await _command(request, "container.start"))


def _timeout(request: Request) -> dict[str, Any]:
    value = request.query_params.get("t") or request.query_params.get("timeout")
    if value is None:
        return {}
    if not value.lstrip("-").isdigit():
        raise ApiError(400, "bad_request", f"invalid timeout {value!r}: whole seconds")
    return {"t": max(int(value), 0)}


async def stop(request: Request) -> Response:
    args = _timeout(request)
    return _no_content(await _command(request, "container.stop", args,
                                      timeout=COMMAND_TIMEOUT + args.get("t", 10)))  # fmt: skip


async def restart(request: Request) -> Response:
    args = _timeout(request)
    await _command(request, "container.restart", args,
                   timeout=COMMAND_TIMEOUT + args.get("t", 10))  # fmt: skip
    return Response(status_code=204)


async def kill(request: Request) -> Response:
    await _command(request, "container.kill", {"signal": request.query_params.get("signal", "")})
    return Response(status_code=204)


async def remove(request: Request) -> Response:
    args = {"force": _flag(request, "force"), "v": _flag(request, "v")}
    await _command(request, "container.remove", args)
    return Response(status_code=204)


async def wait(request: Request) -> Response:
    """Headers at once, the exit code when it comes: ``docker run`` starts the container
    only after its wait request has been answered that far."""
    condition = request.query_params.get("condition", "not-running")
    if condition not in ("not-running", "next-exit", "removed"):
        raise ApiError(400, "bad_request", f"invalid condition {condition!r}")
    await _command(request, "container.inspect")  # no such container: a 404, not a 200

    async def result() -> AsyncIterator[bytes]:
        try:
            done = await _command(request, "container.wait", {"condition": condition},
                                  timeout=FOLLOW_TIMEOUT)  # fmt: skip
            status: dict[str, Any] = {"StatusCode": done["code"], "Error": None}
        except ApiError as exc:
            status = {"StatusCode": -1, "Error": {"Message": exc.message}}
        yield json.dumps(status).encode() + b"\n"

    return StreamingResponse(result(), media_type="application/json")


async def _frames(
    request: Request, name: str, args: dict[str, Any], *, stdin: bool = False,
    options: dict[str, bool] | None = None,
) -> Response:
    """Run a streaming node command; its frames go to a hijacked connection when the client
    asked for one, or else to a streamed body.

    The node sends an empty chunk once it is ready (attached, or the exec started), so
    that a failure before then (no such container) is still a proper HTTP answer, and so
    that ``docker run`` starts the container only after its output is being read.
    """
    gw = _gw(request)
    ref = request.path_params.get("id", "")
    node = str(args.pop("node", "")) or (await node_of(gw, ref) if ref else "")
    if ref:
        args = {"id": ref, **args}
    if not any(n["live"] for n in (await gw.nodes()).values()):
        raise ApiError(503, "no_node", f"{name}: no node is up to do it")
    content_type = MULTIPLEXED_STREAM  # no TTY: stdout and stderr always come as frames
    hijacking = can_hijack(request)
    stream: RawStream | None = None
    blob = b""
    if hijacking and stdin:  # exec -i: all of stdin first (see pool/execs.py)
        stream = await hijack(request, content_type)
        try:
            blob = await stream.read_all(STDIN_LIMIT)
        except ValueError:
            stream.close()
            return Hijacked()
    chunks: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=4)
    ready: asyncio.Future[ApiError | None] = asyncio.get_running_loop().create_future()

    async def output(chunk: bytes, kind: str) -> None:
        if not ready.done():
            ready.set_result(None)
        if chunk and (data := framed(kind, chunk, options or {})):
            await chunks.put(data)

    async def run() -> None:
        try:
            await gw.command(name, args, node=node, blob=blob, timeout=FOLLOW_TIMEOUT,
                             output=output)  # fmt: skip
        except ApiError as exc:
            if not ready.done():
                ready.set_result(exc)
        finally:
            if not ready.done():
                ready.set_result(None)
            await chunks.put(None)

    task = asyncio.create_task(run())

    async def body() -> AsyncIterator[bytes]:
        try:
            while (chunk := await chunks.get()) is not None:
                yield chunk
        finally:
            if not task.done():  # the client went away: the node stops following
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    failed = await ready
    if failed is not None and stream is None:
        raise failed
    if not hijacking:
        return StreamingResponse(body(), media_type=content_type)
    stream = stream or await hijack(request, content_type)
    try:
        async for chunk in body():
            await stream.write(chunk)
    except ConnectionError:
        pass  # the client left; body()'s cleanup stopped the command
    finally:
        stream.close()
    return Hijacked()


async def logs(request: Request) -> Response:
    q = request.query_params
    args = {
        "stdout": _flag(request, "stdout"), "stderr": _flag(request, "stderr"),
        "follow": _flag(request, "follow"), "timestamps": _flag(request, "timestamps"),
        "tail": q.get("tail", "all"), "since": _since(q.get("since", ""), "since"),
        "until": _since(q.get("until", ""), "until"),
    }  # fmt: skip
    if not args["stdout"] and not args["stderr"]:
        raise ApiError(400, "bad_request", "choose at least one of ?stdout=1 and ?stderr=1")
    return await _frames(request, "container.logs", args,
                         options={"timestamps": bool(args["timestamps"])})  # fmt: skip


async def attach(request: Request) -> Response:
    if _flag(request, "stdin"):
        raise ApiError(501, "not_implemented", "attaching to a container's stdin is not supported")
    args = {"stdout": _flag(request, "stdout"), "stderr": _flag(request, "stderr"),
            "stream": _flag(request, "stream"), "logs": _flag(request, "logs")}  # fmt: skip
    return await _frames(request, "container.attach", args)


async def top(request: Request) -> JSONResponse:
    return JSONResponse(shapes.top_json(await _command(request, "container.top")))


async def changes(request: Request) -> JSONResponse:
    return JSONResponse(shapes.changes_json(await _command(request, "container.changes")))


async def stats(request: Request) -> Response:
    """One sample, or (``stream``, the default) one per second until the client leaves."""
    first = shapes.stats_json(await _command(request, "container.stats"))
    if not _flag(request, "stream", True) or _flag(request, "one-shot"):
        return JSONResponse({**first, "precpu_stats": {}})

    async def samples() -> AsyncIterator[bytes]:
        previous = first
        while True:
            await asyncio.sleep(1.0)
            try:
                current = shapes.stats_json(await _command(request, "container.stats"))
            except ApiError:
                return  # the container is gone: the stream ends
            current["precpu_stats"] = previous["cpu_stats"]
            yield json.dumps(current).encode() + b"\n"
            previous = current

    return StreamingResponse(samples(), media_type="application/json")


async def rename(request: Request) -> Response:
    await _command(request, "container.rename", {"name": query(request, "name", "the new name")})
    return Response(status_code=204)


async def pause(request: Request) -> Response:
    await _command(request, "container.pause")
    return Response(status_code=204)


async def unpause(request: Request) -> Response:
    await _command(request, "container.unpause")
    return Response(status_code=204)


async def prune(request: Request) -> JSONResponse:
    filters = docker_filters(request.query_params.get("filters", ""))
    gw = _gw(request)
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


async def not_supported(request: Request) -> Response:
    what = request.url.path.rsplit("/", 1)[-1]
    raise ApiError(501, "not_implemented", f"{what} is not supported: containers have no TTY")


# -- exec ---------------------------------------------------------------------------------


async def exec_create(request: Request) -> JSONResponse:
    body = json_object(await read_json(request))
    gw = _gw(request)
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
    gw = _gw(request)
    options = await read_optional_json(request)
    if options.get("Tty"):
        raise ApiError(501, "not_implemented", "exec with a TTY (-t) is not supported")
    exec_id = request.path_params["exec_id"]
    state = await _exec_state(gw, exec_id)
    if options.get("Detach"):
        await gw.command("exec.start", {"id": exec_id, "detach": True}, node=state["node"],
                         timeout=COMMAND_TIMEOUT)  # fmt: skip
        return Response(status_code=200)
    args = {"id": exec_id, "node": state["node"]}
    return await _frames(request, "exec.start", args, stdin=state["config"]["stdin"])


async def exec_inspect(request: Request) -> JSONResponse:
    state = await _exec_state(_gw(request), request.path_params["exec_id"])
    return JSONResponse(shapes.exec_json(state))


# -- archive (docker cp) ------------------------------------------------------------------


def _stat_header(info: dict[str, Any]) -> dict[str, str]:
    return {"X-Docker-Container-Path-Stat": base64.b64encode(json.dumps(info).encode()).decode()}


async def archive_head(request: Request) -> Response:
    path = query(request, "path", "names the path in the container")
    info = shapes.path_stat_json(await _command(request, "archive.stat", {"path": path}))
    return Response(status_code=200, headers=_stat_header(info))


async def archive_get(request: Request) -> Response:
    path = query(request, "path", "names the path in the container")
    info = shapes.path_stat_json(await _command(request, "archive.stat", {"path": path}))
    gw = _gw(request)
    node = await node_of(gw, request.path_params["id"])
    args = {"id": request.path_params["id"], "path": path}
    archive = gw.output("archive.get", args, node=node, timeout=FOLLOW_TIMEOUT)
    return StreamingResponse(archive, media_type="application/x-tar", headers=_stat_header(info))


async def archive_put(request: Request) -> Response:
    path = query(request, "path", "names the directory in the container")
    archive = await read_body(request, _gw(request).config.build_limit)
    await _command(request, "archive.put", {"path": path}, blob=archive)
    return Response(status_code=200)


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
    Route("/containers/{id}/resize", not_supported, methods=["POST"]),
    Route("/containers/{id}/exec", exec_create, methods=["POST"]),
    Route("/containers/{id}/archive", archive_head, methods=["HEAD"]),
    Route("/containers/{id}/archive", archive_get, methods=["GET"]),
    Route("/containers/{id}/archive", archive_put, methods=["PUT"]),
    Route("/containers/{id}", remove, methods=["DELETE"]),
    Route("/exec/{exec_id}/start", exec_start, methods=["POST"]),
    Route("/exec/{exec_id}/json", exec_inspect, methods=["GET"]),
    Route("/exec/{exec_id}/resize", not_supported, methods=["POST"]),
]
