"""Image routes: Docker Engine API shapes for list, inspect, history, tag, remove and
build (so that the docker CLI and ``scow`` share them), and bootstrapping base images.

A build or bootstrap streams its progress as Docker does: one JSON object per
line, ``{"stream": ...}`` while it works, ``{"aux": {"ID": ...}}`` at the end,
or ``{"error": ..., "errorDetail": {"message": ...}}``.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from gateway.docker import registries
from gateway.docker.nodes import node_of
from gateway.docker.progress import Lines, progress_response
from gateway.http import ApiError, docker_filters, query, read_body
from gateway.state import Gateway, gateway_of
from pool.contract.references import DOCKER_HUB, registry_of

BUILD_TIMEOUT = 3600.0


def _epoch(text: str) -> int:
    if not text:
        return 0
    try:
        return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())
    except ValueError:
        return 0


def local_reference(name: str) -> str:
    """Docker's clients qualify a short name with Docker Hub and ``library/``; scow reaches
    no registry it was not pointed at and makes its base images itself, so for those the
    short name is the image. A name with another registry host keeps it.

    >>> local_reference("docker.io/library/busybox"), local_reference("reg:5000/team/app")
    ('busybox', 'reg:5000/team/app')
    >>> local_reference("../../etc")  # not a host: left for the node to refuse by name
    '../../etc'
    """
    first, sep, rest = name.partition("/")
    if sep and first in DOCKER_HUB:
        name = rest
    return name.removeprefix("library/")


def _summary(image: dict[str, Any]) -> dict[str, Any]:
    return {
        "Id": image["id"], "ParentId": "", "RepoTags": image["tags"] or ["<none>:<none>"],
        "RepoDigests": image.get("digests") or [], "Created": _epoch(image["created"]),
        "Size": image["size"],
        "SharedSize": -1, "VirtualSize": image["size"], "Containers": -1,
        "Labels": image.get("labels") or {},
    }  # fmt: skip


async def list_images(request: Request) -> JSONResponse:
    gw = gateway_of(request)
    all_images = request.query_params.get("all", "") in ("1", "true")
    images = await gw.command("images.list", {"all": all_images}, timeout=30)
    return JSONResponse([_summary(i) for i in images])


async def inspect_image(request: Request) -> JSONResponse:
    gw = gateway_of(request)
    image = await gw.command("image.inspect", {"ref": request.path_params["name"]}, timeout=30)
    config = image["config"]
    return JSONResponse({
        "Id": image["id"], "RepoTags": image["tags"], "RepoDigests": image.get("digests") or [],
        "Parent": "",
        "Comment": "", "Created": config.get("created", ""), "Author": config.get("author", ""),
        "Config": config.get("config") or {}, "Architecture": config.get("architecture", ""),
        "Os": config.get("os", "linux"), "Size": image["size"], "VirtualSize": image["size"],
        "RootFS": config.get("rootfs", {"type": "layers", "diff_ids": []}),
        "Metadata": {"LastTagTime": "0001-01-01T00:00:00Z"},
    })  # fmt: skip


async def history(request: Request) -> JSONResponse:
    gw = gateway_of(request)
    image = await gw.command("image.inspect", {"ref": request.path_params["name"]}, timeout=30)
    rows = image["history"]
    return JSONResponse([
        {"Id": image["id"] if i == 0 else "<missing>", "Created": _epoch(r.get("created", "")),
         "CreatedBy": r.get("created_by", ""), "Tags": image["tags"] if i == 0 else None,
         "Size": r["size"], "Comment": r.get("comment", "")}
        for i, r in enumerate(rows)
    ])  # fmt: skip


async def tag(request: Request) -> Response:
    gw = gateway_of(request)
    repo = query(request, "repo", "names the new tag")
    new = f"{repo}:{request.query_params['tag']}" if request.query_params.get("tag") else repo
    await gw.command("image.tag", {"ref": request.path_params["name"], "tag": new}, timeout=30)
    return Response(status_code=201)


async def remove(request: Request) -> JSONResponse:
    gw = gateway_of(request)
    force = request.query_params.get("force", "") in ("1", "true")
    lines = await gw.command(
        "image.remove", {"ref": request.path_params["name"], "force": force}, timeout=60
    )
    out = []
    for line in lines:
        what, _, ref = line.partition(": ")
        out.append({what: ref})
    return JSONResponse(out)


async def prune(request: Request) -> JSONResponse:
    """``docker image prune [-a]``: untagged images (``dangling=false``: every unused one)."""
    gw = gateway_of(request)
    filters = docker_filters(request.query_params.get("filters", ""))
    every = any(v.lower() in ("false", "0") for v in filters.get("dangling", []))
    done = await gw.command("images.prune", {"all": every}, timeout=BUILD_TIMEOUT)
    deleted = [{what: ref} for what, _, ref in (line.partition(": ") for line in done["removed"])]
    return JSONResponse({"ImagesDeleted": deleted or None, "SpaceReclaimed": done["reclaimed"]})


async def _progress_stream(
    gw: Gateway, name: str, args: dict[str, Any], blob: bytes
) -> Response:
    """Run a long node command, streaming its progress the way docker build does.

    A command that fails before its first line of progress (a bad tag, an image
    that cannot be made) answers with its own 4xx instead, as dockerd does.
    """
    lines: Lines = asyncio.Queue()

    async def progress(line: str) -> None:
        await lines.put(json.dumps({"stream": line + "\n"}).encode() + b"\n")

    async def run() -> None:
        try:
            image = await gw.command(name, args, blob=blob, timeout=BUILD_TIMEOUT,
                                     progress=progress)  # fmt: skip
            await lines.put(json.dumps({"aux": {"ID": image["id"]}}).encode() + b"\n")
        except ApiError as exc:
            await lines.put(exc)
        finally:
            await lines.put(None)

    return await progress_response(lines, asyncio.create_task(run()))


def _json_query(request: Request, key: str) -> dict[str, str]:
    raw = request.query_params.get(key, "")
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        raise ApiError(
            400, "bad_request", f"invalid {key} {raw!r}: expected a JSON object"
        ) from None
    if not isinstance(value, dict):
        raise ApiError(400, "bad_request", f"invalid {key} {raw!r}: expected a JSON object")
    return {str(k): "" if v is None else str(v) for k, v in value.items()}


async def build(request: Request) -> Response:
    """``docker build``'s route: the context as a tar body, options in the query."""
    gw = gateway_of(request)
    q = request.query_params
    tags = q.getlist("t")
    args = {
        "tag": tags[0] if tags else "", "dockerfile": q.get("dockerfile", "Dockerfile"),
        "build_args": _json_query(request, "buildargs"), "labels": _json_query(request, "labels"),
        "no_cache": q.get("nocache", "") in ("1", "true"), "target": q.get("target", ""),
        "network": q.get("networkmode", "") or "host",
    }  # fmt: skip
    if args["network"] not in ("host", "none", "default", "bridge"):
        raise ApiError(400, "bad_request", f"invalid networkmode {args['network']!r}: host "
                       "or none (RUN steps share the host's network, or have none)")  # fmt: skip
    if q.get("remote"):
        raise ApiError(501, "not_implemented", "building from a remote context is not supported")
    context = await read_body(request, gw.config.build_limit)
    if not context:
        raise ApiError(400, "bad_request", "the build context (a tar) is the request body")
    if not any(n["live"] for n in (await gw.nodes()).values()):
        raise ApiError(503, "no_node", "image.build: no node is up to do it")
    return await _progress_stream(gw, "image.build", args, context)


