"""Docker's volumes on a node: list, create, inspect, remove, prune."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pool import docker
from pool.command import Command, CommandError, Handler, required, strings
from runtime.volumes import VolumeInfo

if TYPE_CHECKING:
    from pool.manager import PoolManager


def _json(info: VolumeInfo) -> dict[str, Any]:
    return {
        "Name": info.name, "Driver": "local", "Mountpoint": str(info.path),
        "CreatedAt": docker.rfc3339(info.created), "Labels": dict(info.labels) or None,
        "Scope": "local", "Options": None,
    }  # fmt: skip


async def create(node: PoolManager, cmd: Command) -> Any:
    driver = cmd.args.get("driver") or "local"
    if driver != "local":
        raise CommandError("not_implemented", f"volume driver {driver!r} is not supported")
    name = str(cmd.args.get("name") or "")
    return _json(node.runtime.volumes.create(name, labels=strings(cmd.args, "labels")))


async def list_volumes(node: PoolManager, cmd: Command) -> Any:
    filters = cmd.args.get("filters") or {}
    used = {name for r in node.runtime.containers() for name, _ in r.volumes}
    out = []
    for info in node.runtime.volumes.all():
        if "dangling" in filters:
            dangling = str(next(iter(filters["dangling"]))).lower() in ("1", "true")
            if (info.name not in used) != dangling:
                continue
        if "name" in filters and not any(n in info.name for n in filters["name"]):
            continue
        out.append(_json(info))
    return {"Volumes": out, "Warnings": []}


async def inspect(node: PoolManager, cmd: Command) -> Any:
    return _json(node.runtime.volumes.get(required(cmd.args, "name")))


async def remove(node: PoolManager, cmd: Command) -> Any:
    name = required(cmd.args, "name")
    users = [] if cmd.args.get("force") else node.runtime.volume_users(name)
    node.runtime.volumes.remove(name, in_use_by=users)
    return {}


async def prune(node: PoolManager, cmd: Command) -> Any:
    """Unused anonymous volumes (and named ones too with ``all``), as Docker 23+ does."""
    used = {name for r in node.runtime.containers() for name, _ in r.volumes}
    removed = []
    for info in node.runtime.volumes.all():
        if info.name in used or (not info.anonymous and not cmd.args.get("all")):
            continue
        node.runtime.volumes.remove(info.name)
        removed.append(info.name)
    return {"VolumesDeleted": removed, "SpaceReclaimed": 0}


COMMANDS: dict[str, Handler] = {
    "volume.create": create,
    "volume.list": list_volumes,
    "volume.inspect": inspect,
    "volume.remove": remove,
    "volume.prune": prune,
}
