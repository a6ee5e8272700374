"""Node commands: what a node does for the gateway besides running calls.

Each command is a plain function of the node and its arguments that returns
something JSON can encode. Errors the caller caused become 4xx replies with the
reason; the gateway's container, image and environment routes build on these.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from images.base import BootstrapError, bootstrap
from images.errors import ImageError, ImageInUse, ImageNotFound, InvalidReference
from images.store import Image
from runtime.errors import ContainerError, NotFound

if TYPE_CHECKING:
    from pool.manager import PoolManager

Handler = Callable[["PoolManager", dict[str, Any]], Awaitable[Any]]


class CommandError(Exception):
    def __init__(self, status: int, error: str, message: str) -> None:
        self.status, self.error, self.message = status, error, message
        super().__init__(message)


def _image_json(image: Image, store_size: Callable[[str], int]) -> dict[str, Any]:
    return {
        "id": image.id, "tags": list(image.tags), "created": image.config.get("created", ""),
        "size": sum(store_size(d) for d in image.diff_ids), "layers": len(image.diff_ids),
    }  # fmt: skip


async def node_info(node: PoolManager, args: dict[str, Any]) -> Any:
    return {
        "node": node.node_id, "host": socket.gethostname(), "pid": os.getpid(),
        "cgroups": node.runtime.cgroups.version, "time": time.time(),
        "functions": {
            name: {"ready": len(w.pool.ready), "busy": w.pool.busy, "creating": w.pool.creating}
            for name, w in node.workers.items()
        },
    }  # fmt: skip


async def images_list(node: PoolManager, args: dict[str, Any]) -> Any:
    store = node.images
    return [
        _image_json(i, store.layer_size) for i in store.images(all_images=bool(args.get("all")))
    ]


async def image_inspect(node: PoolManager, args: dict[str, Any]) -> Any:
    image = node.images.get(_required(args, "ref"))
    return {**_image_json(image, node.images.layer_size), "config": image.config,
            "history": node.images.history(image)}  # fmt: skip


async def image_bootstrap(node: PoolManager, args: dict[str, Any]) -> Any:
    image = await asyncio.to_thread(bootstrap, node.images, _required(args, "name"))
    return _image_json(image, node.images.layer_size)


async def image_remove(node: PoolManager, args: dict[str, Any]) -> Any:
    ref = _required(args, "ref")
    image = node.images.get(ref)
    users = [r.name for r in node.runtime.containers() if r.image in (ref, image.id, *image.tags)]
    return node.images.remove(ref, force=bool(args.get("force")), in_use_by=users)


async def containers_list(node: PoolManager, args: dict[str, Any]) -> Any:
    return [
        {"id": r.id, "name": r.name, "image": r.image, "status": r.status,
         "created": r.created, "labels": dict(r.labels), "ip": r.ip}
        for r in node.runtime.containers()
        if args.get("all") or r.status in ("running", "paused")
    ]  # fmt: skip


COMMANDS: dict[str, Handler] = {
    "node.info": node_info,
    "images.list": images_list,
    "image.inspect": image_inspect,
    "image.bootstrap": image_bootstrap,
    "image.remove": image_remove,
    "containers.list": containers_list,
}


def _required(args: dict[str, Any], key: str) -> str:
    value = args.get(key)
    if not isinstance(value, str) or not value:
        raise CommandError(400, "bad_request", f"argument {key!r} is required")
    return value


async def run_command(node: PoolManager, name: str, args: dict[str, Any]) -> Any:
    """The command's result, or CommandError with the status a caller should see."""
    handler = COMMANDS.get(name)
    if handler is None:
        raise CommandError(404, "unknown_command", f"no node command {name!r}")
    try:
        return await handler(node, args)
    except (ImageNotFound, NotFound) as exc:
        raise CommandError(404, "not_found", str(exc)) from None
    except ImageInUse as exc:
        raise CommandError(409, "conflict", str(exc)) from None
    except (InvalidReference, BootstrapError, ImageError, ContainerError) as exc:
        raise CommandError(400, "bad_request", str(exc)) from None