async def bootstrap(request: Request) -> Response:
    """``?name=busybox|debian:bookworm``: make a base image from what the host has."""
    gw = gateway_of(request)
    name = query(request, "name", "names the base image (busybox, debian:bookworm)")
    if not any(n["live"] for n in (await gw.nodes()).values()):
        raise ApiError(503, "no_node", "image.bootstrap: no node is up to do it")
    return await _progress_stream(gw, "image.bootstrap", {"name": name}, b"")


async def save(request: Request) -> Response:
    """``docker save``: a docker-archive of the named images, streamed as the node writes it."""
    gw = gateway_of(request)
    names = request.query_params.getlist("names")
    if "name" in request.path_params:
        names = [request.path_params["name"]]
    if not names:
        raise ApiError(400, "bad_request", "?names= lists the images to save")
    for name in names:  # a missing image is a 404, before the stream starts
        await gw.command("image.inspect", {"ref": name}, timeout=30)
    archive = gw.output("image.save", {"refs": names}, timeout=BUILD_TIMEOUT)
    return StreamingResponse(archive, media_type="application/x-tar")


async def load(request: Request) -> Response:
    """``docker load``: a docker-archive or OCI archive as the body."""
    gw = gateway_of(request)
    archive = await read_body(request, gw.config.build_limit)
    if not archive:
        raise ApiError(400, "bad_request", "the archive (a tar) is the request body")
    lines = await gw.command("image.load", blob=archive, timeout=BUILD_TIMEOUT)
    body = b"".join(json.dumps({"stream": line + "\n"}).encode() + b"\n" for line in lines)
    return Response(body, media_type="application/json")


