"""The Docker Engine API's system routes: ``/_ping``, ``/version``, ``/info``, ``/system/df``.

The docker CLI and docker-py negotiate their API version from ``/_ping``'s
``API-Version`` header (and ``/version``): they speak ours, or theirs if lower.
"""

from __future__ import annotations

import asyncio
import os
import platform
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from gateway import __version__
from gateway.docker import shapes
from gateway.docker.nodes import containers_everywhere
from gateway.http import ApiError
from gateway.state import Gateway, gateway_of

# The newest Engine API version the docker CLI here sends (Docker 29's CLI refuses a daemon
# below 1.44); testcontainers and older clients pin versions down to 1.24.
API_VERSION = "1.50"
MIN_API_VERSION = "1.24"
TIMEOUT = 60.0
_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}



async def ping(request: Request) -> Response:
    headers = {"API-Version": API_VERSION, "OSType": "linux", "Docker-Experimental": "false",
               "Builder-Version": "1", "Cache-Control": "no-cache, no-store, must-revalidate",
               "Pragma": "no-cache"}  # fmt: skip
    return PlainTextResponse("OK", headers=headers)


async def version(request: Request) -> JSONResponse:
    arch = _ARCH.get(platform.machine(), platform.machine())
    details = {"ApiVersion": API_VERSION, "MinAPIVersion": MIN_API_VERSION, "Os": "linux",
               "Arch": arch, "KernelVersion": platform.release(), "GitCommit": "",
               "GoVersion": "", "BuildTime": ""}  # fmt: skip
    return JSONResponse({
        "Platform": {"Name": f"scow {__version__}"},
        "Components": [{"Name": "Engine", "Version": __version__, "Details": details}],
        "Version": __version__, **details,
    })  # fmt: skip


async def _on_live_nodes(gw: Gateway, name: str, args: dict[str, Any]) -> list[Any]:
    live = [node for node, info in (await gw.nodes()).items() if info["live"]]
    if not live:
        raise ApiError(503, "no_node", f"{name}: no node is up")
    return list(
        await asyncio.gather(*(gw.command(name, args, node=n, timeout=TIMEOUT) for n in live))
    )


async def info(request: Request) -> JSONResponse:
    gw = gateway_of(request)
    containers = [c for _, c in await containers_everywhere(gw, True)]
    images = await gw.command("images.list", {}, timeout=TIMEOUT)
    node_info = (await _on_live_nodes(gw, "node.info", {}))[0]
    states = [c.status for c in containers]
    pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return JSONResponse({
        "ID": node_info["node"], "Name": socket.gethostname(),
        "Containers": len(containers), "ContainersRunning": states.count("running"),
        "ContainersPaused": states.count("paused"),
        "ContainersStopped": len(states) - states.count("running") - states.count("paused"),
        "Images": len(images), "Driver": "overlay", "DriverStatus": [],
        "MemoryLimit": True, "SwapLimit": False, "CpuCfsPeriod": True, "CpuCfsQuota": True,
        "CPUShares": True, "PidsLimit": True, "OomKillDisable": False,
        "KernelVersion": platform.release(), "OperatingSystem": "scow", "OSType": "linux",
        "Architecture": platform.machine(), "NCPU": os.cpu_count() or 1, "MemTotal": pages,
        "ServerVersion": __version__, "CgroupDriver": "cgroupfs",
        "CgroupVersion": "2" if node_info["cgroups"] == "v2" else "1",
        "DockerRootDir": "", "Runtimes": {"runc": {"path": "runc"}}, "DefaultRuntime": "runc",
        "Swarm": {"LocalNodeState": "inactive"}, "LiveRestoreEnabled": True,
        "SecurityOptions": ["name=no-new-privileges"], "Labels": [], "Warnings": [],
        "Plugins": {"Volume": ["local"], "Network": ["bridge", "null"], "Log": ["k8s-file"]},
        "RegistryConfig": {"IndexConfigs": {}, "InsecureRegistryCIDRs": [], "Mirrors": []},
        "Nodes": [node for node, n in (await gw.nodes()).items() if n["live"]],
    })  # fmt: skip


async def disk_usage(request: Request) -> JSONResponse:
    gw = gateway_of(request)
    containers = [shapes.summary_json(c) for _, c in await containers_everywhere(gw, True)]
    images = await gw.command("images.list", {}, timeout=TIMEOUT)
    volumes = [shapes.volume_json(v) for v in await gw.command("volume.list", timeout=TIMEOUT)]
    return JSONResponse({
        "LayersSize": sum(i["size"] for i in images),
        "Images": [{"Id": i["id"], "RepoTags": i["tags"], "Size": i["size"], "SharedSize": -1,
                    "Containers": -1, "Created": 0, "Labels": i.get("labels") or {}}
                   for i in images],
        "Containers": [{**c, "SizeRw": 0, "SizeRootFs": 0} for c in containers],
        "Volumes": [{**v, "UsageData": {"Size": -1, "RefCount": -1}} for v in volumes],
        "BuildCache": [],
    })  # fmt: skip


# Parts of the Docker Engine API that scow does not offer: a 501 that names the part,
# so a client learns why at once instead of from a 404.
UNSUPPORTED = {
    "swarm": "swarm mode", "services": "swarm services", "tasks": "swarm tasks",
    "nodes": "swarm nodes", "secrets": "swarm secrets", "configs": "swarm configs",
    "plugins": "plugins", "session": "BuildKit sessions", "grpc": "BuildKit",
    "distribution": "inspecting images in a registry (pull them)",
    "images/search": "searching a registry",
    "build/prune": "the build cache prune",
}  # fmt: skip
_ALL_METHODS = ["GET", "POST", "PUT", "DELETE", "HEAD"]


def _unsupported(what: str) -> Callable[[Request], Awaitable[Response]]:
    async def handler(request: Request) -> Response:
        path = request.url.path
        raise ApiError(
            501, "not_implemented", f"{request.method} {path}: scow does not offer {what}"
        )

    return handler


routes = [
    *(
        Route(f"/{part}", _unsupported(what), methods=_ALL_METHODS)
        for part, what in UNSUPPORTED.items()
    ),
    *(
        Route(f"/{part}/{{rest:path}}", _unsupported(what), methods=_ALL_METHODS)
        for part, what in UNSUPPORTED.items()
    ),
    Route("/_ping", ping, methods=["GET", "HEAD"]),
    Route("/version", version, methods=["GET"]),
    Route("/info", info, methods=["GET"]),
    Route("/system/df", disk_usage, methods=["GET"]),
]
