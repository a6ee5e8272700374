"""Node commands: what a node does for the gateway besides running calls.

Each command is a plain function of the node and its arguments that returns
something JSON can encode. Errors the caller caused become 4xx replies with the
reason; the gateway's container, image and environment routes build on these.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import secrets
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from images import archive, reference
from images.base import BootstrapError, UnknownBase, bootstrap
from images.builder import Builder, BuildError, BuildOptions
from images.commit import commit
from images.errors import ImageError, ImageInUse, ImageNotFound, InvalidReference
from images.store import Image
from pool import containers, copies, execs, volumes
from pool import environments as leases
from pool.command import OUTPUT_CHUNK, Command, CommandError, Handler, required, strings
from pool.contract import keys
from pool.contract.messages import Failure, event
from pool.contract.specs import parse_environment
from runtime.errors import Conflict, ContainerError, InvalidOption, NotFound
from runtime.rootdir import RootDir
from runtime.tarfs import Limits, UnsafeArchive, extract_tar

if TYPE_CHECKING:
    from pool.manager import PoolManager


def _image_json(image: Image, store_size: Callable[[str], int]) -> dict[str, Any]:
    labels = (image.config.get("config") or {}).get("Labels") or {}
    return {
        "id": image.id, "tags": list(image.tags), "created": image.config.get("created", ""),
        "size": sum(store_size(d) for d in image.diff_ids), "layers": len(image.diff_ids),
        "labels": labels,
    }  # fmt: skip


async def node_info(node: PoolManager, cmd: Command) -> Any:
    return {
        "node": node.node_id, "host": socket.gethostname(), "pid": os.getpid(),
        "cgroups": node.runtime.cgroups.version, "time": time.time(),
        "functions": {
            name: {"ready": len(w.pool.ready), "busy": w.pool.busy, "creating": w.pool.creating}
            for name, w in node.workers.items()
        },
    }  # fmt: skip


async def images_list(node: PoolManager, cmd: Command) -> Any:
    store = node.images
    all_images = bool(cmd.args.get("all"))
    return [_image_json(i, store.layer_size) for i in store.images(all_images=all_images)]


async def image_inspect(node: PoolManager, cmd: Command) -> Any:
    image = node.images.get(required(cmd.args, "ref"))
    return {**_image_json(image, node.images.layer_size), "config": image.config,
            "history": node.images.history(image)}  # fmt: skip


async def image_bootstrap(node: PoolManager, cmd: Command) -> Any:
    name = required(cmd.args, "name")
    reference.normalize(name)  # a malformed name is a 400; a well-formed unknown one, a 404
    image = await asyncio.to_thread(bootstrap, node.images, name, cmd.progress)
    return _image_json(image, node.images.layer_size)


async def image_remove(node: PoolManager, cmd: Command) -> Any:
    ref = required(cmd.args, "ref")
    image = node.images.get(ref)
    users = [r.name for r in node.runtime.containers() if r.image in (ref, image.id, *image.tags)]
    lines = node.images.remove(ref, force=bool(cmd.args.get("force")), in_use_by=users)
    for line in lines:
        action, _, what = line.partition(": ")
        node.events.emit(event("image", action.lower(), image.id, {"name": what}))
    return lines


async def image_tag(node: PoolManager, cmd: Command) -> Any:
    image = node.images.tag(required(cmd.args, "ref"), required(cmd.args, "tag"))
    node.events.emit(event("image", "tag", image.id, {"name": cmd.args["tag"]}))
    return _image_json(image, node.images.layer_size)


async def image_build(node: PoolManager, cmd: Command) -> Any:
    """Build from a tar of the context (``blob``), as ``docker build`` uploads it."""
    args = cmd.args
    if args.get("tag"):  # refused before anything is built, as docker build does
        reference.normalize(args["tag"])
    network = args.get("network") or "host"
    if network not in ("host", "none", "default", "bridge"):
        raise CommandError("invalid", f"invalid build network {network!r}: host or none")
    tmp = node.runtime.config.state_dir / "tmp"
    tmp.mkdir(mode=0o700, parents=True, exist_ok=True)
    context = Path(tempfile.mkdtemp(prefix="build-", dir=tmp))
    try:
        # The context is the client's: unpacked as every archive from outside is.
        limits = Limits(max_bytes=min(Limits.max_bytes, max(1 << 30, 20 * len(cmd.blob))))
        with RootDir(context) as root:
            await asyncio.to_thread(extract_tar, io.BytesIO(cmd.blob), root, limits=limits)
        opts = BuildOptions(
            context, dockerfile=str(args.get("dockerfile") or "Dockerfile"),
            tag=args.get("tag") or None, build_args=strings(args, "build_args"),
            no_cache=bool(args.get("no_cache")), target=args.get("target") or None,
            labels=strings(args, "labels"), network="none" if network == "none" else "host",
        )  # fmt: skip
        image = await Builder(node.images, node.runtime, cmd.progress).build(opts)
    finally:
        await asyncio.to_thread(shutil.rmtree, context, True)
    _image_event(node, "build", image)
    return _image_json(image, node.images.layer_size)


def _image_event(node: PoolManager, action: str, image: Image) -> None:
    name = image.tags[0] if image.tags else image.id
    node.events.emit(event("image", action, image.id, {"name": name}))


def _spool(node: PoolManager) -> Path:
    tmp = node.runtime.config.state_dir / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkstemp(prefix="archive-", dir=tmp)[1])


async def image_save(node: PoolManager, cmd: Command) -> Any:
    """A docker-archive (or OCI archive) of ``refs``, sent in chunks."""
    refs = cmd.args.get("refs")
    if not isinstance(refs, list) or not refs or not all(isinstance(r, str) for r in refs):
        raise CommandError("invalid", "argument 'refs' must list images")
    fmt = cmd.args.get("format", "docker")
    if fmt not in ("docker", "oci"):
        raise CommandError("invalid", f"invalid format {fmt!r}: docker or oci")
    for ref in refs:
        node.images.get(ref)  # a missing one fails before any byte is sent
    spool = _spool(node)
    try:
        with open(spool, "wb") as out:
            await asyncio.to_thread(archive.save, node.images, refs, out, fmt)
        size = 0
        with open(spool, "rb") as f:
            while chunk := await asyncio.to_thread(f.read, OUTPUT_CHUNK):
                await cmd.send(chunk)
                size += len(chunk)
    finally:
        spool.unlink(missing_ok=True)
    return {"size": size}


async def image_load(node: PoolManager, cmd: Command) -> Any:
    lines = await asyncio.to_thread(archive.load, node.images, io.BytesIO(cmd.blob))
    for line in lines:
        name = line.rpartition(": ")[2]
        node.events.emit(event("image", "load", name, {"name": name}))
    return lines


async def image_import(node: PoolManager, cmd: Command) -> Any:
    image = await asyncio.to_thread(
        archive.import_rootfs, node.images, io.BytesIO(cmd.blob),
        tag=cmd.args.get("tag") or None, message=str(cmd.args.get("message") or ""),
    )  # fmt: skip
    _image_event(node, "import", image)
    return _image_json(image, node.images.layer_size)


def _container(node: PoolManager, ref: str) -> str:
    """A container by id, name or id prefix; an environment's by the environment id."""
    for record in node.runtime.containers():
        if record.labels.get("scow.environment") == ref:
            return record.id
    return node.runtime.get(ref).id