async def create(request: Request) -> Response:
    """``docker import`` (``fromSrc=-``, the rootfs tar as the body) and ``docker pull``
    (``fromImage``): with no registry, a pull makes busybox or debian here, like bootstrap."""
    gw = gateway_of(request)
    q = request.query_params
    if q.get("fromSrc") == "-":
        repo, tag_ = q.get("repo", ""), q.get("tag", "")
        ref = f"{repo}:{tag_}" if repo and tag_ else repo
        rootfs = await read_body(request, gw.config.build_limit)
        if not rootfs:
            raise ApiError(400, "bad_request", "the root filesystem (a tar) is the request body")
        image = await gw.command("image.import", {"tag": ref, "message": q.get("message", "")},
                                 blob=rootfs, timeout=BUILD_TIMEOUT)  # fmt: skip
        return JSONResponse({"status": image["id"]})
    if q.get("fromSrc"):
        raise ApiError(501, "not_implemented", "importing from a URL is not supported: use -")
    name = local_reference(q.get("fromImage", ""))
    if not name:
        raise ApiError(400, "bad_request", "give fromImage (a pull) or fromSrc=- (an import)")
    tag_ = q.get("tag", "")
    if tag_.startswith("sha256:"):
        ref = f"{name}@{tag_}"
    elif tag_ and ":" not in name.rsplit("/", 1)[-1] and "@" not in name:
        ref = f"{name}:{tag_}"
    else:
        ref = name
    if registry_of(name):
        return await registries.pull(request, ref)
    if not any(n["live"] for n in (await gw.nodes()).values()):
        raise ApiError(503, "no_node", "image pull: no node is up to do it")
    try:
        await gw.command("image.inspect", {"ref": ref}, timeout=30)
    except ApiError as exc:
        if exc.status != 404:
            raise
        return await _progress_stream(gw, "image.bootstrap", {"name": ref}, b"")
    return JSONResponse({"status": f"Image is up to date for {ref}"})


async def commit_container(request: Request) -> JSONResponse:
    """``docker commit``: a writable container's changes (an environment's too) as an image."""
    gw = gateway_of(request)
    q = request.query_params
    container = query(request, "container", "names the container")
    repo, tag_ = q.get("repo", ""), q.get("tag", "")
    if q.get("changes"):
        raise ApiError(501, "not_implemented", "commit --change is not supported yet")
    args = {"container": container, "tag": f"{repo}:{tag_}" if repo and tag_ else repo,
            "author": q.get("author", ""), "message": q.get("comment", ""),
            "pause": q.get("pause", "1") not in ("0", "false")}  # fmt: skip
    node = await node_of(gw, container) or await _lease_owner(gw, container)
    image = await gw.command("container.commit", args, node=node, timeout=BUILD_TIMEOUT)
    return JSONResponse({"Id": image["id"]}, 201)


async def _lease_owner(gw: Gateway, container: str) -> str:
    """The node running an environment's container; "" (any node) when none is."""
    for lease in await gw.pool.leases():
        if container in (lease["id"], lease["container"]) or (
            len(container) >= 12 and lease["container"].startswith(container)
        ):
            return str(lease["node"])
    return ""


routes = [
    Route("/images/get", save, methods=["GET"]),
    Route("/images/load", load, methods=["POST"]),
    Route("/images/create", create, methods=["POST"]),
    Route("/commit", commit_container, methods=["POST"]),
    Route("/images/json", list_images, methods=["GET"]),
    Route("/images/prune", prune, methods=["POST"]),
    Route("/images/{name:path}/get", save, methods=["GET"]),
    Route("/images/{name:path}/json", inspect_image, methods=["GET"]),
    Route("/images/{name:path}/history", history, methods=["GET"]),
    Route("/images/{name:path}/tag", tag, methods=["POST"]),
    Route("/images/{name:path}", remove, methods=["DELETE"]),
    Route("/build", build, methods=["POST"]),
    Route("/system/images/bootstrap", bootstrap, methods=["POST"]),
]