async def container_commit(node: PoolManager, cmd: Command) -> Any:
    image = await commit(
        node.images, node.runtime, _container(node, required(cmd.args, "container")),
        tag=cmd.args.get("tag") or None, author=str(cmd.args.get("author") or ""),
        message=str(cmd.args.get("message") or ""), pause=bool(cmd.args.get("pause", True)),
    )  # fmt: skip
    return _image_json(image, node.images.layer_size)


async def containers_list(node: PoolManager, cmd: Command) -> Any:
    return [
        {"id": r.id, "name": r.name, "image": r.image, "status": r.status,
         "created": r.created, "labels": dict(r.labels), "ip": r.ip}
        for r in node.runtime.containers()
        if cmd.args.get("all") or r.status in ("running", "paused")
    ]  # fmt: skip


async def env_create(node: PoolManager, cmd: Command) -> Any:
    spec = parse_environment(cmd.args)
    held = sum(1 for r in node.runtime.containers() if r.labels.get("scow.role") == leases.ROLE)
    if held >= node.max_environments:
        raise CommandError("too_many", f"this node holds {held} environments, "
                           f"its limit: remove one, or let its lease run out")  # fmt: skip
    image = node.images.get(spec.image)
    lease_id = secrets.token_hex(8)
    record = await node.runtime.create(
        image.run_config, node.images.layer_dirs(image), leases.run_options(spec, lease_id),
        image=spec.image,
    )  # fmt: skip
    try:
        record = await node.runtime.start(record.id)
        await leases.wait_ready(node.runtime, record, spec.wait)
        lease = leases.lease_json(record, spec, node.node_id)
        await node.redis.hset(keys.ENVIRONMENTS, lease_id, json.dumps(lease))
    except BaseException:
        await node.runtime.remove(record.id, force=True, volumes=True)
        raise
    return lease


async def env_remove(node: PoolManager, cmd: Command) -> Any:
    lease_id = required(cmd.args, "id")
    found = [r for r in node.runtime.containers() if r.labels.get("scow.environment") == lease_id]
    for record in found:
        await node.runtime.remove(record.id, force=True, volumes=True)
    await node.redis.hdel(keys.ENVIRONMENTS, lease_id)
    return {"id": lease_id, "removed": len(found)}


COMMANDS: dict[str, Handler] = {
    "node.info": node_info,
    "images.list": images_list,
    "image.inspect": image_inspect,
    "image.bootstrap": image_bootstrap,
    "image.remove": image_remove,
    "image.tag": image_tag,
    "image.build": image_build,
    "image.save": image_save,
    "image.load": image_load,
    "image.import": image_import,
    "container.commit": container_commit,
    "containers.list": containers_list,
    "env.create": env_create,
    "env.remove": env_remove,
    **containers.COMMANDS,
    **execs.COMMANDS,
    **copies.COMMANDS,
    **volumes.COMMANDS,
}


async def run_command(node: PoolManager, name: str, cmd: Command) -> Any:
    """The command's result, or CommandError with the status a caller should see."""
    handler = COMMANDS.get(name)
    if handler is None:
        raise CommandError("unknown_command", f"no node command {name!r}")
    try:
        return await handler(node, cmd)
    except (ImageNotFound, NotFound, UnknownBase) as exc:
        raise CommandError("not_found", str(exc)) from None
    except (ImageInUse, Conflict) as exc:
        raise CommandError("conflict", str(exc)) from None
    except leases.NotReady as exc:
        kind: Failure = "not_ready_in_time" if exc.timed_out else "not_ready"
        raise CommandError(kind, f"the environment is not ready: {exc}") from None
    except InvalidOption as exc:
        raise CommandError("invalid", str(exc)) from None
    except UnsafeArchive as exc:
        raise CommandError("unsafe_archive", str(exc)) from None
    except (InvalidReference, BootstrapError, BuildError, ImageError, ContainerError) as exc:
        raise CommandError("invalid", str(exc)) from None
